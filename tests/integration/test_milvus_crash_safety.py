"""SIGKILL an ingestion into Milvus Lite at random points: the last complete snapshot loads and
answers dense queries as before, and the next ingest clears the rows the killed ones left.

As in test_crash_safety.py, the child embeds with a small hashing embedder (a seam we own)
so runs are quick and the kills fall across parsing, the writes into the collection, the
snapshot write and the deletes after the switch. The parent opens the Lite file only
between children (Lite serves one process at a time) and releases it after each look.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import crash_corpus
import numpy as np
import pytest
from crash_corpus import HashEmbedder

from index import current_path, load_snapshot
from index.store.tree import vector_id

# A worker imports everything first and says so, then ingests when told: the kill falls in
# the ingest, not in the imports, and the next worker warms up while this one runs.
HERE = str(Path(__file__).resolve().parent)  # crash_corpus.py, for the workers
WORKER = r"""
import sys
from crash_corpus import HashEmbedder
import index.store.milvus, pymilvus, milvus_lite.adapter.grpc.server, bm25s
from index.ingestion.chunking import Chunker
Chunker()  # imports llama-index
from index import IndexConfig, ingest_sync
print("ready", flush=True)
root, idx, rebuild = sys.stdin.readline().split()
ingest_sync([root], idx, IndexConfig(vector_backend="milvus"), embedder=HashEmbedder(), rebuild=rebuild == "1")
print("done", flush=True)
"""


def query_vector(text: str) -> np.ndarray:
    return HashEmbedder().encode([text])


def corpus(root: Path, version: int) -> None:
    crash_corpus.corpus(root, version, files=30, words=300)


def worker() -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", WORKER], env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": HERE},
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return p


def start(p: subprocess.Popen[str], root: Path, idx: Path, rebuild: bool) -> None:
    assert p.stdin is not None and p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    p.stdin.write(f"{root} {idx} {int(rebuild)}\n")
    p.stdin.flush()


def ingest_here(root: Path, idx: Path) -> None:
    """An ingest in this process (no kill), its Lite file released after."""
    from index import IndexConfig, ingest_sync
    from index.store.milvus import LITE_FILE, release

    try:
        ingest_sync([root], idx, IndexConfig(vector_backend="milvus"), embedder=HashEmbedder())
    finally:
        release(str((idx / LITE_FILE).resolve()))


def look(idx: Path) -> tuple[tuple[int, list[int], list[float]], set[int], set[int]]:
    """(what the live snapshot answers, every row id in its collection, ids of all kept snapshots)."""
    from index.store.milvus import LITE_FILE, release, stored_ids

    try:
        snap = load_snapshot(idx)
        scores, ids = snap.vectors.search(query_vector("gradient3 attention5 norm1"), 5)
        answer = (len(snap.tree), ids[0].tolist(), np.round(scores[0], 5).tolist())
        rows = set(stored_ids(snap.vectors).tolist())
        others = [load_snapshot(p) for p in idx.glob("snap-*")]
        kept = set().union(*({vector_id(i) for i in o.tree.leaves()} for o in others
                             if o.vectors.collection == snap.vectors.collection))
        return answer, rows, kept
    finally:
        release(str((idx / LITE_FILE).resolve()))


def test_sigkill_during_a_milvus_ingest_keeps_the_last_snapshot_whole(tmp_path: Path):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    root = tmp_path / "notes"
    expected = {}
    nxt = worker()
    for v in range(2):  # what a complete snapshot of each corpus version answers
        corpus(root, v)
        if v == 0:  # by a worker, timed: the kills below fall inside such a run
            start(nxt, root, tmp_path / "clean0", rebuild=False)
            t0 = time.perf_counter()
            assert nxt.stdout is not None and nxt.stdout.readline().strip() == "done"
            full = time.perf_counter() - t0
            assert nxt.wait(60) == 0
            nxt = worker()
        else:
            ingest_here(root, tmp_path / f"clean{v}")
        expected[v] = look(tmp_path / f"clean{v}")[0]
    assert expected[0] != expected[1]
    idx = tmp_path / "idx"
    corpus(root, 0)
    ingest_here(root, idx)
    rng = random.Random(11)
    kills = 0
    # until 3 kills have landed inside a run (an incremental run is shorter than the timed full
    # one, and on a busy machine a run may finish before its kill), at most 10 runs
    for i in range(10):
        if kills >= 3 and i >= 4:
            break
        v = (i + 1) % 2
        corpus(root, v)
        before = look(idx)[0]
        p, nxt = nxt, worker()
        start(p, root, idx, rebuild=i == 2)  # mostly incremental: the same collection
        time.sleep(rng.uniform(0.05, 1.0 if i < 4 else 0.3) * full)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait(60)
        live = current_path(idx)
        assert live is not None and not live.name.startswith(".tmp")
        # the old snapshot, or (when the kill came after the switch) the complete new one
        assert look(idx)[0] in (before, expected[v])
    nxt.kill()
    nxt.wait(10)
    assert kills >= 3
    # the next ingest finishes and deletes what the killed writers left in the collection
    corpus(root, 0)
    ingest_here(root, idx)
    answer, rows, kept = look(idx)
    assert answer == expected[0]
    assert rows == kept
