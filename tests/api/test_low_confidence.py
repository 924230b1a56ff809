"""NOTESRAG_LOW_CONFIDENCE on every answer path: /v1/ask (JSON and its stream), chat completions
(body and stream), the LLM answerer's gate, the MCP tool, and /readyz. At 0.99 an answer the
cross-encoder is not sure of is flagged; at 0 none is."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from service.app import create_app
from service.mcp_server import build_mcp

from .conftest import auth, client, make_settings, running
from .llm_stub import StubState
from .servers import ServerThread
from .test_ask import sse_events

# several topics, so that the check holds of the setting, not of one question's score
QUESTIONS = ["What is Huber loss?", "Which GAN metric is lower-is-better?", "How does LoRA fine-tune a model?"]


@pytest.fixture(scope="module")
async def strict(index_dir: Path, llm_stub: tuple[ServerThread, StubState]) -> AsyncIterator[FastAPI]:
    """The service with a threshold of 0.99, and the LLM answerer (the test stub) beside the extractive one."""
    settings = make_settings(index_dir, low_confidence=0.99, llm_base_url=f"{llm_stub[0].url}/v1")
    async with running(create_app(settings)) as a:
        yield a


@pytest.fixture(scope="module")
async def flag_off(index_dir: Path) -> AsyncIterator[FastAPI]:
    async with running(create_app(make_settings(index_dir, low_confidence=0.0))) as a:
        yield a


def last_chunk(text: str) -> dict[str, Any]:
    """The chat stream's last chunk before [DONE] (the one with the notesrag field)."""
    data = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]", data[-3:]
    chunk: dict[str, Any] = json.loads(data[-2])
    return chunk


async def test_a_threshold_of_0_99_flags_answers_on_every_path(strict: FastAPI, stub_state: StubState) -> None:
    async with client(strict, **auth()) as c:
        ready = (await c.get("/readyz")).json()
        assert ready["low_confidence_threshold"] == 0.99 and ready["index"]["low_confidence_threshold"] == 0.99
        asked = [(await c.post("/v1/ask", json={"question": q, "answerer": "extractive"})).json()
                 for q in QUESTIONS]
        for body in asked:
            assert body["answerable"] is True, body
            assert body["low_confidence"] is (body["confidence"] < 0.99), body
        flagged = [b for b in asked if b["low_confidence"]]
        assert flagged, [b["confidence"] for b in asked]
        question = QUESTIONS[asked.index(flagged[0])]

        r = await c.post("/v1/ask", json={"question": question, "answerer": "extractive", "stream": True},
                         headers={"Cache-Control": "no-cache"})
        done = [data for event, data in sse_events(r.text) if event == "done"]
        assert len(done) == 1 and done[0]["low_confidence"] is True and done[0]["answerable"] is True

        chat = {"model": "notesrag", "messages": [{"role": "user", "content": question}], "answerer": "extractive"}
        meta = (await c.post("/v1/chat/completions", json=chat)).json()["notesrag"]
        assert meta["low_confidence"] is True and meta["answerable"] is True
        r = await c.post("/v1/chat/completions", json={**chat, "stream": True}, headers={"Cache-Control": "no-cache"})
        meta = last_chunk(r.text)["notesrag"]
        assert meta["low_confidence"] is True and meta["answerable"] is True

        # the LLM's answer is gated by the extractive one and carries its flag
        llm = (await c.post("/v1/ask", json={"question": question, "answerer": "llm"})).json()
        assert llm["answerable"] is True and llm["low_confidence"] is True, llm
        assert stub_state.requests, "the LLM was not asked"
        r = await c.post("/v1/ask", json={"question": question, "answerer": "llm", "stream": True},
                         headers={"Cache-Control": "no-cache"})
        done = [data for event, data in sse_events(r.text) if event == "done"]
        assert done[0]["answerer"] == llm["answerer"] and done[0]["low_confidence"] is True

    # the MCP tool, over the same engine (the MCP default answerer is the service's: here the LLM)
    mcp = build_mcp(lambda: strict.state.engine, lambda: None, strict.state.settings)
    result = await mcp.call_tool("ask_notes", {"question": question})
    tool: dict[str, Any] = result.structured_content  # type: ignore[union-attr]
    assert tool["answerable"] is True and tool["low_confidence"] is True, tool


async def test_a_threshold_of_0_flags_none(flag_off: FastAPI) -> None:
    async with client(flag_off, **auth()) as c:
        assert (await c.get("/readyz")).json()["low_confidence_threshold"] == 0.0
        for q in QUESTIONS:
            body = (await c.post("/v1/ask", json={"question": q})).json()
            assert body["answerable"] is True and body["low_confidence"] is False, body
            chunk = last_chunk((await c.post("/v1/chat/completions", json={
                "model": "notesrag", "stream": True, "messages": [{"role": "user", "content": q}]})).text)
            assert chunk["notesrag"]["low_confidence"] is False
        # an unanswerable question is "not covered", never a flagged answer
        body = (await c.post("/v1/ask", json={"question": "How do I boil an egg?"})).json()
        assert body["answerable"] is False and body["low_confidence"] is False
