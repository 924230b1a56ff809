"""The vector index an ingestion writes into: FAISS (the default) or Milvus, per `IndexConfig`.

Loading follows the snapshot's manifest (`index.snapshot.load_vectors`), whatever is
configured; an ingest then carries the old snapshot's index on when the configured backend
and target are the same, and otherwise copies its vectors into the configured one, so
switching backends embeds nothing again.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from index.config import IndexConfig
from index.tree import NodeTree
from index.vectors import FaissIndex, VectorIndex

if TYPE_CHECKING:
    from index.snapshot import Snapshot


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

    from index.milvus import MilvusIndex, copy_into

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
