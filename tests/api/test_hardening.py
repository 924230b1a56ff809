"""Findings of a hostile review of the running service, each against a real uvicorn on loopback:
ingest jobs confined to the corpus root when they run, slow clients dropped, failed
authentication throttled, forwarding headers and Host checked, no secrets in start-up errors."""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from index import IndexConfig, ingest
from index.models.embedder import SentenceTransformerEmbedder
from service.app import create_app

from .conftest import ADMIN_KEY, NOTES, QUERY_KEY, auth, make_settings
from .servers import ServerThread

SECRET = "The vault combination is swordfish-4471."


def poll_job(c: httpx.Client, job_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout  # generous: the machine is shared
    while time.monotonic() < deadline:
        job: dict[str, Any] = c.get(f"/v1/ingest/{job_id}").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"the ingest job did not finish: {job}")


def leaks(c: httpx.Client, words: str = "vault combination swordfish") -> bool:
    """Whether a query-scope caller can find or be quoted the secret."""
    q = httpx.Client(base_url=str(c.base_url), headers=auth(QUERY_KEY))
    hits = q.get("/v1/search", params={"q": words, "k": 10}).json()["hits"]
    answer = q.post("/v1/ask", json={"question": "What is the vault combination?"}).json()
    return "swordfish" in str(hits) or "swordfish" in str(answer)


@pytest.fixture
async def hostile_corpus(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> tuple[Path, Path, Path]:
    root, index_dir, outside = tmp_path / "corpus", tmp_path / "index", tmp_path / "outside"
    shutil.copytree(NOTES, root)
    (root / "t4").mkdir()
    (root / "t4" / "note.md").write_text("# Tea\n\nOolong is partly oxidised tea.\n")
    outside.mkdir()
    (outside / "secrets.md").write_text(f"# Vault\n\n{SECRET}\n")
    await ingest([root], index_dir, IndexConfig(), embedder=embedder)
    return root, index_dir, outside


@pytest.fixture
def confined_server(hostile_corpus: tuple[Path, Path, Path]) -> Iterator[ServerThread]:
    root, index_dir, _ = hostile_corpus
    with ServerThread(create_app(make_settings(index_dir, corpus_root=root))) as server:
        server.wait_ready()
        yield server


def test_a_link_swapped_in_while_a_job_waits_is_not_followed(
        confined_server: ServerThread, hostile_corpus: tuple[Path, Path, Path],
        embedder: SentenceTransformerEmbedder) -> None:
    root, index_dir, outside = hostile_corpus
    with httpx.Client(base_url=confined_server.url, headers=auth(ADMIN_KEY), timeout=30) as c:
        with open(index_dir / ".lock", "w") as lock:  # another writer holds the index
            fcntl.flock(lock, fcntl.LOCK_EX)
            r = c.post("/v1/ingest", json={"paths": ["t4"]})
            assert r.status_code == 202, r.text
            deadline = time.monotonic() + 30
            while c.get(f"/v1/ingest/{r.json()['id']}").json()["status"] != "running":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(0.5)  # the job has started and waits for the lock
            (root / "t4").rename(root / "t4.bak")
            os.symlink(outside, root / "t4")
            assert c.get(f"/v1/ingest/{r.json()['id']}").json()["status"] == "running"
        job = poll_job(c, r.json()["id"])
        assert job["status"] == "failed" and "t4 resolves outside the corpus root" in job["error"], job
        assert not leaks(c)

        # a link out inside a folder, swapped in the same way: skipped with a reason, not read
        os.unlink(root / "t4")
        (root / "t4.bak").rename(root / "t4")
        os.symlink(outside / "secrets.md", root / "t4" / "more.md")
        job = poll_job(c, c.post("/v1/ingest", json={"paths": ["t4"]}).json()["id"])
        assert job["status"] == "succeeded", job
        assert job["errors"] == {str(root / "t4" / "more.md"): "a symbolic link that leads outside "
                                                                 "the ingested folders"}
        assert not leaks(c)
        os.unlink(root / "t4" / "more.md")


def test_what_a_snapshot_holds_from_outside_the_root_leaves_at_the_next_ingest(
        confined_server: ServerThread, hostile_corpus: tuple[Path, Path, Path],
        embedder: SentenceTransformerEmbedder) -> None:
    root, index_dir, outside = hostile_corpus
    # a snapshot written by an earlier version that followed the swapped link: it holds the
    # outside files under their own (resolved) names
    import asyncio

    asyncio.run(ingest([root, outside], index_dir, IndexConfig(), embedder=embedder))
    with httpx.Client(base_url=confined_server.url, headers=auth(ADMIN_KEY), timeout=30) as c:
        assert c.post("/v1/reload").status_code == 200
        assert leaks(c)  # the premise: served before the fix's ingest
        job = poll_job(c, c.post("/v1/ingest", json={"paths": ["."]}).json()["id"])
        assert job["status"] == "succeeded" and job["progress"]["files_removed"] == 1, job
        assert not leaks(c)
        # an ingest of a folder inside the root also drops them (they are never carried)
        asyncio.run(ingest([root, outside], index_dir, IndexConfig(), embedder=embedder))
        assert c.post("/v1/reload").status_code == 200 and leaks(c)
        job = poll_job(c, c.post("/v1/ingest", json={"paths": ["t4"]}).json()["id"])
        assert job["status"] == "succeeded" and job["progress"]["files_removed"] == 1, job
        assert not leaks(c)
