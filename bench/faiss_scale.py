"""FAISS at scale: exact, HNSW and IVF search over synthetic embedding-like vectors.

The vectors are 384-dimensional, L2-normalised and clustered, not uniform: a mixture
of 4,000 Gaussian centres (100 topics of 40 subtopics each), a spread whose variance
falls off over the dimensions, and a direction common to all (sentence embeddings share
one: the mean of MiniLM's leaf vectors has norm 0.42). At about 1,400 points its
neighbourhoods look like those of all-MiniLM-L6-v2 over 1,700 leaf chunks of the
Python docs (cosine to the nearest, 10th and 100th neighbour 0.70 / 0.51 / 0.27 here
against 0.78 / 0.55 / 0.35; local intrinsic dimension at k=10 about 11 against 10);
at 1M the same 4,000 centres are 250 times denser, which makes neighbours harder to
tell apart than in a real corpus of that size: the table shows how hard, per size.
Queries are fresh draws from the same mixture (not indexed points).

Indexes are built through `index.store.vectors.FaissIndex` (what the service runs: an
`IndexIDMap2` over `IndexFlatIP` or `IndexHNSWFlat`) with every core; IVF is a plain
FAISS `IndexIVFFlat` under the same id map. Search is timed one query at a time on one
thread (`faiss.omp_set_num_threads(1)`), k=10, through `FaissIndex.search`; recall@10
is against exact search. Memory is the growth of this process's resident set while
the index is built. "remove 100" is `FaissIndex.remove` of 100 ids (about one changed
note's leaves at re-ingestion) and the first search after it.

    python -m bench.faiss_scale [--sizes 10000,100000,1000000] [--queries 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from index.store.vectors import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, FaissIndex

DIM = 384
K = 10
REMOVED = 100  # ids removed at once: about the leaves of one changed note


@dataclass(frozen=True)
class Mixture:
    """A clustered distribution of unit vectors; see the module docstring."""

    dim: int = DIM
    topics: int = 100
    subtopics: int = 40
    topic_spread: float = 0.8  # of a subtopic's centre around its topic's
    spread: float = 0.8  # norm of a point's offset from its subtopic's centre
    decay: float = 0.5  # the offset's scale in dimension i falls as i**-decay
    common: float = 0.7  # weight of the direction all vectors share
    seed: int = 0

    def sample(self, n: int, stream: int = 0) -> np.ndarray:
        """`n` unit vectors, float32; each `stream` is an independent draw from the same mixture."""
        rng = np.random.default_rng([self.seed, 0])
        topics = rng.standard_normal((self.topics, self.dim), dtype=np.float32)
        topics /= np.linalg.norm(topics, axis=1, keepdims=True)
        centres = np.repeat(topics, self.subtopics, axis=0) + self.topic_spread / np.sqrt(self.dim) * \
            rng.standard_normal((self.topics * self.subtopics, self.dim), dtype=np.float32)
        common = rng.standard_normal(self.dim).astype(np.float32)
        common /= np.linalg.norm(common)
        scale = np.arange(1, self.dim + 1, dtype=np.float32) ** -self.decay
        scale = (scale * self.spread / np.linalg.norm(scale))[rng.permutation(self.dim)]
        weights = rng.dirichlet(np.ones(len(centres)))
        draw = np.random.default_rng([self.seed, 1 + stream])
        out = np.empty((n, self.dim), np.float32)
        for a in range(0, n, 1 << 16):  # in blocks: no float64 or full-size temporaries
            b = min(n, a + (1 << 16))
            x = centres[draw.choice(len(centres), size=b - a, p=weights)]
            x += draw.standard_normal((b - a, self.dim), dtype=np.float32) * scale
            x += self.common * common
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[a:b] = x
        return out


def rss_mb() -> float:
    """Resident set of this process, after handing freed heap pages back to the system.

    Without the trim, an index would reuse pages freed by earlier work and seem to cost nothing.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def recall_at(approx: np.ndarray, exact: np.ndarray, k: int = K) -> float:
    """Mean fraction of each query's exact top-k found in its approximate top-k."""
    return float(np.mean([len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approx, exact, strict=True)]))


