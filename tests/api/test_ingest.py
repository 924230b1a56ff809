"""Ingestion over HTTP (paths confined to the corpus root) and snapshot hot swap without a restart."""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from notes_copies import NotesCopies

from index import IndexConfig, ingest
from index.models.embedder import SentenceTransformerEmbedder
from service.app import create_app
from service.engine import Query

from .conftest import ADMIN_KEY, auth, client, make_settings, running, wait_until

NEW_SECTION = "\n\n## Zanzibaria\n\nThe capital of Zanzibaria is Quuxville, a city of copper bridges.\n"
QUESTION = {"question": "What is the capital of Zanzibaria?"}


@pytest.fixture
async def corpus(notes_copies: NotesCopies) -> tuple[Path, Path]:
    """A copy of data/notes and its own index (ingested once, put back for each test)."""
    return await asyncio.to_thread(notes_copies.fresh, "notes")


@pytest.fixture
async def swap_app(corpus: tuple[Path, Path]) -> AsyncIterator[FastAPI]:
    root, index_dir = corpus
    async with running(create_app(make_settings(index_dir, corpus_root=root))) as app:
        yield app


async def run_job(c: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await c.post("/v1/ingest", json=body)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running")
    deadline = time.monotonic() + 180  # generous: this machine is shared
    while time.monotonic() < deadline:
        job = (await c.get(f"/v1/ingest/{job['id']}")).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"the ingest job did not finish: {job}")


async def test_ingest_job_reports_progress_and_the_new_snapshot_is_served(
        swap_app: FastAPI, corpus: tuple[Path, Path]) -> None:
    root, _ = corpus
    async with client(swap_app, **auth(ADMIN_KEY)) as c:
        before = (await c.get("/readyz")).json()["snapshot"]
        assert (await c.post("/v1/ask", json=QUESTION)).json()["answerable"] is False
        with open(root / "06-rag.md", "a", encoding="utf-8") as f:
            f.write(NEW_SECTION)
        (root / "broken.md").write_bytes(b"\xff\xfe\x00binary\x00")
        job = await run_job(c, {"paths": ["."]})
        assert job["status"] == "succeeded", job
        p = job["progress"]
        assert p["files_changed"] == 1 and p["files_unchanged"] == 8 and p["leaves_embedded"] >= 1
        assert p["files_done"] == p["files_total"] == 10
        assert list(job["errors"]) and Path(next(iter(job["errors"]))).name == "broken.md"
        assert job["snapshot"] and job["snapshot"] != before
        # swapped at the end of the job, no restart
        assert (await c.get("/readyz")).json()["snapshot"] == job["snapshot"]
        body = (await c.post("/v1/ask", json=QUESTION)).json()
        assert body["answerable"] is True and "Quuxville" in body["answer"]
        assert body["snapshot"] == job["snapshot"]
        assert Path(body["citations"][0]["source"]).name == "06-rag.md"
        metrics = (await c.get("/metrics")).text
        assert 'notesrag_ingest_jobs_total{status="succeeded"} 1.0' in metrics
        assert 'notesrag_ingest_files_total{outcome="changed"} 1.0' in metrics


async def test_snapshot_written_by_another_process_is_picked_up(
        swap_app: FastAPI, corpus: tuple[Path, Path], embedder: SentenceTransformerEmbedder) -> None:
    root, index_dir = corpus
    engine = swap_app.state.engine
    before = engine.current().version
    with open(root / "06-rag.md", "a", encoding="utf-8") as f:
        f.write(NEW_SECTION)
    await ingest([root], index_dir, IndexConfig(), embedder=embedder)  # as `notesrag ingest` would
    await wait_until(lambda: engine.current().version != before, timeout=10, what="the watcher to swap")
    async with client(swap_app, **auth()) as c:
        body = (await c.post("/v1/ask", json=QUESTION)).json()
    assert "Quuxville" in body["answer"] and body["snapshot"] != before


