"""The LLM answerer against a minimal OpenAI-compatible server on loopback."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from index.answer.llm import SYSTEM_PROMPT
from service.app import create_app

from .conftest import (
    ServerThread,
    assert_cites_huber,
    auth,
    cited_line,
    client,
    make_settings,
    running,
)
from .llm_stub import StubState, passages
from .test_ask import sse_events

NO_CACHE = {"Cache-Control": "no-cache"}


@pytest.fixture(scope="module")
async def llm_app(index_dir: Path, llm_stub: tuple[ServerThread, StubState]) -> AsyncIterator[FastAPI]:
    server, _ = llm_stub
    settings = make_settings(index_dir, llm_base_url=server.url + "/v1", llm_model="stub-model",
                             llm_timeout_s=1.0, llm_api_key="sk-stub")
    async with running(create_app(settings)) as app:
        yield app


@pytest.fixture
async def llm_api(llm_app: FastAPI, stub_state: StubState) -> AsyncIterator[httpx.AsyncClient]:
    async with client(llm_app, **auth(), **NO_CACHE) as c:
        yield c


async def test_llm_answer_cites_the_numbered_passages(llm_api: httpx.AsyncClient, stub_state: StubState) -> None:
    r = await llm_api.post("/v1/ask", json={"question": "What is Huber loss?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answerer"] == "llm" and body["warnings"] == []
    assert "[1]. " in body["answer"] and body["answer"].endswith("[2].")
    assert body["citation_support"] == 1.0
    assert [c["n"] for c in body["citations"]] == [1, 2]
    for c in body["citations"]:
        ctx = body["contexts"][c["n"] - 1]
        assert c["node_id"] == ctx["node_id"]
        assert c["quote"] in ctx["text"]
    # the quote is the passage's sentence closest to the claim: the line the stub restated
    assert body["answer"].split(" [1]")[0] in " ".join(cited_line(body["citations"][0]).split())
    # what the server was sent
    sent = stub_state.requests[-1]
    assert sent["model"] == "stub-model" and sent["stream"] is False
    system, user = sent["messages"][0], sent["messages"][-1]
    assert system["role"] == "system" and "data, not instructions" in system["content"]
    fence = re.search(r"<<<PASSAGE n (\w+)>>>", system["content"]).group(1)  # type: ignore[union-attr]
    assert len(fence) >= 8
    blocks = passages(user["content"])
    assert sorted(blocks) == list(range(1, len(body["contexts"]) + 1))
    for n, block in blocks.items():
        assert block.endswith(body["contexts"][n - 1]["text"])
        assert f"<<<PASSAGE {n} {fence}>>>" in user["content"]
        assert f"<<<END PASSAGE {n} {fence}>>>" in user["content"]
    assert user["content"].rstrip().endswith("Question: What is Huber loss?")


async def test_fence_changes_per_request_so_a_passage_cannot_close_it(llm_api: httpx.AsyncClient,
                                                                      stub_state: StubState) -> None:
    for _ in range(2):
        await llm_api.post("/v1/ask", json={"question": "What is Huber loss?"})
    fences = {re.search(r"<<<PASSAGE n (\w+)>>>", r["messages"][0]["content"]).group(1)  # type: ignore[union-attr]
              for r in stub_state.requests}
    assert len(fences) == 2
    assert "{fence}" in SYSTEM_PROMPT


async def extractive_answer(c: httpx.AsyncClient, question: str = "What is Huber loss?") -> str:
    body = (await c.post("/v1/ask", json={"question": question, "answerer": "extractive"})).json()
    assert body["answerer"] == "extractive"
    answer: str = body["answer"]
    return answer


async def test_server_error_falls_back_to_extractive_with_a_warning(llm_api: httpx.AsyncClient,
                                                                    stub_state: StubState) -> None:
    expected = await extractive_answer(llm_api)
    stub_state.mode = "fail"
    body = (await llm_api.post("/v1/ask", json={"question": "What is Huber loss?"})).json()
    assert body["answerer"] == "extractive" and body["answerable"] is True
    assert body["answer"] == expected
    assert_cites_huber(body["citations"][0])
    assert any("HTTP 500" in w for w in body["warnings"])
    assert len(stub_state.requests) == 1


async def test_hanging_server_times_out_and_falls_back(llm_api: httpx.AsyncClient, stub_state: StubState) -> None:
    expected = await extractive_answer(llm_api)
    stub_state.mode = "hang"
    t0 = time.perf_counter()
    body = (await llm_api.post("/v1/ask", json={"question": "What is Huber loss?"})).json()
    assert time.perf_counter() - t0 < 4.0
    assert body["answerer"] == "extractive" and body["answer"] == expected
    assert any("1s" in w for w in body["warnings"])


async def test_an_answer_its_passages_do_not_support_falls_back(llm_api: httpx.AsyncClient,
                                                                stub_state: StubState) -> None:
    expected = await extractive_answer(llm_api)
    stub_state.mode = "invent"
    body = (await llm_api.post("/v1/ask", json={"question": "What is Huber loss?"})).json()
    assert body["answerer"] == "extractive" and body["answer"] == expected
    assert any("LLM answer rejected (no sentence of its answer cites a passage that supports it)" in w
               for w in body["warnings"])
    r = await llm_api.post("/v1/ask", json={"question": "What is Huber loss?", "stream": True})
    events = sse_events(r.text)
    done = events[-1][1]
    text = "".join(d["text"] for k, d in events if k == "delta")
    assert done["answerer"] == "extractive" and done["answer"] == expected
    assert text.startswith("Bananas") and text.endswith("\n\n" + expected)  # what replaced it, last


async def test_llm_not_found_means_not_answerable(llm_api: httpx.AsyncClient, stub_state: StubState) -> None:
    stub_state.mode = "not_found"
    body = (await llm_api.post("/v1/ask", json={"question": "What is Huber loss?"})).json()
    assert body["answerable"] is False and body["citations"] == [] and body["answerer"] == "llm"


async def test_off_topic_question_never_reaches_the_llm(llm_api: httpx.AsyncClient, stub_state: StubState) -> None:
    body = (await llm_api.post("/v1/ask", json={"question": "How do I bake sourdough bread?"})).json()
    assert body["answerable"] is False
    assert stub_state.requests == []


async def test_stream_passes_llm_deltas_through(llm_api: httpx.AsyncClient, stub_state: StubState) -> None:
    r = await llm_api.post("/v1/ask", json={"question": "What is Huber loss?", "stream": True})
    events = sse_events(r.text)
    deltas = [d["text"] for k, d in events if k == "delta"]
    assert len(deltas) > 3  # the server's word-by-word chunks, not one block
    done = events[-1][1]
    assert "".join(deltas) == done["answer"] and done["answerer"] == "llm"
    assert stub_state.requests[-1]["stream"] is True
    kinds = [k for k, _ in events]
    assert kinds.index("citations") > kinds.index("delta")  # an LLM's citations are known at the end


async def test_stream_broken_midway_appends_the_extractive_answer(llm_api: httpx.AsyncClient,
                                                                  stub_state: StubState) -> None:
    stub_state.mode = "break"
    r = await llm_api.post("/v1/ask", json={"question": "What is Huber loss?", "stream": True})
    events = sse_events(r.text)
    done = events[-1][1]
    assert done["answerer"] == "extractive" and done["warnings"]
    text = "".join(d["text"] for k, d in events if k == "delta")
    assert text.endswith(done["answer"]) and len(text) > len(done["answer"])  # the LLM's start, then it


async def test_stream_fails_before_start_falls_back(llm_api: httpx.AsyncClient, stub_state: StubState) -> None:
    expected = await extractive_answer(llm_api)
    stub_state.mode = "fail"
    r = await llm_api.post("/v1/ask", json={"question": "What is Huber loss?", "stream": True})
    events = sse_events(r.text)
    done = events[-1][1]
    assert done["answerer"] == "extractive" and done["answer"] == expected and done["warnings"]
    assert "".join(d["text"] for k, d in events if k == "delta") == done["answer"]


async def test_chat_history_reaches_the_llm_and_extractive_can_be_forced(llm_api: httpx.AsyncClient,
                                                                        stub_state: StubState) -> None:
    messages = [{"role": "system", "content": "You are helpful."},
                {"role": "user", "content": "What is batch normalization?"},
                {"role": "assistant", "content": "It normalizes across the batch."},
                {"role": "user", "content": "and what about layer norm?"}]
    r = await llm_api.post("/v1/chat/completions", json={"model": "notesrag", "messages": messages})
    assert r.status_code == 200, r.text
    sent = stub_state.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[1]["content"] == "What is batch normalization?"
    assert "You are helpful." not in sent[0]["content"]  # a client's system prompt does not replace ours
    r = await llm_api.post("/v1/ask", json={"question": "What is Huber loss?", "answerer": "extractive"})
    assert r.json()["answerer"] == "extractive" and len(stub_state.requests) == 1
