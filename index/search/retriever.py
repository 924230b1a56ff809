"""Retrieval: dense (FAISS) and BM25 top-k leaves, fused (z-scores or reciprocal ranks), auto-merge."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from index.models.embedder import Embedder, encode_queries
from index.models.reranker import Reranker, sigmoid
from index.search.fusion import FUSIONS, RRF_K, Fusion, rrf, zscore
from index.search.merge import auto_merge
from index.store.snapshot import Snapshot

MODES = ("dense", "bm25", "hybrid")
DEFAULT_MERGE_THRESHOLD = 0.5
# Dense rankings are the stronger signal on paraphrased questions (MRR@10 0.878 against 0.824
# for BM25 on data/questions.jsonl), so they weigh more in the fusion (hybrid+merge MRR@10
# 0.922 -> 0.931 at RRF k=5). Fitted for RRF, kept for z-scores: 1 is best on SciFact and 2 on
# data/questions.jsonl with them, 1.5 close to both (eval/README.md, fusion).
DENSE_WEIGHT = 1.5
# How the dense and BM25 lists are fused (index.search.fusion): "zscore" (each list's scores as
# z-scores, summed with DENSE_WEIGHT against 1) or "rrf" (reciprocal ranks, RRF k). With the same
# dense weight, z-scores beat RRF k=5 on both development sets (hybrid+merge MRR@10, MiniLM, int8
# passages): data/questions.jsonl 0.954 -> 0.978, SciFact 0.689 -> 0.700 (eval/README.md).
DEFAULT_FUSION: Fusion = "zscore"
# The share of the cross-encoder in a reranked leaf's score, the rest its fused score (mix_rerank).
DEFAULT_RERANK_WEIGHT = 1.0


@dataclass(frozen=True, slots=True)
class Hit:
    node_id: str
    level: int
    score: float
    text: str
    source: str
    heading_path: tuple[str, ...]
    start: int
    end: int

    def to_dict(self) -> dict[str, object]:
        return {
            "node_id": self.node_id, "level": self.level, "score": self.score, "text": self.text,
            "source": self.source, "heading_path": list(self.heading_path),
            "start": self.start, "end": self.end,
        }


def mix_rerank(head: list[tuple[str, float]], logits: np.ndarray, weight: float,
               base: float = 0.0) -> list[tuple[str, float]]:
    """`head` (node, retrieval score, best first) reordered by `weight` * sigmoid(logit) +
    (1 - weight) * its retrieval score over the head's best; every score is then lifted to
    above `base` (the best score of the leaves below the head), so the head stays on top.
    weight 1: the cross-encoder's order alone."""
    top = max((s for _, s in head), default=0.0)
    mixed = []
    for (node, s), x in zip(head, logits, strict=True):
        retrieval = s / top if top > 0 else 0.0
        mixed.append((node, base + 1.0 + weight * float(sigmoid(x)) + (1.0 - weight) * retrieval))
    mixed.sort(key=lambda p: -p[1])
    return mixed


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


class Retriever:
    """Ranks the nodes of one snapshot for a question."""

    def __init__(self, snapshot: Snapshot, embedder: Embedder, *,
                 merge_threshold: float = DEFAULT_MERGE_THRESHOLD, rrf_k: int = RRF_K,
                 min_candidates: int = 30, dense_weight: float = DENSE_WEIGHT,
                 reranker: Reranker | None = None, rerank_depth: int = 0,
                 rerank_weight: float = DEFAULT_RERANK_WEIGHT, fusion: str = DEFAULT_FUSION) -> None:
        snapshot.check_embedder(embedder.model_name, embedder.dim)
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        self.fusion = fusion
        if not 0.0 < merge_threshold <= 1.0:
            raise ValueError(f"merge threshold must be in (0, 1], got {merge_threshold}")
        self.snapshot = snapshot
        self.embedder = embedder
        self.merge_threshold = merge_threshold
        self.rrf_k = rrf_k
        self.min_candidates = min_candidates
        if dense_weight <= 0:
            raise ValueError(f"dense weight must be positive, got {dense_weight}")
        self.dense_weight = dense_weight
        if rerank_depth < 0:
            raise ValueError(f"rerank depth must be >= 0, got {rerank_depth}")
        self.reranker = reranker
        self.rerank_depth = rerank_depth if reranker is not None else 0
        if not 0.0 <= rerank_weight <= 1.0:
            raise ValueError(f"rerank weight must be in [0, 1], got {rerank_weight}")
        self.rerank_weight = rerank_weight

    def embed_queries(self, queries: list[str]) -> np.ndarray:
        return encode_queries(self.embedder, queries)

    def rank(self, query: str, k: int = 5, mode: str = "hybrid", merge: bool = True,
             query_vector: np.ndarray | None = None) -> list[tuple[str, float]]:
        """(node id, score) best first: leaves, or merged parents when `merge`."""
        check_mode(mode)
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        n = max(k * 3, self.min_candidates, self.rerank_depth)
        tree = self.snapshot.tree
        dense: list[tuple[str, float]] = []
        lexical: list[tuple[str, float]] = []
        if mode in ("dense", "hybrid"):
            qv = self.embed_queries([query]) if query_vector is None else query_vector.reshape(1, -1)
            scores, ids = self.snapshot.vectors.search(qv, n)
            for s, vid in zip(scores[0], ids[0], strict=True):
                nid = tree.by_vector_id(int(vid)) if vid >= 0 else None
                if nid is not None:
                    dense.append((nid, float(s)))
        if mode in ("bm25", "hybrid"):
            lexical = self.snapshot.lexical.search(query, n)
        if mode == "dense":
            ranked = dense
        elif mode == "bm25":
            ranked = lexical
        elif self.fusion == "zscore":
            # BM25 lists only the leaves that hold a query word; every other leaf scores 0
            unlisted = (0.0, len(self.snapshot.lexical) - len(lexical))
            ranked = zscore([dense, lexical], weights=[self.dense_weight, 1.0], absent=[None, unlisted])
        else:
            ranked = rrf([[i for i, _ in dense], [i for i, _ in lexical]], k=self.rrf_k,
                         weights=[self.dense_weight, 1.0])
        if self.rerank_depth:
            ranked = self._rerank(query, ranked)
        if merge:
            ranked = auto_merge(ranked, tree.parent, tree.children, self.merge_threshold)
        return ranked[:k]

    def _rerank(self, query: str, ranked: list[tuple[str, float]]) -> list[tuple[str, float]]:
        """The top `rerank_depth` leaves reordered by the cross-encoder, before auto-merge (see
        `mix_rerank`); they stay above the rest."""
        assert self.reranker is not None
        head, rest = ranked[:self.rerank_depth], ranked[self.rerank_depth:]
        if not head:
            return ranked
        tree = self.snapshot.tree
        texts = [" ".join([*tree[n].heading_path[-1:], tree[n].text]) for n, _ in head]
        logits = self.reranker.score(query, texts)
        base = max((s for _, s in rest), default=0.0)
        return mix_rerank(head, logits, self.rerank_weight, base) + rest

    def search(self, query: str, k: int = 5, mode: str = "hybrid", merge: bool = True,
               query_vector: np.ndarray | None = None) -> list[Hit]:
        tree = self.snapshot.tree
        hits = []
        for nid, score in self.rank(query, k, mode, merge, query_vector):
            n = tree[nid]
            hits.append(Hit(n.id, n.level, score, n.text, n.source, n.heading_path, n.start, n.end))
        return hits
