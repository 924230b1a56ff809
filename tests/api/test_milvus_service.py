"""The service on the Milvus backend (Milvus Lite in the index directory): readiness says so,
its own ingest jobs write into the file it serves from, and a swap keeps old answers whole."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from index import IndexConfig, ingest
from index.models.embedder import SentenceTransformerEmbedder
from service.app import create_app
from service.engine import Query

from .conftest import ADMIN_KEY, NOTES, auth, client, make_settings, running
from .test_ingest import NEW_SECTION, QUESTION, run_job

MILVUS = IndexConfig(vector_backend="milvus")


@pytest.fixture
async def milvus_app(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> AsyncIterator[FastAPI]:
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from index.store.milvus import LITE_FILE, release

    root, index_dir = tmp_path / "corpus", tmp_path / "index"
    shutil.copytree(NOTES, root)
    await ingest([root], index_dir, MILVUS, embedder=embedder)  # this process holds the Lite file
    try:
        async with running(create_app(make_settings(index_dir, corpus_root=root,
                                                    vector_backend="milvus"))) as app:
            yield app
    finally:
        release(str((index_dir / LITE_FILE).resolve()))


async def test_readiness_names_the_backend_and_ingest_jobs_write_to_milvus(milvus_app: FastAPI,
                                                                         tmp_path: Path) -> None:
    async with client(milvus_app, **auth(ADMIN_KEY)) as c:
        ready = (await c.get("/readyz")).json()
        index = ready["index"]
        assert index["vector_backend"] == "milvus" and index["index_kind"] == "flat"
        assert index["milvus"]["uri"] == "milvus.db" and index["milvus"]["collection"].startswith("notesrag_index_")
        with open(tmp_path / "corpus" / "06-rag.md", "a", encoding="utf-8") as f:
            f.write(NEW_SECTION)
        job = await run_job(c, {"paths": ["."]})
        assert job["status"] == "succeeded", job
        assert (await c.get("/readyz")).json()["snapshot"] == job["snapshot"] != ready["snapshot"]
        body = (await c.post("/v1/ask", json=QUESTION)).json()
        assert body["answerable"] is True and "Quuxville" in body["answer"]


async def test_a_request_in_flight_keeps_its_snapshot_when_rows_leave(milvus_app: FastAPI, tmp_path: Path,
                                                                     embedder: SentenceTransformerEmbedder) -> None:
    engine = milvus_app.state.engine
    served = engine.current()
    stream = engine.ask_stream(Query("What is Huber loss?", mode="dense", use_cache=False))
    kind, first = await anext(stream)
    assert kind == "contexts"
    old = first.snapshot
    root = tmp_path / "corpus"
    (root / "01-fundamentals-of-deep-learning.md").write_text("# Gone\n\nNothing about losses here.\n")
    await ingest([root], tmp_path / "index", MILVUS, embedder=embedder)
    await engine.reload()  # (the watcher may have swapped already)
    assert engine.current().version != old
    rest = [item async for item in stream]
    done = rest[-1][1]
    assert rest[-1][0] == "done" and done.snapshot == old
    assert done.answer.citations and done.answer.citations[0].heading_path[-1] == "Loss"
    # after the swap the replaced snapshot still searches its own rows: they stay in Milvus
    hits = served.retriever.search("What is Huber loss?", k=3, mode="dense")
    assert hits[0].heading_path[-1] == "Loss"
    new = engine.current().retriever.search("What is Huber loss?", k=3, mode="dense")
    assert all(h.heading_path[-1] != "Loss" for h in new)
    # Milvus failing under a request: 503 with a reason, not a 500
    vectors = engine.current().snapshot.vectors
    vectors.client.drop_collection(vectors.collection)
    async with client(milvus_app, **auth()) as c:
        r = await c.get("/v1/search", params={"q": "What is dropout?", "mode": "dense"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "vector_store_unavailable"
    assert r.headers["retry-after"] == "5"
