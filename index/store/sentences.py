"""Sentences of the leaves, with their vectors, computed once at ingestion for extractive answers."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np

# A sentence ends at a line break (unless the next line carries on in lower case), or at
# . ! ? followed by white space and a capital (not inside "e.g. x").
_BREAK = re.compile(r"\n+(?![a-z])|(?<=[.!?])[\"”’)]?\s+(?=[\"“(\[]?[A-Z0-9])")
_LEAD = re.compile(r"^[\s\-*•>#]+")
_ABBREV = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "Fig.", "approx.")


def split_sentences(text: str, min_chars: int = 3) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text`, list bullets and outer white space left out."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _BREAK.finditer(text):
        if m.group(0)[0] != "\n" and text[:m.start()].endswith(_ABBREV):
            continue
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    out: list[tuple[int, int]] = []
    for a, b in spans:
        seg = text[a:b]
        lead = _LEAD.match(seg)
        a2 = a + (lead.end() if lead else 0)
        b2 = a + len(seg.rstrip())
        if b2 - a2 >= min_chars and any(ch.isalnum() for ch in text[a2:b2]):
            out.append((a2, b2))
    return out


class SentenceStore:
    """Rows of (leaf vector id, start, end, vector); spans are offsets in the source file."""

    def __init__(self, leaf: np.ndarray, start: np.ndarray, end: np.ndarray, vectors: np.ndarray) -> None:
        self.leaf = np.asarray(leaf, dtype=np.int64)
        self.start = np.asarray(start, dtype=np.int64)
        self.end = np.asarray(end, dtype=np.int64)
        self.vectors = np.asarray(vectors, dtype=np.float16)
        self._rows: dict[int, tuple[int, int]] | None = None

    @classmethod
    def empty(cls, dim: int) -> SentenceStore:
        z = np.zeros(0, np.int64)
        return cls(z, z, z, np.zeros((0, dim), np.float16))

    def __len__(self) -> int:
        return len(self.leaf)

    def rows(self, leaf_vid: int) -> tuple[int, int]:
        """[lo, hi) rows of one leaf (rows of a leaf are contiguous)."""
        if self._rows is None:
            rows: dict[int, tuple[int, int]] = {}
            if len(self.leaf):
                change = np.flatnonzero(np.diff(self.leaf)) + 1
                bounds = np.concatenate([[0], change, [len(self.leaf)]])
                for lo, hi in itertools.pairwise(bounds):
                    rows[int(self.leaf[lo])] = (int(lo), int(hi))
            self._rows = rows
        return self._rows.get(leaf_vid, (0, 0))

    def keep(self, leaf_vids: np.ndarray) -> SentenceStore:
        mask = np.isin(self.leaf, leaf_vids)
        return SentenceStore(self.leaf[mask], self.start[mask], self.end[mask], self.vectors[mask])

    @staticmethod
    def concat(parts: list[SentenceStore], dim: int) -> SentenceStore:
        parts = [p for p in parts if len(p)]
        if not parts:
            return SentenceStore.empty(dim)
        return SentenceStore(*(np.concatenate([getattr(p, f) for p in parts])
                               for f in ("leaf", "start", "end", "vectors")))

    def save(self, path: Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, leaf=self.leaf, start=self.start, end=self.end, vectors=self.vectors)

    @classmethod
    def load(cls, path: Path) -> SentenceStore:
        with np.load(path) as z:
            return cls(z["leaf"], z["start"], z["end"], z["vectors"])
