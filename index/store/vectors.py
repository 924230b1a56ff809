"""The FAISS index of leaf vectors, under an `IndexIDMap2` so leaves can be removed by id.

Exact inner-product search (`IndexFlatIP`) by default; HNSW once the index
holds more than `hnsw_threshold` vectors. Vectors are L2-normalised, so inner
product is cosine similarity. On a host where FAISS sees a GPU, search runs
there; what is saved is always the CPU index.

An HNSW graph cannot drop a node. A removed vector stays in the graph as a
waypoint, hidden from results by an id filter (saved beside the index as
`<name>.removed.npy`), until removed vectors pass `HNSW_REBUILD_FRACTION` of
the graph and it is rebuilt: re-ingesting a changed file costs what changed,
not a rebuild of the whole graph (3-8 minutes at 1M vectors on 2 shared cores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import faiss
import numpy as np

from index.models.threads import one_thread

_faiss: Any = faiss  # for names missing from faiss's type stubs

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
# bench/faiss_scale.py, 1M clustered 384-d vectors, one thread: efSearch 64 gave recall@10
# 0.940, 128 gave 0.955, 256 gives 0.967 at 0.47 ms a query (p50; exact search: 107 ms).
# The retriever asks for 30 candidates, and efSearch must stay well above that.
HNSW_EF_SEARCH = 256
# Past this share of removed (hidden) vectors an HNSW graph is rebuilt without them.
HNSW_REBUILD_FRACTION = 0.2
# Up to this many queries at once, FAISS searches on one OpenMP thread. Exact search of one
# query over 20k vectors took p50 20 ms on FAISS's default two threads on 2 shared cores
# (threads waiting for each other at every barrier), 1.0 ms on one.
FEW_QUERIES = 16


class VectorIndex(Protocol):
    """Leaf vectors by int64 id: `FaissIndex` here, `index.store.milvus.MilvusIndex` on Milvus."""

    backend: str  # what a snapshot's manifest records: "faiss" or "milvus"
    dim: int

    @property
    def kind(self) -> str: ...
    @property
    def search_device(self) -> str: ...
    def __len__(self) -> int: ...
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...
    def remove(self, ids: np.ndarray) -> int: ...
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...
    def export(self) -> tuple[np.ndarray, np.ndarray]: ...
    def maybe_upgrade(self) -> None: ...
    def save(self, path: Path) -> None: ...


def checked_rows(ids: np.ndarray, vectors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(int64 ids, float32 vectors), contiguous; ValueError unless there is one id per `dim`-vector."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"vectors must have shape (n, {dim}), got {vectors.shape}")
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
    return np.ascontiguousarray(ids, dtype=np.int64), vectors


def _inner(kind: str, dim: int, m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION,
           ef_search: int = HNSW_EF_SEARCH) -> faiss.Index:
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        idx = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        idx.hnsw.efConstruction = ef_construction
        idx.hnsw.efSearch = ef_search
        return idx
    raise ValueError(f"index kind must be flat or hnsw, got {kind!r}")


class FaissIndex:
    """Leaf vectors by int64 id; `search` returns (scores, ids), ids -1 where fewer than k exist."""

    backend = "faiss"

    def __init__(self, dim: int, kind: str = "flat", hnsw_threshold: int = 100_000, *,
                 hnsw_m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION,
                 ef_search: int = HNSW_EF_SEARCH) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        for name, value in (("hnsw_m", hnsw_m), ("ef_construction", ef_construction),
                            ("ef_search", ef_search)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.dim = dim
        self.kind = kind
        self.hnsw_threshold = hnsw_threshold
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self._ef_search = ef_search
        self._index = faiss.IndexIDMap2(self._new_inner(kind))
        self._search_index: faiss.Index | None = None
        self._removed = np.zeros(0, np.int64)  # HNSW only: ids hidden from search, sorted
        self._filter: Any = None  # search parameters hiding them, built on first use

    def _new_inner(self, kind: str) -> faiss.Index:
        return _inner(kind, self.dim, self.hnsw_m, self.ef_construction, self._ef_search)

    @property
    def ef_search(self) -> int:
        """HNSW's search breadth (candidates kept); more is slower and closer to exact."""
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        if value <= 0:
            raise ValueError(f"ef_search must be positive, got {value}")
        self._ef_search = value
        self._filter = None
        if self.kind == "hnsw":
            inner: Any = faiss.downcast_index(self._index.index)
            inner.hnsw.efSearch = value

    def __len__(self) -> int:
        return int(self._index.ntotal) - len(self._removed)

    @property
    def on_gpu(self) -> bool:
        return self._search_index is not None and self._search_index is not self._index

    @property
    def search_device(self) -> str:
        """Where `search` runs: "gpu" for an exact index on a host where FAISS sees a GPU, else "cpu".

        Known before the first search (which is when the index is moved), so readiness can say it.
        """
        if self.on_gpu or (self.kind == "flat" and faiss.get_num_gpus() > 0):
            return "gpu"
        return "cpu"

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = checked_rows(ids, vectors, self.dim)
        if len(self._removed) and np.isin(ids, self._removed).any():
            self._compact()  # an id coming back: its hidden old vector must go for good first
        self._index.add_with_ids(vectors, ids)
        self._search_index = None

    def remove(self, ids: np.ndarray) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return 0
        if self.kind == "flat":
            n = int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))
        else:  # HNSW graphs do not support removal: hide the ids, rebuild when too many are hidden
            hit = self._stored(np.unique(ids))
            hit = hit[~np.isin(hit, self._removed)]
            n = len(hit)
            if n:
                self._removed = np.union1d(self._removed, hit)
                self._filter = None
                if len(self._removed) > HNSW_REBUILD_FRACTION * self._index.ntotal:
                    self._compact()
        self._search_index = None
        return n

    def _stored_ids(self) -> np.ndarray:
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def _stored(self, ids: np.ndarray) -> np.ndarray:
        """The ids among `ids` that the index stores (hidden or not)."""
        if len(ids) > 10_000:
            return ids[np.isin(ids, self._stored_ids())]
        # A few ids (one changed file's leaves): the id map's own hash look-up, not a sort of
        # every stored id (0.85 s at 1M).
        found = []
        for i in ids.tolist():
            try:
                self._index.reconstruct(i)
            except RuntimeError:
                continue
            found.append(i)
        return np.array(found, np.int64)

    def _compact(self) -> None:
        """Rebuild the graph without its hidden vectors."""
        ids, vecs = self.export()
        self._index = faiss.IndexIDMap2(self._new_inner(self.kind))
        self._removed = np.zeros(0, np.int64)
        self._filter = None
        if len(ids):
            self._index.add_with_ids(vecs, ids)
        self._search_index = None

    def export(self) -> tuple[np.ndarray, np.ndarray]:
        """All (ids, vectors), in insertion order, removed ones left out."""
        n = int(self._index.ntotal)
        ids = self._stored_ids()
        vecs = self._index.index.reconstruct_n(0, n) if n else np.zeros((0, self.dim), np.float32)
        if len(self._removed):
            keep = ~np.isin(ids, self._removed)
            ids, vecs = ids[keep], vecs[keep]
        return ids, vecs

    def maybe_upgrade(self) -> None:
        """Switch from exact to HNSW once the index outgrows `hnsw_threshold`."""
        if self.kind == "flat" and len(self) > self.hnsw_threshold:
            ids, vecs = self.export()
            self.kind = "hnsw"
            self._index = faiss.IndexIDMap2(self._new_inner("hnsw"))
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
        # (the OpenMP setting belongs to the calling thread)
        with one_thread(faiss.omp_get_max_threads, faiss.omp_set_num_threads, len(queries) <= FEW_QUERIES):
            if len(self._removed):
                scores, ids = index.search(queries, k, params=self._hiding_removed())
            else:
                scores, ids = index.search(queries, k)
        return scores, ids

    def _hiding_removed(self) -> Any:
        if self._filter is None:
            params = _faiss.SearchParametersHNSW()
            params.efSearch = self._ef_search  # parameters replace the index's own efSearch
            batch = faiss.IDSelectorBatch(self._removed)
            params.sel = faiss.IDSelectorNot(batch)
            # IndexIDMap2 translates the selector to stored ids; the objects must stay alive
            self._filter = (params, batch, params.sel)
        return self._filter[0]

    def _prepare_search(self) -> faiss.Index:
        index: faiss.Index = self._index
        if self.kind == "flat" and faiss.get_num_gpus() > 0:  # pragma: no cover - GPU hosts only
            index = faiss.index_cpu_to_all_gpus(self._index)
        self._search_index = index
        return index

    def save(self, path: Path) -> None:
        faiss.write_index(self._index, str(path))
        removed = _removed_path(Path(path))
        if len(self._removed):
            with open(removed, "wb") as f:
                np.save(f, self._removed)
        else:
            removed.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path, hnsw_threshold: int = 100_000) -> FaissIndex:
        raw: Any = faiss.read_index(str(path))
        if not isinstance(raw, faiss.IndexIDMap2):
            raw = faiss.downcast_index(raw)
        inner: Any = faiss.downcast_index(raw.index)
        kind = "hnsw" if isinstance(inner, faiss.IndexHNSWFlat) else "flat"
        self = cls(raw.d, kind, hnsw_threshold)
        if kind == "hnsw":
            # The graph keeps the M it was built with; search breadth follows this build's default.
            self.hnsw_m = int(inner.hnsw.nb_neighbors(1))
            inner.hnsw.efSearch = self._ef_search
            removed = _removed_path(Path(path))
            if removed.exists():
                self._removed = np.load(removed).astype(np.int64)
        self._index = raw
        return self


def _removed_path(path: Path) -> Path:
    return path.with_name(path.name + ".removed.npy")
