"""The notes as a Model Context Protocol server (the official `mcp` SDK): tools `search_notes` and
`ask_notes`, the resource `notes://documents`.

Two ways in: `notesrag mcp` over stdio (a client such as Claude Desktop starts it), and
streamable HTTP at `/mcp` inside the service, behind the same API keys and scopes as the HTTP
API (query scope). Stateless HTTP with JSON responses: any worker answers any request. A tool
error reaches the client as an MCP tool error (`isError`) with a one-line message, never a
stack trace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from index.answer.extractive import Citation
from index.search.retriever import Hit
from service import errors, logs
from service.engine import NotReady, QAEngine, Query
from service.errors import ApiError
from service.feedback import FeedbackStore
from service.links import LinkedHit
from service.routes.common import check_question, check_top_k
from service.routes.feedback import new_answer_id, remember
from service.settings import Settings, is_loopback

INSTRUCTIONS = ("Search and question a team's technical notes. ask_notes answers with numbered citations "
                "[n] (path, heading path, quote); search_notes returns the ranked passages.")
DOCUMENTS_URI = "notes://documents"
READY_WAIT_S = 60.0  # a stdio server is started by its client and loads the model while the client waits


def citation_dict(c: Citation) -> dict[str, Any]:
    """A citation as the engine returns it (source relative to the corpus root, its link)."""
    return {"n": c.n, "path": c.source, "heading_path": list(c.heading_path), "url": c.url,
            "line_start": c.line_start, "line_end": c.line_end, "anchor": c.anchor, "page": c.page,
            "quote": c.quote, "start": c.start, "end": c.end, "node_id": c.node_id}


def hit_dict(rank: int, h: Hit) -> dict[str, Any]:
    link = h if isinstance(h, LinkedHit) else None
    return {"rank": rank, "path": h.source, "heading_path": list(h.heading_path),
            "url": link.url if link else None, "line_start": link.line_start if link else None,
            "line_end": link.line_end if link else None, "anchor": link.anchor if link else None,
            "page": link.page if link else None, "score": round(h.score, 4), "text": h.text, "node_id": h.node_id}


async def ready(engine: QAEngine, timeout_s: float = READY_WAIT_S) -> QAEngine:
    """The engine once it serves an index; a tool called while it loads waits this long, then fails."""
    deadline = time.monotonic() + timeout_s
    while not engine.ready and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return engine


def build_mcp(engine: Callable[[], QAEngine], store: Callable[[], FeedbackStore | None],
              settings: Settings) -> MCPServer:
    """The MCP server over the engine `engine()` returns (a callable: the app builds it in its lifespan)."""
    server: MCPServer = MCPServer("notesrag", instructions=INSTRUCTIONS, version="0.1.0", log_level="WARNING")

    def checked(text: str, k: int | None, what: str) -> Query:
        try:
            return Query(check_question(text, settings, what), check_top_k(k, settings))
        except ApiError as e:
            raise ToolError(e.message) from None

    @server.tool(description="The passages of the notes that rank highest for a query, best first: "
                             "path, heading path, score, text.")
    async def search_notes(query: str, k: int = 5) -> dict[str, Any]:
        try:
            hits, version, _ = await (await ready(engine())).search(checked(query, k, "query"))
        except NotReady as e:
            raise ToolError(f"no index is loaded yet: {e}") from None
        except ToolError:
            raise
        except Exception as e:
            logs.event("mcp_tool_failed", 40, tool="search_notes", error=repr(e))
            raise ToolError("search failed; see the server log") from None
        return {"query": query, "snapshot": version, "hits": [hit_dict(i, h) for i, h in enumerate(hits, 1)]}

    @server.tool(description="Answer a question from the notes, with numbered citations [n]: each gives "
                             "the note's path, heading path, url and the quoted text.")
    async def ask_notes(question: str) -> dict[str, Any]:
        try:
            q = checked(question, None, "question")
            r = await (await ready(engine())).ask(q)
        except NotReady as e:
            raise ToolError(f"no index is loaded yet: {e}") from None
        except ToolError:
            raise
        except Exception as e:
            logs.event("mcp_tool_failed", 40, tool="ask_notes", error=repr(e))
            raise ToolError("answering failed; see the server log") from None
        a = r.answer
        answer_id = await remember(store(), new_answer_id(), q.question, r)
        return {"answer": a.text, "answerable": a.answerable, "confidence": round(a.confidence, 4),
                "low_confidence": a.low_confidence,
                "citations": [citation_dict(c) for c in a.citations], "snapshot": r.snapshot,
                "answer_id": answer_id}

    @server.resource(DOCUMENTS_URI, name="documents", mime_type="application/json",
                     description="The notes in the served index: path, size in bytes, chunks.")
    def documents() -> dict[str, Any]:
        try:
            served = engine().current()
        except NotReady as e:
            raise ToolError(f"no index is loaded yet: {e}") from None
        files, public = served.snapshot.manifest.files, engine().linker.source
        return {"snapshot": served.version, "documents": sorted(
            ({"path": public(src, served.snapshot), "bytes": f.size, "chunks": f.nodes} for src, f in files.items()),
            key=lambda d: d["path"])}

    return server


@asynccontextmanager
async def session_manager_running(server: MCPServer) -> AsyncIterator[None]:
    """`server.session_manager.run()` in a task of its own, for the app's lifespan: a lifespan may
    be entered in one task and left in another (pytest's fixtures do that), which the manager's
    anyio task group does not allow."""
    started, stop = asyncio.Event(), asyncio.Event()

    async def run() -> None:
        async with server.session_manager.run():
            started.set()
            await stop.wait()

    task = asyncio.get_running_loop().create_task(run(), name="notesrag-mcp-sessions")
    waiter = asyncio.ensure_future(started.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # it failed to start: raise its error
    try:
        yield
    finally:
        stop.set()
        await task


def http_endpoint(server: MCPServer, settings: Settings) -> ASGIApp:
    """The streamable HTTP endpoint for mounting at /mcp; run `server.session_manager.run()` in the
    app's lifespan. Without API keys the service is loopback-only, and the SDK's DNS-rebinding
    check (Host and Origin must be loopback) guards it; with keys, the keys do."""
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=not settings.auth_enabled and is_loopback(settings.host),
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"])
    server.streamable_http_app(stateless_http=True, json_response=True, transport_security=security)
    return _KeyGuard(StreamableHTTPASGIApp(server.session_manager))


class _KeyGuard:
    """The API's key and scope check (and rate limit) in front of an ASGI app, errors as the API's JSON."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from service.deps import check_caller

        try:
            check_caller("query", Request(scope))
        except ApiError as e:
            await errors.error_response(e.status, e.code, e.message, e.headers)(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def run_stdio(settings: Settings) -> None:
    """`notesrag mcp`: this process serves the index in `settings.index_dir` over stdin/stdout."""
    # imported here: the app imports this module
    from service.app import build_engine, configure_threads, open_feedback
    from service.metrics import Metrics

    configure_threads(settings)
    engine = build_engine(settings, Metrics())
    store = open_feedback(settings)
    await engine.start()
    logs.event("mcp_stdio_started", index_dir=str(settings.index_dir))
    try:
        await build_mcp(lambda: engine, lambda: store, settings).run_stdio_async()
    finally:
        await engine.stop()
        if store is not None:
            store.close()
