"""`extract_answer` in process, with and without the per-snapshot section cache, side by side.

Ingests data/notes into a temporary index (seconds), retrieves the hits of every question of
data/questions.jsonl once (hybrid+merge, k=5 as the service's default), then times
`extract_answer` alone on those hits: for each question, each configuration in turn (the
order rotating from question to question), so that the machine's load falls on all of them
alike. Configurations: the cross-encoder off and on, and the section cache off (size 0: each
request splits its sections into units again, as before the cache) and on. The first round
starts with an empty cache (its hit rate says how often questions share sections); the rows
are the later rounds, the cache warm. The answers of the cache off and on must be the same
text: the script stops otherwise.

    python -m bench.answers [--rounds 3] [--questions N] [--reranker-threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p * (len(s) - 1)))]


def _time(texts: list[str], embedder: Any, reranker: Any, off: Any, on: Any, rounds: int
          ) -> tuple[list[tuple[str, bool, list[float]]], Any]:
    """(cache, cross-encoder on, times in ms) of each configuration, and the cache's info after
    the first round."""
    from index import Retriever
    from index.answer import extractive

    extractive.section_cache(off, 0)
    extractive.section_cache(on)
    retriever = Retriever(on, embedder)
    vectors = retriever.embed_queries(texts)
    hits = [retriever.search(q, k=5, query_vector=v) for q, v in zip(texts, vectors, strict=True)]
    configs: list[tuple[str, Any, Any]] = [("off", None, off), ("on", None, on),
                                           ("off", reranker, off), ("on", reranker, on)]
    times: list[list[float]] = [[] for _ in configs]
    first_info = None
    for r in range(rounds):
        for qi, (q, v, h) in enumerate(zip(texts, vectors, hits, strict=True)):
            answers: dict[int, str] = {}
            for step in range(len(configs)):
                ci = (qi + step) % len(configs)
                _, rr, snap = configs[ci]
                t0 = time.perf_counter()
                a = extractive.extract_answer(q, v, h, snap, reranker=rr)
                dt = (time.perf_counter() - t0) * 1e3
                if r > 0:
                    times[ci].append(dt)
                answers[ci] = a.text
            for plain, cached in ((0, 1), (2, 3)):
                if answers[plain] != answers[cached]:
                    raise SystemExit(f"the cache changed the answer to {q!r}: "
                                     f"{answers[plain]!r} -> {answers[cached]!r}")
        if r == 0:
            first_info = extractive.section_cache_info(on)
    return [(c, rr is not None, t) for (c, rr, _), t in zip(configs, times, strict=True)], first_info


def main(rounds: int = 3, questions: int | None = None, reranker_threads: int = 1) -> list[str]:
    from index import get_embedder, ingest_sync, load_snapshot
    from index.models.reranker import packaged_reranker

    if rounds < 2:
        raise ValueError(f"rounds must be >= 2 (the first fills the cache), got {rounds}")
    rows = [json.loads(line) for line in (ROOT / "data" / "questions.jsonl").read_text().splitlines()
            if line.strip()]
    texts = [r["question"] for r in rows][:questions]
    embedder = get_embedder()
    reranker = packaged_reranker(reranker_threads)
    with tempfile.TemporaryDirectory(prefix="bench-answers-") as tmp:
        ingest_sync([ROOT / "data" / "notes"], tmp, embedder=embedder)
        # one snapshot object a cache setting, so each keeps its own cache
        off, on = load_snapshot(Path(tmp)), load_snapshot(Path(tmp))
        times, info = _time(texts, embedder, reranker, off, on, rounds)
    load = os.getloadavg()
    out = [f"{len(texts)} questions, {rounds - 1} timed round(s) after one that fills the cache; "
           f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min)", ""]
    if info is not None:
        out += [f"First round, the cache empty at its start: {info.hits} hits, {info.misses} misses "
                f"({info.currsize} sections kept).", ""]
    out += ["| cross-encoder | section cache | extract_answer p50 ms | p99 ms | p50 against cache off |",
            "| --- | --- | ---: | ---: | ---: |"]
    for i, (cache, ce, t) in enumerate(times):
        base = statistics.median(times[i - i % 2][2])
        p50 = statistics.median(t)
        out.append(f"| {'on' if ce else 'off'} | {cache} | {p50:.2f} | {_pct(t, 0.99):.2f} | {p50 / base:.2f}x |")
    out += ["", "Answers with the cache off and on: the same text for every question and round."]
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--questions", type=int, default=None, help="the first N questions (default all)")
    ap.add_argument("--reranker-threads", type=int, default=1)
    a = ap.parse_args()
    print("\n".join(main(a.rounds, a.questions, a.reranker_threads)))
