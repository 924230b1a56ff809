"""Vector backends side by side: FAISS exact (the default) against Milvus (`index.store.milvus`).

Milvus here is Milvus Lite: pymilvus runs the engine in this process, behind a gRPC
server on loopback, so a search pays a gRPC round trip and a pure-Python engine (NumPy
brute force for FLAT). A Milvus server adds a network hop and gains a native engine; these
rows say what Lite costs, not what a cluster would.

Two parts, one run:

- **The notes corpus**: data/notes ingested once per backend with the packaged
  all-MiniLM-L6-v2. On every question of data/questions.jsonl the dense candidates the
  retriever asks for (30) must come back in the same order with scores within 1e-5 of
  FAISS's ("identical" in the table), and MRR@10 / Hit@5 of the retriever (dense, and
  hybrid with auto-merge: the service default) must be equal. Latency is
  `snapshot.vectors.search` of one question vector, k=30, what a request pays.
- **Synthetic vectors** (bench.faiss_scale's clustered 384-d mixture) at 10k and 100k:
  the same search, k=30, one query at a time; FAISS on one OpenMP thread as the service
  runs it. "top-10 = FAISS" is the share of Milvus's top 10 that FAISS's exact top 10
  holds. Each backend's queries stop after `budget_s` seconds (Lite's brute force over
  100k vectors takes a few hundred ms a query here).

Timings interleave the backends query by query, so load on this shared machine falls on
both alike.

    python -m bench.vector_backends [--sizes 10000,100000] [--queries 200] [--budget-s 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
K = 30  # the retriever's dense candidates (Retriever.min_candidates)
TIE = 1e-5


def _pct(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))]


def interleaved(searches: dict[str, Callable[[np.ndarray], object]], queries: np.ndarray,
                budget_s: float) -> dict[str, list[float]]:
    """Milliseconds of each search, one query at a time, backends in turn; stops at the budget."""
    times: dict[str, list[float]] = {name: [] for name in searches}
    t_end = time.perf_counter() + budget_s
    for q in queries:
        for name, search in searches.items():
            t = time.perf_counter_ns()
            search(q[None, :])
            times[name].append((time.perf_counter_ns() - t) / 1e6)
        if time.perf_counter() > t_end:
            break
    return times


def same_ranking(a_ids: np.ndarray, a_scores: np.ndarray, b_ids: np.ndarray) -> bool:
    """Equal, or differing only inside runs of tied scores."""
    for i in np.flatnonzero(a_ids != b_ids):
        tied = np.abs(a_scores - a_scores[i]) <= TIE
        if set(a_ids[tied].tolist()) != set(b_ids[tied].tolist()):
            return False
    return True


def _one_thread() -> None:
    import faiss

    faiss.omp_set_num_threads(1)


def notes_part(budget_s: float) -> list[str]:
    from eval.datasets import load_jsonl
    from eval.metrics import evidence_judgements, hit_at_k, reciprocal_rank
    from index import IndexConfig, Retriever, get_embedder, ingest_sync, load_snapshot
    from index.store.milvus import LITE_FILE, release

    embedder = get_embedder()
    embedder.encode(["warm-up"] * 32)  # the first forward passes are slow: not the first backend's cost
    dataset = load_jsonl(ROOT / "data" / "questions.jsonl", ROOT / "data" / "notes")
    questions = [q for q in dataset.questions if q.answerable]
    with tempfile.TemporaryDirectory() as d:
        snaps, ingest_s = {}, {}
        for name, config in (("FAISS exact", IndexConfig()),
                             ("Milvus Lite FLAT", IndexConfig(vector_backend="milvus"))):
            t = time.perf_counter()
            ingest_sync([ROOT / "data" / "notes"], Path(d) / name.replace(" ", "-"), config, embedder=embedder)
            ingest_s[name] = time.perf_counter() - t
            snaps[name] = load_snapshot(Path(d) / name.replace(" ", "-"))
        try:
            vecs = embedder.encode([q.question for q in dataset.questions])
            (fs, fi), (ms, mi) = (snaps[n].vectors.search(vecs, K) for n in snaps)
            identical = sum(same_ranking(a, sa, b) for a, sa, b in zip(fi, fs, mi, strict=True))
            max_diff = float(np.abs(fs - ms).max())
            quality: dict[str, dict[str, float]] = {}
            for name, snap in snaps.items():
                retriever = Retriever(snap, embedder)
                scores = quality.setdefault(name, {})
                for mode, merge in (("dense", False), ("hybrid", True)):
                    rr, hit = [], []
                    for q in questions:
                        hits = retriever.search(q.question, k=10, mode=mode, merge=merge)
                        qrels, run = evidence_judgements([(h.node_id, h.text) for h in hits], q.evidence)
                        ranked = sorted(run, key=lambda item: -run[item])
                        rr.append(reciprocal_rank(ranked, set(qrels), 10))
                        hit.append(hit_at_k(ranked, set(qrels), 5))
                    scores[f"{mode} mrr"], scores[f"{mode} hit"] = statistics.fmean(rr), statistics.fmean(hit)
            _one_thread()
            reps = np.concatenate([vecs] * 4)
            times = interleaved({n: (lambda q, s=s: s.vectors.search(q, K)) for n, s in snaps.items()},
                                reps, budget_s)
        finally:
            release(str((Path(d) / "Milvus-Lite-FLAT" / LITE_FILE).resolve()))
    n_leaves = len(next(iter(snaps.values())).vectors)
    lines = [f"data/notes: {n_leaves} leaf vectors; {len(dataset.questions)} questions "
             f"({len(questions)} answerable), k={K}.",
             "",
             "| backend | ingest s | search p50 / p99 ms | queries timed | dense MRR@10 / Hit@5 "
             "| hybrid+merge MRR@10 / Hit@5 |",
             "|---|---|---|---|---|---|"]
    for name in snaps:
        t, q = times[name], quality[name]
        lines.append(f"| {name} | {ingest_s[name]:.1f} | {statistics.median(t):.3f} / {_pct(t, 99):.3f} "
                     f"| {len(t)} | {q['dense mrr']:.3f} / {q['dense hit']:.3f} "
                     f"| {q['hybrid mrr']:.3f} / {q['hybrid hit']:.3f} |")
    ratio = statistics.median(times["Milvus Lite FLAT"]) / statistics.median(times["FAISS exact"])
    lines += ["", f"Rankings identical on the labelled set: {identical}/{len(dataset.questions)} questions "
              f"(top {K}, ties allowed to swap); largest score difference {max_diff:.2e}. "
              f"Milvus Lite search p50 = {ratio:.0f}x FAISS's."]
    return lines


def synthetic_part(sizes: Sequence[int], queries: int, budget_s: float) -> list[str]:
    from bench.faiss_scale import DIM, Mixture
    from index import IndexConfig
    from index.store.milvus import LITE_FILE, MilvusIndex, release
    from index.store.vectors import FaissIndex

    lines = ["| vectors | backend | build s | search p50 / p99 ms | queries timed | top-10 = FAISS |",
             "|---|---|---|---|---|---|"]
    mixture = Mixture()
    for n in sizes:
        data = mixture.sample(n)
        qs = mixture.sample(queries, stream=1)
        ids = np.arange(n, dtype=np.int64) * 7919 + 11  # ids as sparse as hashed ones
        t = time.perf_counter()
        exact = FaissIndex(DIM, "flat", hnsw_threshold=n + 1)
        exact.add(ids, data)
        faiss_build = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            writer = MilvusIndex.create(IndexConfig(vector_backend="milvus"), DIM, Path(d))
            writer.add(ids, data)
            writer.flush()
            milvus_build = time.perf_counter() - t
            try:
                _one_thread()
                times = interleaved({"FAISS exact": lambda q, e=exact: e.search(q, K),
                                     "Milvus Lite FLAT": lambda q, w=writer: w.search(q, K)},
                                    qs, budget_s)
                m = len(times["Milvus Lite FLAT"])
                _, want = exact.search(qs[:m], 10)
                _, got = writer.search(qs[:m], 10)
                agree = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(want, got, strict=True)]))
            finally:
                release(str((Path(d) / LITE_FILE).resolve()))
        for name, build in (("FAISS exact", faiss_build), ("Milvus Lite FLAT", milvus_build)):
            t_ms = times[name]
            lines.append(f"| {n:,} | {name} | {build:.1f} | {statistics.median(t_ms):.3f} / "
                         f"{_pct(t_ms, 99):.3f} | {len(t_ms)} | {1.0 if name.startswith('FAISS') else agree:.3f} |")
    return lines


def main(sizes: Sequence[int] = (10_000, 100_000), queries: int = 200, budget_s: float = 20.0) -> list[str]:
    return [*notes_part(budget_s), "", *synthetic_part(sizes, queries, budget_s)]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--budget-s", type=float, default=20.0, help="time limit of each part's timed queries")
    a = ap.parse_args()
    print("\n".join(main([int(s) for s in a.sizes.split(",") if s], a.queries, a.budget_s)))
