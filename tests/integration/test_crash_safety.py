"""SIGKILL the ingestion at random points while it writes snapshots: the last complete one always loads.

The child ingests with a small hashing embedder (a seam we own: the `Embedder`
protocol) so that each run is quick and the kill points fall across parsing,
embedding and the snapshot write; FAISS, BM25, the tree and the writer are real.
Each child is a process of its own, forked from a multiprocessing forkserver that has
imported the ingestion stack and run one small ingest (crash_warm.py): the kill falls in
the ingest rather than in imports and first-use set-up, and the children do not each
pay for them.
"""

from __future__ import annotations

import json
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import crash_corpus
import pytest

from index import current_path, load_snapshot

HERE = str(Path(__file__).resolve().parent)  # crash_corpus.py, for the forkserver and its children
# what the forkserver imports before it forks any child: the stack an ingest runs through, warm
PRELOAD = ["crash_corpus", "crash_warm"]
KILLS = 20  # ingests killed part-way


def corpus(root: Path, version: int) -> None:
    crash_corpus.corpus(root, version, files=40, words=400)


@pytest.fixture(scope="module")
def forkserver() -> Iterator[multiprocessing.context.ForkServerContext]:
    """The forkserver, started with crash_corpus.py on its path and PRELOAD imported. (Were an
    import to fail there, the children could not unpickle their target and would exit 1.)"""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    with pytest.MonkeyPatch.context() as mp:  # the environment it starts with, and its children
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p))
        multiprocessing.forkserver.ensure_running()  # its imports are not timed as part of a run
    yield ctx


def child(ctx: multiprocessing.context.ForkServerContext, root: Path, idx: Path,
          rebuild: bool) -> multiprocessing.process.BaseProcess:
    p = ctx.Process(target=crash_corpus.ingest_child, args=(str(root), str(idx), rebuild), daemon=True)
    p.start()
    return p


def exit_code(p: multiprocessing.process.BaseProcess, timeout: float) -> int | None:
    p.join(timeout)
    return p.exitcode


def state(idx: Path) -> tuple[int, str]:
    snap = load_snapshot(idx)
    hits = snap.lexical.search("gradient3 attention5", 5)
    return len(snap.tree), json.dumps(hits)


def test_sigkill_during_ingest_never_leaves_a_partial_snapshot(tmp_path: Path,
                                                              forkserver: multiprocessing.context.ForkServerContext):
    root = tmp_path / "notes"
    expected: dict[int, tuple[int, str]] = {}  # what a complete snapshot of each corpus version holds
    durations = []
    for v in range(3):
        corpus(root, v)
        t0 = time.perf_counter()
        assert exit_code(child(forkserver, root, tmp_path / f"clean{v}", rebuild=True), 120) == 0
        durations.append(time.perf_counter() - t0)
        expected[v] = state(tmp_path / f"clean{v}")
    assert len(set(expected.values())) == 3
    full = min(durations)
    idx = tmp_path / "idx"
    corpus(root, 0)
    assert exit_code(child(forkserver, root, idx, rebuild=True), 120) == 0
    rng = random.Random(7)
    kills = runs = 0
    while kills < KILLS and runs < 2 * KILLS:  # a run that beats its kill (a faster moment) counts no kill
        v = (runs + 1) % 3
        runs += 1
        corpus(root, v)
        before = state(idx)
        p = child(forkserver, root, idx, rebuild=True)
        time.sleep(rng.uniform(0.2, 0.97) * full)
        if p.is_alive():
            p.kill()  # SIGKILL
            kills += 1
        p.join(60)
        assert p.exitcode is not None
        live = current_path(idx)
        assert live is not None and not live.name.startswith(".tmp")
        now = state(idx)
        # the old snapshot, or (when the kill came after the switch) the complete new one
        assert now in (before, expected[v])
    assert kills == KILLS, f"only {kills} of {runs} runs were killed before they finished"
    # the next ingest finishes and clears what the killed writers left behind
    assert exit_code(child(forkserver, root, idx, rebuild=False), 120) == 0
    assert not list(idx.glob(".tmp-*"))
    assert state(idx) == expected[v]