async def test_a_request_in_flight_keeps_its_snapshot_across_a_swap(
        swap_app: FastAPI, corpus: tuple[Path, Path], embedder: SentenceTransformerEmbedder) -> None:
    root, index_dir = corpus
    engine = swap_app.state.engine
    stream = engine.ask_stream(Query("What is Huber loss?", use_cache=False))
    kind, first = await anext(stream)
    assert kind == "contexts"
    old = first.snapshot
    (root / "01-fundamentals-of-deep-learning.md").write_text("# Gone\n\nNothing about losses here.\n")
    await ingest([root], index_dir, IndexConfig(), embedder=embedder)
    assert await engine.reload() is True and engine.current().version != old
    rest = [item async for item in stream]
    done = rest[-1][1]
    assert rest[-1][0] == "done" and done.snapshot == old
    # answered from the old snapshot, where the Loss section still exists
    assert done.answer.answerable and done.answer.citations
    assert done.answer.citations[0].heading_path[-1] == "Loss"
    # and concurrent requests during swaps all succeed
    async with client(swap_app, **auth()) as c:
        async def ask(i: int) -> httpx.Response:
            return await c.post("/v1/ask", json={"question": f"What is dropout? ({i})"})

        tasks = [asyncio.create_task(ask(i)) for i in range(12)]
        with open(root / "06-rag.md", "a", encoding="utf-8") as f:
            f.write(NEW_SECTION)
        await ingest([root], index_dir, IndexConfig(), embedder=embedder)
        await engine.reload()
        assert all(r.status_code == 200 for r in await asyncio.gather(*tasks))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret.md").write_text("# Secret\n\nThe password is hunter2.\n")
    return d


async def test_paths_outside_the_corpus_root_are_403(swap_app: FastAPI, corpus: tuple[Path, Path],
                                                     outside: Path) -> None:
    root, _ = corpus
    os.symlink(outside / "secret.md", root / "link-to-secret.md")
    (root / "sub").mkdir()
    (root / "sub" / "fine.md").write_text("# Fine\n\nA fine note.\n")
    os.symlink(outside, root / "sub" / "escape")
    async with client(swap_app, **auth(ADMIN_KEY)) as c:
        cases = [(["../"], 403), ([str(outside)], 403), (["../outside/secret.md"], 403),
                 (["link-to-secret.md"], 403), (["/etc/passwd"], 403), (["../nope/missing.md"], 403),
                 (["missing.md"], 404)]
        for paths, code in cases:
            r = await c.post("/v1/ingest", json={"paths": paths})
            assert r.status_code == code, (paths, r.text)
            assert r.json()["error"]["code"] in ("path_outside_root", "path_not_found")
        # one message whether the outside path exists or not
        messages = {(await c.post("/v1/ingest", json={"paths": [p]})).json()["error"]["message"]
                    .replace(p, "P") for p in (str(outside / "secret.md"), str(outside / "nope.md"))}
        assert messages == {"'P' is outside the corpus root"}
        # a folder holding a link out is ingested, the link skipped with a reason (as the CLI does)
        job = await run_job(c, {"paths": ["sub"]})
        assert job["status"] == "succeeded", job
        assert job["errors"] == {"sub/escape/secret.md":
                                 "a symbolic link that leads outside the ingested folders"}
        hits = (await c.get("/v1/search", params={"q": "password hunter2"})).json()["hits"]
        assert hits and "hunter2" not in str(hits)
        os.unlink(root / "sub" / "escape")
        os.unlink(root / "link-to-secret.md")
        job = await run_job(c, {"paths": ["sub", str(root / "00-about.md")]})
        assert job["status"] == "succeeded" and job["paths"] == ["sub", "00-about.md"]
        assert (await c.post("/v1/ingest", json={"paths": ["x"], "bogus": 1})).status_code == 422


