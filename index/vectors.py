"""The FAISS index of leaf vectors, under an `IndexIDMap2` so leaves can be removed by id.

Exact inner-product search (`IndexFlatIP`) by default; HNSW once the index
holds more than `hnsw_threshold` vectors. Vectors are L2-normalised, so inner
product is cosine similarity. On a host where FAISS sees a GPU, search runs
there; what is saved is always the CPU index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import faiss
import numpy as np

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 64


class VectorIndex(Protocol):
    kind: str
    dim: int

    def __len__(self) -> int: ...
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...
    def remove(self, ids: np.ndarray) -> int: ...
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...
    def save(self, path: Path) -> None: ...


def _inner(kind: str, dim: int) -> faiss.Index:
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        idx = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        idx.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        idx.hnsw.efSearch = HNSW_EF_SEARCH
        return idx
    raise ValueError(f"index kind must be flat or hnsw, got {kind!r}")


class FaissIndex:
    """Leaf vectors by int64 id; `search` returns (scores, ids), ids -1 where fewer than k exist."""

    def __init__(self, dim: int, kind: str = "flat", hnsw_threshold: int = 100_000) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim
        self.kind = kind
        self.hnsw_threshold = hnsw_threshold
        self._index = faiss.IndexIDMap2(_inner(kind, dim))
        self._search_index: faiss.Index | None = None

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def on_gpu(self) -> bool:
        return self._search_index is not None and self._search_index is not self._index

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape (n, {self.dim}), got {vectors.shape}")
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        self._index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
        self._search_index = None

    def remove(self, ids: np.ndarray) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return 0
        if self.kind == "flat":
            n = int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))
        else:  # HNSW graphs do not support removal: rebuild from the stored vectors
            all_ids, vecs = self.export()
            keep = ~np.isin(all_ids, ids)
            n = int((~keep).sum())
            self._index = faiss.IndexIDMap2(_inner(self.kind, self.dim))
            if keep.any():
                self._index.add_with_ids(vecs[keep], all_ids[keep])
        self._search_index = None
        return n

    def export(self) -> tuple[np.ndarray, np.ndarray]:
        """All (ids, vectors), in insertion order."""
        n = len(self)
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        vecs = self._index.index.reconstruct_n(0, n) if n else np.zeros((0, self.dim), np.float32)
        return ids, vecs

    def maybe_upgrade(self) -> None:
        """Switch from exact to HNSW once the index outgrows `hnsw_threshold`."""
        if self.kind == "flat" and len(self) > self.hnsw_threshold:
            ids, vecs = self.export()
            self.kind = "hnsw"
            self._index = faiss.IndexIDMap2(_inner("hnsw", self.dim))
            self._index.add_with_ids(vecs, ids)
            self._search_index = None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if len(self) == 0 or k <= 0:
            n = len(queries)
            return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        k = min(k, len(self))
        index = self._search_index or self._prepare_search()
        scores, ids = index.search(queries, k)
        return scores, ids

    def _prepare_search(self) -> faiss.Index:
        index: faiss.Index = self._index
        if self.kind == "flat" and faiss.get_num_gpus() > 0:  # pragma: no cover - GPU hosts only
            index = faiss.index_cpu_to_all_gpus(self._index)
        self._search_index = index
        return index

    def save(self, path: Path) -> None:
        faiss.write_index(self._index, str(path))

    @classmethod
    def load(cls, path: Path, hnsw_threshold: int = 100_000) -> FaissIndex:
        raw: Any = faiss.read_index(str(path))
        if not isinstance(raw, faiss.IndexIDMap2):
            raw = faiss.downcast_index(raw)
        inner: Any = faiss.downcast_index(raw.index)
        kind = "hnsw" if isinstance(inner, faiss.IndexHNSWFlat) else "flat"
        if kind == "hnsw":
            inner.hnsw.efSearch = HNSW_EF_SEARCH
        self = cls(raw.d, kind, hnsw_threshold)
        self._index = raw
        return self
