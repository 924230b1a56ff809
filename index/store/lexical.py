"""BM25 over the leaves, with `bm25s`; tokens are lower-cased, stop words dropped, stemmed."""

from __future__ import annotations

import json
import logging
import re
from functools import lru_cache
from pathlib import Path

import bm25s

logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on import
_WORD = re.compile(r"[^\W\d_]+|\d+", re.UNICODE)  # "ResNet50" and "ResNet-50" both give resnet, 50


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def tokenize(text: str) -> list[str]:
    stop = _stopwords()
    words = [w for w in _WORD.findall(text.lower()) if w not in stop]
    return list(_stemmer().stemWords(words))


class BM25Index:
    """BM25 scores for leaves, addressed by node id."""

    def __init__(self, node_ids: list[str], texts: list[str]) -> None:
        if len(node_ids) != len(texts):
            raise ValueError(f"{len(node_ids)} ids for {len(texts)} texts")
        self.node_ids = list(node_ids)
        self._bm25 = bm25s.BM25()
        if self.node_ids:
            self._bm25.index([tokenize(t) for t in texts], show_progress=False)

    def __len__(self) -> int:
        return len(self.node_ids)

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """Top `k` (node id, score) with a positive score, best first."""
        if not self.node_ids or k <= 0:
            return []
        vocab = self._bm25.vocab_dict
        tokens = [t for t in tokenize(query) if t in vocab]
        if not tokens:
            return []
        # n_threads=0: bm25s scores in this thread; any other value starts a ThreadPoolExecutor for
        # each call, even for 1 (one question: 0.64 -> 0.14 ms median on data/notes' index here)
        docs, scores = self._bm25.retrieve([tokens], k=min(k, len(self.node_ids)), show_progress=False,
                                           n_threads=0)
        return [(self.node_ids[int(d)], float(s)) for d, s in zip(docs[0], scores[0], strict=True)
                if s > 0]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "node_ids.json").write_text(json.dumps(self.node_ids))
        if self.node_ids:
            self._bm25.save(str(directory), show_progress=False)

    @classmethod
    def load(cls, directory: Path) -> BM25Index:
        self = cls.__new__(cls)
        self.node_ids = json.loads((directory / "node_ids.json").read_text())
        self._bm25 = (bm25s.BM25.load(str(directory), show_progress=False) if self.node_ids
                      else bm25s.BM25())
        return self


