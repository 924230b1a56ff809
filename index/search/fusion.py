"""Reciprocal rank fusion of several rankings."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

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
