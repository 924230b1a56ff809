"""POST /v1/ask and GET /v1/search against the real index of data/notes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from .conftest import LOSS_FILE, NOTES, assert_cites_huber


def sse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


async def test_huber_loss_is_answered_and_cited_from_the_loss_section(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/ask", json={"question": "What is Huber loss?"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answerable"] is True
    assert "[1]" in body["answer"]
    assert body["answerer"] == "extractive" and body["warnings"] == []
    assert body["contexts"] and set(body["timings"]) == {"embed_ms", "retrieval_ms", "answer_ms", "total_ms"}
    cite = body["citations"][0]
    assert cite["n"] == 1
    assert cite["source"] == LOSS_FILE  # relative to the corpus root
    text = (NOTES / LOSS_FILE).read_text(encoding="utf-8")
    assert text[cite["start"]:cite["end"]] == cite["quote"]  # the quote is in the file at the cited span
    assert_cites_huber(cite)
    assert cite["quote"] in body["answer"]


async def test_off_topic_question_is_not_answerable(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/ask", json={"question": "How do I bake sourdough bread?"})
    assert r.status_code == 200
    body = r.json()
    assert body["answerable"] is False
    assert body["citations"] == []
    assert "do not cover" in body["answer"]


async def test_repeated_question_comes_from_the_cache_unless_no_cache(api: httpx.AsyncClient) -> None:
    q = {"question": "What does LoRA do?", "top_k": 4}
    first = (await api.post("/v1/ask", json=q)).json()
    second = (await api.post("/v1/ask", json=q)).json()
    assert second["cached"] is True and second["answer"] == first["answer"]
    assert second["citations"] == first["citations"]
    fresh = (await api.post("/v1/ask", json=q, headers={"Cache-Control": "no-cache"})).json()
    assert fresh["cached"] is False and fresh["answer"] == first["answer"]


async def test_modes_and_top_k(api: httpx.AsyncClient) -> None:
    for mode in ("dense", "bm25", "hybrid"):
        r = await api.post("/v1/ask", json={"question": "What is Huber loss?", "mode": mode, "top_k": 2})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["contexts"]) <= 2
        assert body["answerable"] is True


async def test_stream_sends_contexts_citations_deltas_and_done(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/ask", json={"question": "What is Huber loss?", "stream": True},
                       headers={"Cache-Control": "no-cache"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    kinds = [k for k, _ in events]
    assert kinds[0] == "contexts" and kinds[1] == "citations" and kinds[-1] == "done"
    assert "delta" in kinds
    deltas = "".join(d["text"] for k, d in events if k == "delta")
    done = events[-1][1]
    assert deltas == done["answer"] and done["answerable"] is True
    assert events[1][1]["citations"] == done["citations"]
    assert events[0][1]["snapshot"] == done["snapshot"]


async def test_search_ranks_the_loss_section_first(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/search", params={"q": "Huber loss", "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert 1 <= len(body["hits"]) <= 3
    top = body["hits"][0]
    assert Path(top["source"]).name == "01-fundamentals-of-deep-learning.md"
    assert "Loss" in top["heading_path"]
    assert "Huber" in top["text"]
    assert [h["rank"] for h in body["hits"]] == list(range(1, len(body["hits"]) + 1))
    r = await api.get("/v1/search", params={"q": "Huber loss", "mode": "bm25", "merge": "false", "k": 2})
    assert r.status_code == 200 and r.json()["mode"] == "bm25"


async def test_docs_and_openapi_are_served(api: httpx.AsyncClient) -> None:
    r = await api.get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    for p in ("/v1/ask", "/v1/chat/completions", "/v1/search", "/v1/ingest", "/v1/ingest/{job_id}",
              "/healthz", "/readyz", "/metrics"):
        assert p in paths
    assert (await api.get("/docs")).status_code == 200
