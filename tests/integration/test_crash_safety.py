"""SIGKILL the ingestion at random points while it writes snapshots: the last complete one always loads.

The child ingests with a small hashing embedder (a seam we own: the `Embedder`
protocol) so that each run is quick and the kill points fall across parsing,
embedding and the snapshot write; FAISS, BM25, the tree and the writer are real.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import crash_corpus

from index import current_path, load_snapshot

HERE = str(Path(__file__).resolve().parent)  # crash_corpus.py, for the child processes
CHILD = r"""
import sys
from crash_corpus import HashEmbedder
from index import ingest_sync

ingest_sync([sys.argv[1]], sys.argv[2], embedder=HashEmbedder(), rebuild=sys.argv[3] == "1")
"""


def corpus(root: Path, version: int) -> None:
    crash_corpus.corpus(root, version, files=40, words=400)


def child(root: Path, idx: Path, rebuild: bool) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(idx), "1" if rebuild else "0"],
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": HERE}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def state(idx: Path) -> tuple[int, str]:
    snap = load_snapshot(idx)
    hits = snap.lexical.search("gradient3 attention5", 5)
    return len(snap.tree), json.dumps(hits)


def test_sigkill_during_ingest_never_leaves_a_partial_snapshot(tmp_path: Path):
    root = tmp_path / "notes"
    expected: dict[int, tuple[int, str]] = {}  # what a complete snapshot of each corpus version holds
    durations = []
    for v in range(3):
        corpus(root, v)
        t0 = time.perf_counter()
        assert child(root, tmp_path / f"clean{v}", rebuild=True).wait(120) == 0
        durations.append(time.perf_counter() - t0)
        expected[v] = state(tmp_path / f"clean{v}")
    assert len(set(expected.values())) == 3
    full = min(durations)
    idx = tmp_path / "idx"
    corpus(root, 0)
    assert child(root, idx, rebuild=True).wait(120) == 0
    rng = random.Random(7)
    kills = 0
    for i in range(22):
        v = (i + 1) % 3
        corpus(root, v)
        before = state(idx)
        p = child(root, idx, rebuild=True)
        time.sleep(rng.uniform(0.2, 0.97) * full)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait(60)
        live = current_path(idx)
        assert live is not None and not live.name.startswith(".tmp")
        now = state(idx)
        # the old snapshot, or (when the kill came after the switch) the complete new one
        assert now in (before, expected[v])
    assert kills >= 20
    # the next ingest finishes and clears what the killed writers left behind
    assert child(root, idx, rebuild=False).wait(120) == 0
    assert not list(idx.glob(".tmp-*"))
    assert state(idx) == expected[v]
