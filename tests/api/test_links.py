"""Citations as links, and no absolute path of the server in any response a query-scope caller
gets: a corpus in a temporary directory (Markdown in a sub-folder, a PDF), the real service under
uvicorn on loopback with NOTESRAG_SOURCE_URL_TEMPLATE set, every route such a caller can reach."""

from __future__ import annotations

import json
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from unit.pdf_files import make_pdf

from index import IndexConfig, ingest
from index.models.embedder import SentenceTransformerEmbedder
from service.app import create_app

from .conftest import QUERY_KEY, ROOT, auth, client, make_settings, running, wait_until
from .servers import ServerThread

TEMPLATE = "https://docs.example/{path_noext}/#{anchor}"
SETUP = """# Portal guide

## Installing the frobnicator

The frobnicator installs with the command frob-install, which fetches the blue toolchain.

## Configuring

Settings live in frob.toml beside the binary.

## Installing the frobnicator

On Windows the frobnicator installs from the MSI package instead of frob-install.
"""
PDF_PAGES = [["Release notes for the quasar relay."],
             ["The quasar relay forwards heartbeat packets every seven seconds."]]
# an absolute path of this host, outside URLs (a ':' or '/' or a word before the slash is a URL's)
HOST_PATH = re.compile(r"(?<![\w.:/~-])/(?:tmp|home|work|root|srv|usr|var|opt|etc|proc|mnt|run|lib|private)/")


@pytest.fixture(scope="module")
async def portal(tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder,
                 ) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("portal")
    corpus, index_dir = base / "docs", base / "index"
    (corpus / "guide").mkdir(parents=True)
    (corpus / "guide" / "setup.md").write_text(SETUP, encoding="utf-8")
    (corpus / "relay.pdf").write_bytes(make_pdf(PDF_PAGES))
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    await ingest([corpus], index_dir, IndexConfig(), embedder=embedder)
    return corpus, index_dir


@pytest.fixture(scope="module")
def server(portal: tuple[Path, Path]) -> Iterator[ServerThread]:
    corpus, index_dir = portal
    with ServerThread(create_app(make_settings(index_dir, corpus_root=corpus, source_url_template=TEMPLATE))) as s:
        s.wait_ready()
        yield s


def forbidden(corpus: Path) -> list[str]:
    """Absolute paths of this host a response must never hold."""
    return sorted({str(corpus), str(corpus.resolve()), str(corpus.parent), str(ROOT), sys.prefix,
                   str(Path.home()), tempfile.gettempdir().rstrip("/") + "/"}, key=len, reverse=True)


def check_clean(text: str, corpus: Path, what: str) -> None:
    for p in forbidden(corpus):
        assert p not in text, f"{what} shows {p}: {text[:500]}"
    m = HOST_PATH.search(text)
    assert m is None, f"{what} shows an absolute path at {text[max(0, m.start() - 80):m.end() + 80]!r}"


def sse_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in text.splitlines()
            if line.startswith("data:") and line[5:].strip() != "[DONE]"]


def test_citations_link_to_the_portal_page_and_line(server: ServerThread) -> None:
    with httpx.Client(base_url=server.url, headers=auth(), timeout=60) as c:
        body = c.post("/v1/ask", json={"question": "How does the frobnicator install on Windows?"}).json()
        assert body["answerable"], body
        cite = body["citations"][0]
        assert cite["source"] == "guide/setup.md" and "MSI" in cite["quote"]
        lines = SETUP.splitlines()
        first, last = cite["line_start"], cite["line_end"]
        assert cite["quote"].strip() in "\n".join(lines[first - 1:last]) and first == last
        # the second "Installing the frobnicator" heading: GitHub's and MkDocs' "-1"
        assert cite["anchor"] == "installing-the-frobnicator-1" and cite["page"] is None
        assert cite["url"] == "https://docs.example/guide/setup/#installing-the-frobnicator-1"
        ctx = next(x for x in body["contexts"] if x["source"] == "guide/setup.md")
        assert ctx["url"].startswith("https://docs.example/guide/setup/") and ctx["line_start"] >= 1

        pdf = c.post("/v1/ask", json={"question": "How often does the quasar relay forward heartbeat packets?"}).json()
        cite = pdf["citations"][0]
        assert (cite["source"], cite["page"], cite["anchor"], cite["line_start"]) == ("relay.pdf", 2, None, None)
        assert cite["url"] == "https://docs.example/relay/"  # no anchor: the fragment is dropped

        # the OpenAI-compatible route and the stream carry the same links
        chat = c.post("/v1/chat/completions", json={"messages": [
            {"role": "user", "content": "How does the frobnicator install on Windows?"}]}).json()
        assert chat["citations"][0]["url"] == body["citations"][0]["url"]
        events = sse_events(c.post("/v1/ask", json={"question": "How does the frobnicator install on Windows?",
                                                    "stream": True}, headers={"Cache-Control": "no-cache"}).text)
        streamed = next(e for e in events if "citations" in e and "answer" not in e)["citations"][0]
        assert streamed["url"] == body["citations"][0]["url"] and streamed["line_start"] == first


