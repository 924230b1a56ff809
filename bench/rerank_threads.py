"""The cross-encoder on more than one core: encoder threads against intra-op threads.

The packaged int8 cross-encoder behind `BatchingReranker`, driven by C client threads, each
sending requests of 4 (question, passage) pairs (a labelled question and paragraphs of
data/notes cut to 48 words, as the extractive answer cuts its units), in these set-ups:

- 1 worker, 1 thread: one encoder thread, onnxruntime on one thread (before issue 19's
  second core);
- 1 worker, intra-op 2: one encoder thread, onnxruntime's run on two threads;
- N workers, shared session: N encoder threads calling one session (one copy of the weights);
- N workers, own sessions: N encoder threads, a session each.

Set-ups take turns, round after round, so each sees the same background load; a row pools
its rounds. Each row also gives the process's CPU time a request (what a quiet host's cores
would divide: on a shared host the rate says more about the others' load), and the largest difference of a pair's score from the same pair
scored alone on one thread (0 when company does not move a score).

    python -m bench.rerank_threads [--requests 64] [--rounds 3] [--concurrency 1,2,16] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.serve import Row, questions
from index.models.reranker import BatchingReranker, OnnxCrossEncoder, packaged_reranker

ROOT = Path(__file__).resolve().parents[1]
PAIRS_A_REQUEST = 4
WORDS = 48  # index.answer.extractive.MAX_CONTEXT_WORDS


def requests(n: int, seed: int = 0) -> list[tuple[str, list[str]]]:
    paragraphs = []
    for f in sorted((ROOT / "data" / "notes").rglob("*.md")):
        for block in f.read_text(encoding="utf-8").split("\n\n"):
            words = block.split()
            if len(words) >= 8:
                paragraphs.append(" ".join(words[:WORDS]))
    rng = random.Random(seed)
    qs = questions()
    return [(qs[i % len(qs)], rng.sample(paragraphs, PAIRS_A_REQUEST)) for i in range(n)]


class PerThread:
    """One `OnnxCrossEncoder` per calling thread (each its own session)."""

    def __init__(self) -> None:
        self.name = "per-thread"
        self.chunk = 1
        self._local = threading.local()
        self._all: list[OnnxCrossEncoder] = []
        self._lock = threading.Lock()

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        enc = getattr(self._local, "enc", None)
        if enc is None:
            enc = self._local.enc = packaged_reranker()
            with self._lock:
                self._all.append(enc)
        out: np.ndarray = enc.score_pairs(pairs)
        return out


def drive(batcher: BatchingReranker, reqs: list[tuple[str, list[str]]], concurrency: int,
          ) -> tuple[float, float, list[float], list[np.ndarray]]:
    """(seconds, CPU seconds of this process, latencies ms, scores in request order) of `reqs`
    sent by `concurrency` threads."""
    latencies: list[float] = []
    scores: list[np.ndarray] = [np.zeros(0)] * len(reqs)
    next_i = 0
    lock = threading.Lock()

    def client() -> None:
        nonlocal next_i
        while True:
            with lock:
                i = next_i
                next_i += 1
            if i >= len(reqs):
                return
            t = time.perf_counter()
            scores[i] = batcher.score(*reqs[i])
            with lock:
                latencies.append((time.perf_counter() - t) * 1e3)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    t0, cpu0 = time.perf_counter(), _cpu()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, _cpu() - cpu0, latencies, scores


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def main(n: int = 64, rounds: int = 3, levels: Sequence[int] = (1, 2, 16), workers: int = 2) -> list[str]:
    reqs = requests(n)
    alone = packaged_reranker()
    truth = [alone.score(q, ps) for q, ps in reqs]
    shared = packaged_reranker()
    setups = {
        "1 worker, 1 thread": lambda: BatchingReranker(alone, window_s=0.002),
        "1 worker, intra-op 2": lambda: BatchingReranker(packaged_reranker(threads=2), window_s=0.002),
        f"{workers} workers, shared session": lambda: BatchingReranker(shared, window_s=0.002, workers=workers),
        f"{workers} workers, own sessions": lambda: BatchingReranker(PerThread(), window_s=0.002, workers=workers),
    }
    batchers = {k: make() for k, make in setups.items()}
    for b in batchers.values():  # warm-up: sessions made, first runs paid
        drive(b, reqs[:8], 2)
    load = os.getloadavg()[0]
    lines = ["| set-up | concurrency | requests | req/s | p50 ms | p99 ms | ratio to 1 worker, 1 thread "
             "| CPU ms a request | largest score change |", "|---|---|---|---|---|---|---|---|---|"]
    try:
        for c in levels:
            rows: dict[str, Row] = {}
            moved: dict[str, float] = {}
            for _ in range(rounds):
                for label, b in batchers.items():
                    seconds, cpu, lat, got = drive(b, reqs, c)
                    row = rows.setdefault(label, Row(label, c, 0, 0, 0.0, [], 0.0))
                    row.requests += len(reqs)
                    row.seconds += seconds
                    row.cpu_s = (row.cpu_s or 0.0) + cpu
                    row.latencies_ms += lat
                    moved[label] = max(moved.get(label, 0.0),
                                       max(float(np.abs(g - t).max()) for g, t in zip(got, truth, strict=True)))
            base = rows["1 worker, 1 thread"].rate
            for label, r in rows.items():
                lines.append(f"| {label} | {c} | {r.requests} | {r.rate:.1f} | {r.pct(50):.1f} | {r.pct(99):.1f} "
                             f"| {r.rate / base:.2f} | {1e3 * (r.cpu_s or 0.0) / r.requests:.1f} | {moved[label]:.2g} |")
    finally:
        for b in batchers.values():
            b.close()
    lines.append(f"\nload average (1 min) {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    return lines


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=64, help="requests per set-up, level and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", default="1,2,16")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    print("\n".join(main(a.requests, a.rounds, [int(c) for c in a.concurrency.split(",")], a.workers)))
