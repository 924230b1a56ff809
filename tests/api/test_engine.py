"""The engine's parts: micro-batching, the LRU cache, the rate limiter, settings, metrics."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from index.models.embedder import SentenceTransformerEmbedder
from service.answerers import Turn, pieces
from service.deps import RateLimiter
from service.engine import LRUCache, MicroBatcher, Query, is_follow_up, retrieval_text
from service.server import bind_host
from service.settings import Settings

from .conftest import make_settings


class CountingEmbedder:
    """The real embedder, counting encoder calls and the texts in each."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner = inner
        self.model_name, self.dim, self.device = inner.model_name, inner.dim, inner.device
        self.calls: list[int] = []
        self.threads: set[str] = set()

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        self.calls.append(len(texts))
        self.threads.add(threading.current_thread().name)
        return self.inner.encode(texts, batch_size)


async def test_concurrent_questions_share_encoder_calls(embedder: SentenceTransformerEmbedder) -> None:
    counting = CountingEmbedder(embedder)
    batcher = MicroBatcher(counting, window_s=0.01, max_batch=8)
    batcher.start()
    try:
        questions = [f"What is loss function number {i}?" for i in range(20)] + ["What is Huber loss?"] * 4
        vecs = await asyncio.gather(*(batcher.embed(q) for q in questions))
    finally:
        await batcher.stop()
    assert sum(counting.calls) == 21  # duplicates are encoded once
    assert len(counting.calls) < len(questions) and max(counting.calls) <= 8
    assert all(t.startswith("notesrag-encode") for t in counting.threads)  # never on the event loop
    expected = embedder.encode(questions)
    np.testing.assert_allclose(np.stack(vecs), expected, atol=1e-5)


async def test_a_single_question_waits_at_most_the_window(embedder: SentenceTransformerEmbedder) -> None:
    batcher = MicroBatcher(embedder, window_s=0.0, max_batch=4)
    batcher.start()
    try:
        v = await batcher.embed("What is Huber loss?")
    finally:
        await batcher.stop()
    assert v.shape == (embedder.dim,) and abs(float(np.linalg.norm(v)) - 1.0) < 1e-4


async def test_encoder_errors_reach_every_waiting_request() -> None:
    class Broken:
        model_name, dim, device = "broken", 3, "cpu"

        def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
            raise RuntimeError("encoder down")

    batcher = MicroBatcher(Broken(), window_s=0.005)
    batcher.start()
    try:
        results = await asyncio.gather(batcher.embed("a"), batcher.embed("b"), return_exceptions=True)
    finally:
        await batcher.stop()
    assert all(isinstance(r, RuntimeError) for r in results)