async def test_jobs_run_one_at_a_time(swap_app: FastAPI) -> None:
    async with client(swap_app, **auth(ADMIN_KEY)) as c:
        first = (await c.post("/v1/ingest", json={"paths": ["."], "rebuild": True})).json()
        second = (await c.post("/v1/ingest", json={"paths": ["02-nlp.md"]})).json()
        assert second["status"] == "queued"
        seen_overlap = False
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            b = (await c.get(f"/v1/ingest/{second['id']}")).json()
            # read after b: a still running now was running when b was read (a status never goes back)
            a = (await c.get(f"/v1/ingest/{first['id']}")).json()
            seen_overlap |= a["status"] == "running" and b["status"] == "running"
            if b["status"] in ("succeeded", "failed"):
                break
            await asyncio.sleep(0.05)
        assert not seen_overlap
        assert a["status"] == b["status"] == "succeeded"
        assert b["started_at"] >= a["finished_at"]
        assert a["progress"]["leaves_embedded"] > 0 and b["progress"]["files_unchanged"] == 1


async def test_a_job_is_cancelled_at_its_next_batch_and_the_old_snapshot_stays(
        swap_app: FastAPI, corpus: tuple[Path, Path]) -> None:
    _, index_dir = corpus
    jobs = swap_app.state.jobs
    async with client(swap_app, **auth(ADMIN_KEY)) as c:
        before = (await c.get("/readyz")).json()["snapshot"]
        # another writer holds the index, so the running job waits for it and cannot finish first
        with open(index_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            running = (await c.post("/v1/ingest", json={"paths": ["."], "rebuild": True})).json()
            queued = (await c.post("/v1/ingest", json={"paths": ["02-nlp.md"]})).json()
            # the queued one at once, before it starts
            r = await c.delete(f"/v1/ingest/{queued['id']}")
            assert r.status_code == 202 and r.json()["status"] == "cancelled", r.text
            await wait_until(lambda: jobs.get(running["id"]).status == "running", what="the job to run")
            r = await c.delete(f"/v1/ingest/{running['id']}")
            assert r.status_code == 202 and r.json()["cancel_requested"] is True, r.text
            assert r.json()["status"] == "running"
        await wait_until(lambda: jobs.get(running["id"]).finished, timeout=120, what="the cancel")
        job = (await c.get(f"/v1/ingest/{running['id']}")).json()
        assert job["status"] == "cancelled" and "previous snapshot" in job["error"], job
        assert job["progress"]["leaves_embedded"] == 0
        assert (await c.get(f"/v1/ingest/{queued['id']}")).json()["started_at"] is None
        assert (await c.get("/readyz")).json()["snapshot"] == before
        assert (index_dir / "CURRENT").read_text().strip() == before
        assert (await c.delete(f"/v1/ingest/{running['id']}")).status_code == 409
        assert (await c.delete("/v1/ingest/nope")).status_code == 404
        async with client(swap_app, **auth()) as q:  # a query key may not cancel
            assert (await q.delete(f"/v1/ingest/{running['id']}")).status_code == 403


async def test_a_job_over_its_chunk_budget_fails_before_embedding(corpus: tuple[Path, Path]) -> None:
    root, index_dir = corpus
    async with running(create_app(make_settings(index_dir, corpus_root=root, ingest_max_leaves=5))) as app, \
            client(app, **auth(ADMIN_KEY)) as c:
        before = (await c.get("/readyz")).json()["snapshot"]
        job = await run_job(c, {"paths": ["."], "rebuild": True})
        assert job["status"] == "failed" and "over the budget of 5 chunks" in job["error"], job
        assert job["progress"]["leaves_embedded"] == 0
        assert (await c.get("/readyz")).json()["snapshot"] == before


async def test_every_skip_and_every_cut_is_listed_in_the_job(swap_app: FastAPI, corpus: tuple[Path, Path]) -> None:
    root, _ = corpus
    os.mkfifo(root / "pipe.md")
    (root / "blob.md").write_text("# Blob\n\nAn inlined image follows.\n\n" + "QUJD" * 400 + "\n\nAfter it.\n")
    (root / "empty.md").write_text("")
    async with client(swap_app, **auth(ADMIN_KEY)) as c:
        job = await run_job(c, {"paths": ["."]})
    assert job["status"] == "succeeded", job
    reasons = {Path(p).name: r for p, r in job["errors"].items()}
    assert reasons == {
        "pipe.md": "not a regular file (a FIFO, socket or device)",
        "empty.md": "empty file",
        "blob.md": "left out 1 run(s) of over 1000 characters without whitespace (encoded or minified data)",
    }
