"""The MCP server through the SDK's own client: streamable HTTP at /mcp of a real uvicorn (behind
the API keys) and `notesrag mcp` over stdio as a subprocess."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from service.app import create_app

from .conftest import LOSS_FILE, NOTES, QUERY_KEY, ROOT, auth, make_settings
from .servers import ServerThread


def http_client(server: ServerThread, key: str | None = QUERY_KEY) -> Client:
    headers = auth(key) if key else {}
    return Client(streamable_http_client(f"{server.url}/mcp", http_client=httpx2.AsyncClient(headers=headers,
                                                                                            timeout=60)))


async def check_huber(client: Client) -> None:
    tools = {t.name for t in (await client.list_tools()).tools}
    assert {"search_notes", "ask_notes"} <= tools
    result = await client.call_tool("ask_notes", {"question": "What is Huber loss?"})
    assert not result.is_error, result.content
    answer: dict[str, Any] = result.structured_content
    assert answer["answerable"] is True and "[1]" in answer["answer"]
    cite = answer["citations"][0]
    assert cite["path"] == LOSS_FILE  # relative to the corpus root
    assert cite["heading_path"][-1] == "Loss" and "Huber" in cite["quote"] and "url" in cite
    assert cite["quote"] in (NOTES / LOSS_FILE).read_text(encoding="utf-8")
    hits = (await client.call_tool("search_notes", {"query": "Huber loss", "k": 3})).structured_content["hits"]
    assert len(hits) == 3 and hits[0]["rank"] == 1 and any("Huber" in h["text"] for h in hits)


async def test_http_lists_tools_answers_with_citations_and_reads_the_documents(live_server: ServerThread) -> None:
    async with http_client(live_server) as client:
        await check_huber(client)
        uris = {str(r.uri) for r in (await client.list_resources()).resources}
        assert "notes://documents" in uris
        contents = (await client.read_resource("notes://documents")).contents
        docs = json.loads(contents[0].text)["documents"]  # type: ignore[union-attr]
        assert {d["path"] for d in docs} == {p.name for p in NOTES.glob("*.md")}


async def test_http_tool_errors_are_mcp_errors_without_a_trace(live_server: ServerThread) -> None:
    async with http_client(live_server) as client:
        result = await client.call_tool("ask_notes", {"question": "x" * 301})
        assert result.is_error
        text = result.content[0].text  # type: ignore[union-attr]
        assert "limit is 300 characters" in text and "Traceback" not in text
        result = await client.call_tool("search_notes", {"query": "loss", "k": 10_000})
        assert result.is_error and "top_k must be between 1 and" in result.content[0].text  # type: ignore[union-attr]


async def test_http_without_a_key_is_refused(live_server: ServerThread) -> None:
    r = httpx.post(f"{live_server.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                   headers={"Accept": "application/json, text/event-stream"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = httpx.post(f"{live_server.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                   headers={**auth("wrong-key-0123456789"), "Accept": "application/json, text/event-stream"})
    assert r.status_code == 401
    with pytest.raises(ExceptionGroup) as refused:  # the SDK's client, from its task group
        async with http_client(live_server, key=None) as client:
            await client.list_tools()
    assert refused.group_contains(MCPError, match="error response")


async def test_stdio_subprocess_lists_tools_and_answers(index_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "NOTESRAG_CORPUS_ROOT": str(NOTES), "NOTESRAG_LOG_JSON": "false"}
    params = StdioServerParameters(command=sys.executable, env=env, cwd=str(ROOT),
                                   args=["-m", "service.cli", "mcp", "--index-dir", str(index_dir)])
    async with Client(params, read_timeout_seconds=120) as client:
        await check_huber(client)


async def test_without_keys_only_loopback_hosts_reach_it(index_dir: Path) -> None:
    """No API keys: the service is loopback-only, and a request whose Host is not loopback (a page
    on another site resolving its name to 127.0.0.1) is refused."""
    with ServerThread(create_app(make_settings(index_dir, api_keys=""))) as server:
        server.wait_ready()
        async with http_client(server, key=None) as client:
            assert "ask_notes" in {t.name for t in (await client.list_tools()).tools}
        r = httpx.post(f"{server.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                       headers={"Host": "evil.example", "Accept": "application/json, text/event-stream"})
        # the service's Host check refuses it before the SDK's own check would (403/421)
        assert r.status_code == 400 and r.json()["error"]["code"] == "host_not_allowed", r.text