def test_batcher_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="window_s must be >= 0"):
        MicroBatcher(None, window_s=-1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        MicroBatcher(None, max_batch=0)  # type: ignore[arg-type]


def test_lru_cache_forgets_the_least_recently_used() -> None:
    cache = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    off = LRUCache(0)
    off.put("a", 1)
    assert off.get("a") is None and len(off) == 0
    with pytest.raises(ValueError, match="cache size must be >= 0"):
        LRUCache(-1)


def test_cache_key_separates_versions_options_and_history() -> None:
    q = Query("What is  Huber loss?")
    assert q.cache_key("v1", "extractive") == Query("what is huber loss?").cache_key("v1", "extractive")
    assert q.cache_key("v1", "extractive") != q.cache_key("v2", "extractive")
    assert q.cache_key("v1", "extractive") != Query("What is Huber loss?", top_k=3).cache_key("v1", "extractive")
    followup = Query("What is Huber loss?", history=[Turn("user", "about regression")])
    assert q.cache_key("v1", "extractive") != followup.cache_key("v1", "extractive")


def test_follow_ups_are_retrieved_with_the_previous_user_turn() -> None:
    q = Query("and what about layer norm?", history=[Turn("user", "What is batch normalization?"),
                                                     Turn("assistant", "It normalizes over the batch.")])
    assert retrieval_text(q) == "What is batch normalization?\nand what about layer norm?"
    assert retrieval_text(Query("What is LoRA?")) == "What is LoRA?"
    history = [Turn("user", "Which dimensions does batch normalization normalize over?")]
    for follow_up in ("Why?", "And for layer norm?", "What about group norm?", "Does it also apply to RNNs?",
                      "How do those compare with instance norm?", "Does that work with small batches?"):
        assert is_follow_up(follow_up), follow_up
        assert retrieval_text(Query(follow_up, history=history)).startswith(history[0].content)
    # a new topic in the same chat is searched by itself, not pulled back to batch norm
    for new_topic in ("What are the common GAN metrics?", "How does LoRA fine-tune a model?",
                      "Is there a loss that is robust to outliers?"):
        assert not is_follow_up(new_topic), new_topic
        assert retrieval_text(Query(new_topic, history=history)) == new_topic


def test_rate_limiter_token_bucket() -> None:
    rl = RateLimiter(per_minute=60, burst=2)
    assert rl.check("k", now=0.0) == 0 and rl.check("k", now=0.0) == 0
    wait = rl.check("k", now=0.0)
    assert wait == pytest.approx(1.0)
    assert rl.check("other", now=0.0) == 0
    assert rl.check("k", now=1.01) == 0  # one token back after a second
    assert not RateLimiter(0, 1).enabled and RateLimiter(0, 1).check("k") == 0
    with pytest.raises(ValueError, match="rate limit"):
        RateLimiter(-1, 1)


def test_answer_pieces_join_back() -> None:
    text = "Huber Loss: L2 for small errors. [1] L1 for large ones. [2]"
    assert "".join(pieces(text)) == text and len(pieces(text)) == 2


def test_settings_parse_keys_origins_and_check_them(tmp_path: Path) -> None:
    s = make_settings(tmp_path, api_keys="abcdefgh1:query, zyxwvuts2:admin", cors_origins="https://a.example,"
                      "https://b.example")
    assert s.key_scopes() == {"abcdefgh1": "query", "zyxwvuts2": "admin"}
    assert s.cors_origins == ["https://a.example", "https://b.example"] and s.auth_enabled
    assert "abcdefgh1" not in repr(s)  # keys are secrets
    with pytest.raises(ValidationError, match="scope must be query or admin"):
        make_settings(tmp_path, api_keys="abcdefgh1:root")
    with pytest.raises(ValidationError, match="KEY:scope"):
        make_settings(tmp_path, api_keys="abcdefgh1")
    with pytest.raises(ValidationError, match="default_top_k"):
        make_settings(tmp_path, default_top_k=10, max_top_k=5)
    with pytest.raises(ValidationError, match="llm_base_url"):
        make_settings(tmp_path, llm_base_url="localhost:8001")


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTESRAG_API_KEYS", "secret-key-1:admin")
    monkeypatch.setenv("NOTESRAG_CORS_ORIGINS", "https://docs.example.com")
    monkeypatch.setenv("NOTESRAG_RATE_LIMIT_PER_MINUTE", "5")
    monkeypatch.setenv("NOTESRAG_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.key_scopes() == {"secret-key-1": "admin"} and s.rate_limit_per_minute == 5
    assert s.cors_origins == ["https://docs.example.com"] and s.llm_base_url == "http://127.0.0.1:9/v1"


def test_without_keys_the_server_binds_loopback_only(tmp_path: Path) -> None:
    open_settings = make_settings(tmp_path, api_keys="")
    host, notice = bind_host("0.0.0.0", open_settings)
    assert host == "127.0.0.1" and notice and "NOTESRAG_API_KEYS" in notice
    assert bind_host("127.0.0.1", open_settings) == ("127.0.0.1", None)
    assert bind_host("::1", open_settings) == ("::1", None)
    assert bind_host("0.0.0.0", make_settings(tmp_path)) == ("0.0.0.0", None)


async def test_metrics_cover_routes_retrieval_answers_and_the_index(app: FastAPI, api: httpx.AsyncClient) -> None:
    await api.post("/v1/ask", json={"question": "What is gradient clipping?"}, headers={"Cache-Control": "no-cache"})
    await api.get("/v1/search", params={"q": "attention"})
    text = (await api.get("/metrics")).text
    for needle in ('notesrag_request_seconds_bucket{le="0.05",method="POST",route="/v1/ask",status="200"}',
                   'route="/v1/search"', "notesrag_retrieval_seconds_count", 'notesrag_answer_seconds_count'
                   '{answerer="extractive"}', "notesrag_embed_batch_size_count", "notesrag_ingest_jobs_total",
                   "notesrag_answer_cache_total"):
        assert needle in text, needle
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values["notesrag_index_leaves"] > 0 and values["notesrag_index_bytes"] > 0
    assert values["notesrag_index_files"] == 9 and values["notesrag_ready"] == 1


async def test_service_does_not_import_the_evaluation_stack() -> None:
    import subprocess
    import sys

    code = ("import sys, service.app, service.server, service.cli; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('ragas', 'eval', 'ranx', 'langchain')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
