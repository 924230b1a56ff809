"""The one module that names the vector backends: FAISS (the default) or Milvus.

The snapshot code (`index.store.snapshot`) knows vector stores only through the `VectorIndex`
protocol and the three functions here that load, save and prune them, so it never imports a
backend itself. Loading follows the snapshot's manifest, whatever is
configured; an ingest then carries the old snapshot's index on when the configured backend
and target are the same, and otherwise copies its vectors into the configured one, so
switching backends embeds nothing again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from index.config import IndexConfig
from index.store.errors import SnapshotError
from index.store.tree import NodeTree
from index.store.vectors import FaissIndex, VectorIndex

FAISS_FILE = "vectors.faiss"

if TYPE_CHECKING:
    from index.store.snapshot import Snapshot


def open_vectors(config: IndexConfig, dim: int, index_dir: Path, tree: NodeTree,
                 old: Snapshot | None = None) -> VectorIndex:
    """The index an ingest of `index_dir` adds to; `tree` is the tree it builds, `old` the snapshot
    it starts from (None: a fresh build)."""
    prev = old.vectors if old is not None else None
    if config.vector_backend == "faiss":
        if prev is not None and prev.backend == "faiss":
            return prev
        index = FaissIndex(dim, "flat", config.hnsw_threshold)
        if prev is not None:  # from Milvus: its vectors, no embedding
            ids, vectors = prev.export()
            if len(ids):
                index.add(ids, vectors)
        return index

    from index.store.milvus import MilvusIndex, copy_into

    if isinstance(prev, MilvusIndex) and prev.serves(config, index_dir):
        prev.journal_into(index_dir)
        prev.bind(tree)
        return prev
    milvus = MilvusIndex.create(config, dim, index_dir,
                                prefix=prev.prefix if isinstance(prev, MilvusIndex) else None)
    if old is not None and prev is not None:  # from FAISS or another Milvus target: its vectors
        milvus.bind(old.tree)
        ids, vectors = prev.export()
        copy_into(milvus, ids, vectors)
    milvus.bind(tree)
    return milvus


def load_vectors(snapshot_dir: Path, backend: str, vector_store: Mapping[str, str], dim: int,
                 config: IndexConfig | None = None) -> VectorIndex:
    """The vector index of the snapshot in `snapshot_dir`, as its manifest records it."""
    if backend == "faiss":
        return FaissIndex.load(snapshot_dir / FAISS_FILE)
    if backend == "milvus":
        from index.store.milvus import MilvusIndex

        return MilvusIndex.load(snapshot_dir, dict(vector_store), dim, config)
    raise SnapshotError(f"snapshot {snapshot_dir} keeps its vectors in {backend!r}, "
                        "which this build does not know (faiss or milvus)")


def save_vectors(vectors: VectorIndex, snapshot_dir: Path) -> dict[str, str]:
    """Write what a snapshot needs of `vectors` into `snapshot_dir`; the manifest's `vector_store`."""
    if vectors.backend == "faiss":
        vectors.save(snapshot_dir / FAISS_FILE)
        return {}
    from index.store.milvus import IDS_FILE, MilvusIndex

    assert isinstance(vectors, MilvusIndex)
    vectors.save(snapshot_dir / IDS_FILE)
    return vectors.describe()


def prune_after_switch(index_dir: Path, vectors: VectorIndex, prune: Callable[..., None]) -> None:
    """After CURRENT switched: `prune` old snapshots, and for Milvus release the rows that no kept
    snapshot knows any more (they leave the shared collection only now)."""
    if vectors.backend == "faiss":
        prune(index_dir)
        return
    from index.store.milvus import MilvusIndex, prune_and_release

    assert isinstance(vectors, MilvusIndex)
    prune_and_release(index_dir, vectors, prune)
