"""POST /v1/feedback and GET /v1/feedback/stats: answers on record, ratings in the index directory's
SQLite file, the bad-input rules (nothing stored for a refused request) and the Prometheus counter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from eval.cli import main as eval_main

from .conftest import ADMIN_KEY, NOTES, QUERY_KEY, ROOT, auth, client
from .servers import ServerThread
from .test_ask import sse_events


async def ask(api: httpx.AsyncClient, question: str = "What is Huber loss?") -> dict[str, Any]:
    r = await api.post("/v1/ask", json={"question": question}, headers={"Cache-Control": "no-cache"})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["answer_id"].startswith("ans_")
    return body


async def stats(app: FastAPI) -> dict[str, Any]:
    async with client(app, **auth(ADMIN_KEY)) as admin:
        r = await admin.get("/v1/feedback/stats")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_rating_is_stored_and_a_repeat_replaces_it(app: FastAPI, api: httpx.AsyncClient) -> None:
    body = await ask(api)
    before = await stats(app)
    r = await api.post("/v1/feedback", json={"answer_id": body["answer_id"], "rating": "up"})
    assert r.status_code == 200, r.text
    assert r.json()["replaced"] is False and r.json()["source"] is None
    r = await api.post("/v1/feedback", json={"answer_id": body["answer_id"], "rating": "down",
                                             "comment": "the second citation was the one", "source": {"citation": 1}})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["replaced"] is True and out["rating"] == "down"
    assert out["source"]["kind"] == "citation" and out["source"]["quote"] == body["citations"][0]["quote"]
    after = await stats(app)
    assert after["ratings"] == before["ratings"] + 1 and after["down"] == before["down"] + 1
    assert after["up"] == before["up"] and after["with_comment"] == before["with_comment"] + 1
    assert after["by_snapshot"][-1]["snapshot"] == body["snapshot"]
    rows = {r.answer.answer_id: r for r in app.state.feedback.ratings()}
    row = rows[body["answer_id"]]
    assert row.answer.question == "What is Huber loss?" and row.answer.answer == body["answer"]
    assert row.answer.citations == body["citations"] and row.comment == "the second citation was the one"
    metrics = (await api.get("/metrics")).text
    assert f'notesrag_feedback_total{{rating="down",snapshot="{body["snapshot"]}"}}' in metrics


async def test_refused_requests_store_nothing(app: FastAPI, api: httpx.AsyncClient) -> None:
    body = await ask(api)
    aid = body["answer_id"]
    before = await stats(app)
    limit = app.state.settings.feedback_max_comment_chars
    cases = [
        ({"answer_id": "ans_000000000000000000000000", "rating": "up"}, 404, "unknown_answer"),
        ({"answer_id": aid, "rating": "up", "comment": "x" * (limit + 1)}, 422, "comment_too_long"),
        ({"answer_id": aid, "rating": "meh"}, 422, None),
        ({"answer_id": aid, "rating": "down", "source": {"citation": 99}}, 422, "invalid_request"),
        ({"answer_id": aid, "rating": "down", "source": {"node_id": "no-such-node"}}, 422, "invalid_request"),
        ({"answer_id": aid, "rating": "down", "source": {"citation": 1, "node_id": "x"}}, 422, None),
        ({"answer_id": aid, "rating": "down", "extra": 1}, 422, None),
    ]
    for payload, status, code in cases:
        r = await api.post("/v1/feedback", json=payload)
        assert r.status_code == status, (payload, r.text)
        if code:
            assert r.json()["error"]["code"] == code
    assert "limit is" in (await api.post("/v1/feedback", json=cases[1][0])).json()["error"]["message"]
    assert (await stats(app))["ratings"] == before["ratings"]
    assert aid not in {r.answer.answer_id for r in app.state.feedback.ratings()}


async def test_auth_and_scopes(app: FastAPI, api: httpx.AsyncClient) -> None:
    async with client(app) as anonymous:
        assert (await anonymous.post("/v1/feedback", json={"answer_id": "x", "rating": "up"})).status_code == 401
    assert (await api.get("/v1/feedback/stats")).status_code == 403  # a query key


async def test_chat_and_stream_answers_get_ids_and_a_search_hit_can_be_picked(app: FastAPI,
                                                                              api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "What is Huber loss?"}]})
    assert r.status_code == 200, r.text
    chat = r.json()
    assert chat["notesrag"]["answer_id"] == chat["id"]
    hit = (await api.get("/v1/search", params={"q": "Huber loss", "k": 3})).json()["hits"][0]
    r = await api.post("/v1/feedback", json={"answer_id": chat["id"], "rating": "down",
                                             "source": {"node_id": hit["node_id"]}})
    assert r.status_code == 200, r.text
    src = r.json()["source"]
    assert src["kind"] == "passage" and src["node_id"] == hit["node_id"] and src["quote"] in hit["text"]
    async with api.stream("POST", "/v1/ask", json={"question": "What is Huber loss?", "stream": True}) as s:
        events = sse_events("".join([chunk async for chunk in s.aiter_text()]))
    done = dict(events)["done"]
    assert app.state.feedback.answer(done["answer_id"]).answer == done["answer"]
    async with api.stream("POST", "/v1/chat/completions", json={
            "stream": True, "messages": [{"role": "user", "content": "What is Huber loss?"}]}) as s:
        chunks = [json.loads(line[6:]) for line in (await s.aread()).decode().splitlines()
                  if line.startswith("data: {")]
    last = chunks[-1]
    assert last["notesrag"]["answer_id"] == last["id"] and app.state.feedback.answer(last["id"]) is not None


def test_a_rating_is_exported_and_scored_by_eval(live_server: ServerThread, index_dir: Path,
                                                 tmp_path: Path) -> None:
    """The loop the feature is for: a down rating with the right passage picked becomes a labelled
    question in `notesrag feedback export`, which `notesrag eval --questions` reads and scores."""
    since = datetime.now(UTC).isoformat(timespec="seconds")
    with httpx.Client(base_url=live_server.url, headers=auth(), timeout=60) as c:
        body = c.post("/v1/ask", json={"question": "What is Huber loss?"}).json()
        hit = c.get("/v1/search", params={"q": "Huber loss", "k": 3}).json()["hits"][0]
        r = c.post("/v1/feedback", json={"answer_id": body["answer_id"], "rating": "down",
                                         "source": {"node_id": hit["node_id"]}})
        assert r.status_code == 200, r.text
    questions = tmp_path / "feedback.jsonl"
    done = subprocess.run([sys.executable, "-m", "service.cli", "feedback", "export", "--index-dir",
                           str(index_dir), "--since", since, "--rating", "down", "--out", str(questions)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert "exported" in done.stderr
    rows = {q["id"]: q for q in map(json.loads, questions.read_text(encoding="utf-8").splitlines())}
    mine = rows[f"fb-{body['answer_id']}"]
    assert mine["question"] == "What is Huber loss?" and mine["answerable"] is True
    assert mine["evidence"] == [r.json()["source"]["quote"]] and mine["evidence"][0] in hit["text"]
    out = tmp_path / "report"
    code = eval_main(["--questions", str(questions), "--corpus", str(NOTES), "--url", live_server.url,
                      "--api-key", QUERY_KEY, "--modes", "hybrid", "--k", "5", "--no-ragas", "--no-progress",
                      "--out", str(out)])
    assert code == 0
    scored = {row["qid"] for row in map(json.loads, (out / "per_question.jsonl").read_text().splitlines())}
    assert f"fb-{body['answer_id']}" in scored
    report = json.loads((out / "report.json").read_text())
    assert report["questions"] == len(rows)
    # every down rating of this session picked a Huber loss passage, which retrieval finds
    assert report["runs"][0]["metrics"]["hit@5"] == 1.0