def neighbour_stats(scores: np.ndarray) -> tuple[float, float, float]:
    """(mean cosine to the 1st and 10th neighbour, median local intrinsic dimension at k=10)."""
    d = np.sqrt(np.maximum(2.0 - 2.0 * scores[:, : K + 1].astype(np.float64), 1e-12))
    lid = -1.0 / np.mean(np.log(d[:, :K] / d[:, K:K + 1]), axis=1)
    return float(scores[:, 0].mean()), float(scores[:, K - 1].mean()), float(np.median(lid))


def time_queries(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray
                 ) -> tuple[float, float, np.ndarray]:
    """(p50 ms, p99 ms, ids) of one query at a time."""
    times, ids = [], []
    for q in queries:
        q1 = q[None, :]
        t = time.perf_counter_ns()
        found = search(q1)
        times.append((time.perf_counter_ns() - t) / 1e6)
        ids.append(found[0])
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))], np.array(ids)


def _top_ids(index: FaissIndex | _Ivf) -> Callable[[np.ndarray], np.ndarray]:
    def search(q: np.ndarray) -> np.ndarray:
        return index.search(q, K)[1]
    return search


class _Ivf:
    """An `IndexIVFFlat` (inner product) under an `IndexIDMap2`, with FaissIndex's search signature."""

    def __init__(self, vectors: np.ndarray, nlist: int, seed: int = 0) -> None:
        quantizer = faiss.IndexFlatIP(vectors.shape[1])
        ivf = faiss.IndexIVFFlat(quantizer, vectors.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed = seed
        ivf.cp.niter = 10
        sample = np.random.default_rng(seed).choice(len(vectors), min(len(vectors), 64 * nlist),
                                                    replace=False)
        ivf.train(vectors[np.sort(sample)])
        self.ivf, self.quantizer = ivf, quantizer  # the quantizer must outlive the index
        self.index = faiss.IndexIDMap2(ivf)
        self.index.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self.index.search(q, k)
        return scores, ids


def _row(n: int, name: str, params: str, build_s: float | None, mem: float | None, p50: float,
         p99: float, recall: float, remove_s: float | None = None) -> str:
    b = "-" if build_s is None else f"{build_s:.1f}"
    m = "-" if mem is None else f"{mem:.0f}"
    r = "-" if remove_s is None else f"{remove_s * 1000:.0f}"
    ok = " ✓" if p50 <= 2.0 and recall >= 0.95 else ""
    return f"| {n:,} | {name} | {params} | {b} | {m} | {r} | {p50:.3f} / {p99:.3f} | {recall:.3f}{ok} |"


def _time_remove(index: FaissIndex, ids: np.ndarray) -> float:
    """Seconds to remove `ids` (a changed file's leaves), then search once (what the next query pays)."""
    t = time.perf_counter()
    index.remove(ids)
    index.search(np.zeros((1, index.dim), np.float32), K)
    return time.perf_counter() - t


def bench_size(n: int, queries: int, hnsw: Sequence[tuple[int, int]], ef_search: Sequence[int],
               ivf_nprobe: Sequence[int], ivf_max: int, mixture: Mixture, threads: int) -> list[str]:
    t = time.perf_counter()
    data = mixture.sample(n)
    qs = mixture.sample(queries, stream=1)
    gen_s = time.perf_counter() - t
    ids = np.arange(n, dtype=np.int64)
    lines: list[str] = []

    faiss.omp_set_num_threads(threads)
    before = rss_mb()
    t = time.perf_counter()
    exact = FaissIndex(DIM, "flat", hnsw_threshold=n + 1)
    exact.add(ids, data)
    build_s, mem = time.perf_counter() - t, rss_mb() - before
    truth_scores, truth = exact.search(qs, 100)  # batched, every core: the ground truth
    top1, top10, lid = neighbour_stats(truth_scores)
    faiss.omp_set_num_threads(1)
    # Exact search reads every vector: a few hundred queries give a stable median.
    timed = qs[: min(queries, max(50, 20_000_000 // n))]
    p50, p99, _ = time_queries(_top_ids(exact), timed)
    removed = _time_remove(exact, ids[:: max(1, n // REMOVED)][:REMOVED])
    lines.append(_row(n, "exact (IndexFlatIP)", f"{len(timed)} queries timed", build_s, mem, p50, p99, 1.0,
                      removed))
    del exact

    for m, efc in hnsw:
        faiss.omp_set_num_threads(threads)
        before = rss_mb()
        t = time.perf_counter()
        approx = FaissIndex(DIM, "hnsw", hnsw_threshold=n + 1, hnsw_m=m, ef_construction=efc)
        approx.add(ids, data)
        build_s, mem = time.perf_counter() - t, rss_mb() - before
        faiss.omp_set_num_threads(1)
        rows = []
        for ef in ef_search:
            approx.ef_search = ef
            p50, p99, found = time_queries(_top_ids(approx), qs)
            rows.append((ef, p50, p99, recall_at(found, truth)))
        removed = _time_remove(approx, ids[:: max(1, n // REMOVED)][:REMOVED])
        for i, (ef, p50, p99, recall) in enumerate(rows):
            lines.append(_row(n, "HNSW (IndexHNSWFlat)", f"M={m} efConstruction={efc} efSearch={ef}",
                              build_s if i == 0 else None, mem if i == 0 else None, p50, p99, recall,
                              removed if i == 0 else None))
        del approx

    if n <= ivf_max and ivf_nprobe:
        nlist = max(16, min(int(4 * np.sqrt(n)), n // 39))  # FAISS wants >= 39 points a list
        faiss.omp_set_num_threads(threads)
        before = rss_mb()
        t = time.perf_counter()
        ivf = _Ivf(data, nlist)
        build_s, mem = time.perf_counter() - t, rss_mb() - before
        faiss.omp_set_num_threads(1)
        for i, nprobe in enumerate(ivf_nprobe):
            ivf.ivf.nprobe = nprobe
            p50, p99, found = time_queries(_top_ids(ivf), qs)
            lines.append(_row(n, "IVF (IndexIVFFlat)", f"nlist={nlist} nprobe={nprobe}",
                              build_s if i == 0 else None, mem if i == 0 else None, p50, p99,
                              recall_at(found, truth)))
        del ivf
    lines.append(f"| {n:,} | *data* | cosine to 1st / 10th neighbour {top1:.2f} / {top10:.2f}, "
                 f"local intrinsic dim {lid:.0f}; generated in {gen_s:.1f} s | | | | | |")
    faiss.omp_set_num_threads(threads)
    return lines


def main(sizes: Sequence[int] = (10_000, 100_000, 1_000_000), queries: int = 1000,
         hnsw: Sequence[tuple[int, int]] = ((HNSW_M, HNSW_EF_CONSTRUCTION),),
         ef_search: Sequence[int] = (32, 64, 128, 256, 512),
         ivf_nprobe: Sequence[int] = (8, 32), ivf_max: int = 100_000,
         threads: int | None = None) -> list[str]:
    threads = threads or os.cpu_count() or 1
    ef_search = sorted(set(ef_search))
    lines = [f"k={K}; {queries} queries a size, one at a time on one thread; builds on {threads} "
             f"threads; ✓ = the goal (p50 <= 2 ms and recall@10 >= 0.95). Service default: "
             f"M={HNSW_M} efConstruction={HNSW_EF_CONSTRUCTION} efSearch={HNSW_EF_SEARCH}.",
             "",
             "| vectors | index | parameters | build s | memory MB | remove 100 ms | search p50 / p99 ms "
             "| recall@10 |",
             "|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        lines += bench_size(n, queries, hnsw, ef_search, ivf_nprobe, ivf_max, Mixture(), threads)
    return lines


def _pairs(text: str) -> list[tuple[int, int]]:
    return [(int(m), int(e)) for m, e in (p.split(":") for p in text.split(",") if p)]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--hnsw", default=f"{HNSW_M}:{HNSW_EF_CONSTRUCTION}",
                    help="M:efConstruction pairs, comma-separated")
    ap.add_argument("--ef-search", default="32,64,128,256,512")
    ap.add_argument("--ivf-nprobe", default="8,32", help="empty: no IVF")
    ap.add_argument("--ivf-max", type=int, default=100_000, help="largest size given an IVF index")
    ap.add_argument("--threads", type=int)
    a = ap.parse_args()
    print("\n".join(main([int(s) for s in a.sizes.split(",")], a.queries, _pairs(a.hnsw),
                         [int(x) for x in a.ef_search.split(",")],
                         [int(x) for x in a.ivf_nprobe.split(",") if x], a.ivf_max, a.threads)))