def test_no_response_to_a_query_caller_shows_a_server_path(server: ServerThread, portal: tuple[Path, Path]) -> None:
    corpus, _ = portal
    seen: list[str] = []

    def check(r: httpx.Response, status: int | tuple[int, ...]) -> httpx.Response:
        what = f"{r.request.method} {r.request.url.path} -> {r.status_code}"
        assert r.status_code in ((status,) if isinstance(status, int) else status), f"{what}: {r.text[:300]}"
        check_clean(r.text, corpus, what)
        seen.append(what)
        return r

    question = {"question": "How does the frobnicator install on Windows?"}
    with httpx.Client(base_url=server.url, headers=auth(), timeout=60) as c:
        for path in ("/healthz", "/readyz", "/metrics", "/v1/models", "/openapi.json", "/widget.js", "/"):
            check(c.get(path), 200)
        asked = check(c.post("/v1/ask", json=question), 200).json()
        check(c.post("/v1/ask", json={**question, "stream": True}, headers={"Cache-Control": "no-cache"}), 200)
        check(c.post("/v1/ask", json={"question": "What is the capital of Mars?"}), 200)
        check(c.post("/v1/ask", json={**question, "answerer": "llm"}), 422)
        msgs = {"messages": [{"role": "user", "content": "What does frob.toml hold?"}]}
        check(c.post("/v1/chat/completions", json=msgs), 200)
        check(c.post("/v1/chat/completions", json={**msgs, "stream": True}), 200)
        hits = check(c.get("/v1/search", params={"q": "quasar relay heartbeat", "k": 5}), 200).json()["hits"]
        assert {h["source"] for h in hits} <= {"guide/setup.md", "relay.pdf"}
        for answer_id, src in ((asked["answer_id"], {"citation": 1}),
                               (asked["answer_id"], {"node_id": hits[0]["node_id"]})):
            out = check(c.post("/v1/feedback", json={"answer_id": answer_id, "rating": "down", "source": src}),
                        200).json()
            assert out["source"]["source"] in ("guide/setup.md", "relay.pdf")
        # errors: unknown ids, bad bodies, wrong routes and scopes, a missing key
        check(c.post("/v1/feedback", json={"answer_id": "ans_nope", "rating": "up"}), 404)
        check(c.post("/v1/feedback", json={"answer_id": asked["answer_id"], "rating": "up",
                                           "source": {"node_id": "nope"}}), 422)
        check(c.post("/v1/ask", content=b"{not json", headers={"content-type": "application/json"}), 400)
        check(c.post("/v1/ask", json={"question": " "}), 422)
        check(c.post("/v1/ask", json={"question": "x" * 301}), 422)
        check(c.post("/v1/ask", content=b"x" * 20_000, headers={"content-type": "application/json"}), 413)
        check(c.get("/v1/nope" + str(corpus).replace("/", "_")), 404)
        check(c.delete("/v1/ask"), 405)
        check(c.get("/v1/search", params={"q": "x", "k": 0}), 422)
        for method, path in (("GET", "/v1/documents"), ("GET", "/v1/documents/guide/setup.md"),
                             ("POST", "/v1/ingest"), ("GET", "/v1/ingest/job-1"), ("POST", "/v1/reload"),
                             ("GET", "/v1/feedback/stats")):
            check(c.request(method, path, json={} if method == "POST" else None), 403)
        check(c.post("/v1/ask", json=question, headers={"Authorization": "Bearer wrong-key-123456"}), 401)
        # the MCP tools and resource, stateless JSON-RPC as the SDK's client sends it
        mcp_headers = {"Accept": "application/json, text/event-stream"}
        calls = [("tools/call", {"name": "ask_notes", "arguments": question}),
                 ("tools/call", {"name": "search_notes", "arguments": {"query": "quasar relay", "k": 3}}),
                 ("tools/call", {"name": "ask_notes", "arguments": {"question": "x" * 301}}),
                 ("resources/read", {"uri": "notes://documents"})]
        for i, (method, params) in enumerate(calls, 1):
            r = check(c.post("/mcp", headers=mcp_headers,
                             json={"jsonrpc": "2.0", "id": i, "method": method, "params": params}), 200)
            assert "result" in r.json(), r.text
        cites = json.loads(c.post("/mcp", headers=mcp_headers, json={
            "jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": calls[0][1]}).json()["result"][
            "content"][0]["text"])["citations"]
        assert cites[0]["path"] == "guide/setup.md" and cites[0]["url"] == asked["citations"][0]["url"]
    assert len(seen) >= 30


async def test_not_ready_errors_do_not_name_the_index_directory(tmp_path: Path) -> None:
    empty = tmp_path / "no-index-here"
    app = create_app(make_settings(empty, corpus_root=tmp_path))
    async with running(app, ready=False), client(app, **auth(QUERY_KEY)) as c:
        await wait_until(lambda: app.state.engine.last_error is not None, what="the engine to look for an index")
        assert str(empty) in app.state.engine.last_error  # the log and the engine know where
        for r in (await c.post("/v1/ask", json={"question": "anything?"}), await c.get("/readyz"),
                  await c.get("/v1/search", params={"q": "anything"}),
                  await c.post("/v1/ask", json={"question": "anything?", "stream": True})):
            assert r.status_code == 503 and "…/no-index-here" in r.text, r.text
            check_clean(r.text, tmp_path, str(r.request.url))
