"""Extractive answers: the sentences of the retrieved nodes that best answer the question, cited.

Sentence vectors were computed at ingestion (see `index.store.sentences`), so a
question costs one matrix product over the sentences of its top nodes. Each
sentence is scored by its cosine to the question, nudged by the rank of the
node it came from and by the question words it shares; the best one or two
form the answer. Below `threshold` the notes are taken not to cover the
question.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from index.search.retriever import Hit
from index.store.lexical import tokenize
from index.store.snapshot import Snapshot
from index.store.tree import Node, vector_id

# Calibrated on data/questions.jsonl with `notesrag eval` (the abstain threshold that maximises
# no-answer F1); see the README's quality table.
DEFAULT_THRESHOLD = 0.34
NOT_FOUND = "The notes do not cover this question."
# Sentence score = cosine + OVERLAP_WEIGHT * share of question terms it holds
#                  + RANK_WEIGHT / (1 + rank of the hit it came from); tuned on data/questions.jsonl.
OVERLAP_WEIGHT = 0.7
RANK_WEIGHT = 0.05

_MARKER = re.compile(r"\s*\[\d+\]")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*$")


@dataclass(frozen=True, slots=True)
class Citation:
    n: int
    node_id: str
    source: str
    heading_path: tuple[str, ...]
    start: int
    end: int
    quote: str
    score: float

    def to_dict(self) -> dict[str, object]:
        return {"n": self.n, "node_id": self.node_id, "source": self.source,
                "heading_path": list(self.heading_path), "start": self.start, "end": self.end,
                "quote": self.quote, "score": self.score}


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    answerable: bool
    citations: list[Citation]
    confidence: float

    @property
    def plain(self) -> str:
        """The answer without its [n] markers (what answer F1 is computed on)."""
        return _MARKER.sub("", self.text).strip()


@dataclass(frozen=True, slots=True)
class _Candidate:
    leaf: str
    row: int
    start: int
    end: int
    cosine: float
    score: float


def _candidates(question: str, qvec: np.ndarray, hits: list[Hit], snapshot: Snapshot,
                max_hits: int) -> list[_Candidate]:
    tree, store = snapshot.tree, snapshot.sentences
    q_terms = set(tokenize(question))
    seen: set[tuple[str, int, int]] = set()
    rows: list[tuple[str, int, int, int]] = []  # leaf, start, end, store row
    ranks: list[int] = []
    for rank, hit in enumerate(hits[:max_hits]):
        if hit.node_id not in tree:
            continue
        for leaf in tree.leaves_under(hit.node_id):
            lo, hi = store.rows(vector_id(leaf))
            for r in range(lo, hi):
                key = (tree[leaf].source, int(store.start[r]), int(store.end[r]))
                if key in seen:
                    continue
                seen.add(key)
                rows.append((leaf, key[1], key[2], r))
                ranks.append(rank)
    if not rows:
        return []
    idx = np.array([r[3] for r in rows])
    cos = store.vectors[idx].astype(np.float32) @ qvec.astype(np.float32).reshape(-1)
    out = []
    for (leaf, a, b, row), c, rank in zip(rows, cos, ranks, strict=True):
        node = tree[leaf]
        text = node.text[a - node.start:b - node.start]
        terms = set(tokenize(text))
        overlap = len(q_terms & terms) / len(q_terms) if q_terms else 0.0
        score = float(c) + OVERLAP_WEIGHT * overlap + RANK_WEIGHT / (1 + rank)
        out.append(_Candidate(leaf, row, a, b, float(c), score))
    out.sort(key=lambda c: -c.score)
    return out


def extract_answer(question: str, question_vector: np.ndarray, hits: list[Hit], snapshot: Snapshot, *,
                   max_sentences: int = 2, threshold: float | None = None, max_hits: int = 3) -> Answer:
    """The best sentences of `hits` for `question`, with verified citations; or a no-answer."""
    if max_sentences < 1:
        raise ValueError(f"max_sentences must be >= 1, got {max_sentences}")
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    cands = _candidates(question, question_vector, hits, snapshot, max_hits)
    confidence = cands[0].cosine if cands else 0.0
    if not cands or confidence < threshold:
        return Answer(NOT_FOUND, False, [], confidence)
    best = cands[0]
    chosen = [_complete(best, snapshot)]
    for c in cands[1:]:
        if len(chosen) >= max_sentences:
            break
        # a second sentence only when it is nearly as good and adjacent to the first
        if c.score >= best.score - 0.08 and c.leaf == best.leaf and abs(c.start - chosen[0].end) <= 3:
            chosen.append(c)
    chosen.sort(key=lambda c: (c.leaf, c.start))
    citations: list[Citation] = []
    parts: list[str] = []
    tree = snapshot.tree
    for c in chosen:
        node = tree[c.leaf]
        quote = node.text[c.start - node.start:c.end - node.start]
        if not quote or quote not in node.text:  # never cite what the node does not say
            continue
        n = len(citations) + 1
        citations.append(Citation(n, node.id, node.source, node.heading_path, c.start, c.end, quote,
                                  round(c.cosine, 4)))
        parts.append(f"{' '.join(quote.split())} [{n}]")
    if not citations:
        return Answer(NOT_FOUND, False, [], confidence)
    return Answer(" ".join(parts), True, citations, confidence)


def _complete(c: _Candidate, snapshot: Snapshot, max_items: int = 6) -> _Candidate:
    """A question in the notes is answered by what follows it; a lead-in ending in ':' by its list."""
    store, node = snapshot.sentences, snapshot.tree[c.leaf]
    text = node.text[c.start - node.start:c.end - node.start]
    _, hi = store.rows(vector_id(c.leaf))
    if text.endswith("?") and c.row + 1 < hi:
        nxt = c.row + 1
        return _Candidate(c.leaf, nxt, int(store.start[nxt]), int(store.end[nxt]), c.cosine, c.score)
    if text.endswith(":") and c.row + 1 < hi:
        last = c.row
        while last + 1 < min(hi, c.row + 1 + max_items) and _is_list_item(node, int(store.start[last + 1])):
            last += 1
        if last > c.row:
            return _Candidate(c.leaf, c.row, c.start, int(store.end[last]), c.cosine, c.score)
    return c


def _is_list_item(node: Node, start: int) -> bool:
    """Whether the sentence at `start` (a source offset) opens a bulleted or numbered line."""
    rel = start - node.start
    line_start = node.text.rfind("\n", 0, rel) + 1
    return bool(_BULLET.match(node.text[line_start:rel]))
