"""Fusion of several rankings: reciprocal ranks (`rrf`) or z-scores of their scores (`zscore`)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Literal, TypeVar, get_args

K = TypeVar("K", bound=Hashable)

# Small k: with ~30 candidates a list, the usual k=60 flattens the fusion so much that a leaf
# ranked first by one retriever and missing from the other ties with mid-list leaves
# (on data/questions.jsonl, hybrid+merge MRR@10: k=60 0.912, k=20 0.913, k=5 0.922).
RRF_K = 5


def rrf(rankings: Sequence[Sequence[K]], k: int = RRF_K, weights: Sequence[float] | None = None) -> list[tuple[K, float]]:
    """Fuse rankings (best first) by sum of weight / (k + rank); ties keep first-seen order."""
    if k < 0:
        raise ValueError(f"rrf k must be >= 0, got {k}")
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    scores: dict[K, float] = {}
    for ranking, w in zip(rankings, weights, strict=True):
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + w / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


# Score fusion: each list's scores as z-scores, the weighted sum. The mean and deviation come from
# a list's top NORM_DEPTH scores however deep it goes, so a deeper search (the eval fills k distinct
# documents that way) leaves the order of what it already ranked as it was.
NORM_DEPTH = 30
Fusion = Literal["rrf", "zscore"]
FUSIONS: tuple[str, ...] = get_args(Fusion)


def zscore(scored: Sequence[Sequence[tuple[K, float]]], weights: Sequence[float] | None = None,
           depth: int = NORM_DEPTH, absent: Sequence[tuple[float, int] | None] | None = None,
           ) -> list[tuple[K, float]]:
    """Fuse scored lists (best first) by the weighted sum of each list's z-scores, the mean and
    deviation taken over its top `depth` scores.

    `absent[i]`: (score, count) when list i is cut short, `count` keys outside it scoring `score`
    (BM25 lists only the leaves that hold a query word: the others score 0). They fill the list's
    statistics up to `depth` places, and a key missing from it gets that score's z-score, so a
    word only one leaf holds lifts that leaf far above the rest rather than to a z-score of 0.
    None: nothing is known of the keys outside the list; a key missing from it gets the list's
    lowest z-score, as if it had come last. Ties keep first-seen order."""
    if depth < 1:
        raise ValueError(f"normalisation depth must be >= 1, got {depth}")
    if weights is None:
        weights = [1.0] * len(scored)
    if absent is None:
        absent = [None] * len(scored)
    if not len(weights) == len(absent) == len(scored):
        raise ValueError(f"{len(weights)} weights and {len(absent)} absent scores for {len(scored)} lists")
    normed: list[tuple[dict[K, float], float, float]] = []
    for lst, w, out in zip(scored, weights, absent, strict=True):
        head = [s for _, s in lst[:depth]]
        if out is not None:
            head += [out[0]] * max(0, min(out[1], depth - len(head)))
        if not head:
            continue
        mean = sum(head) / len(head)
        sd = (sum((s - mean) ** 2 for s in head) / len(head)) ** 0.5 or 1.0
        z: dict[K, float] = {}
        for key, s in lst:
            z.setdefault(key, (s - mean) / sd)
        low = (out[0] - mean) / sd if out is not None else min(z.values(), default=0.0)
        normed.append((z, low, w))
    keys: dict[K, None] = {}
    for lst in scored:
        for key, _ in lst:
            keys.setdefault(key, None)
    fused = [(key, sum(w * z.get(key, low) for z, low, w in normed)) for key in keys]
    return sorted(fused, key=lambda kv: -kv[1])
