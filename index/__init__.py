"""notesrag's retrieval library: ingestion, the node tree, FAISS and BM25 indexes, retrieval.

Plain Python, no web or CLI framework, usable from a notebook::

    from index import ingest_sync, load_snapshot, get_embedder, Retriever
    report = ingest_sync(["data/notes"], "var/index")
    retriever = Retriever(load_snapshot("var/index"), get_embedder())
    retriever.search("What is Huber loss?", k=5)
"""

from index.config import IndexConfig
from index.ingestion.pipeline import IngestCancelled, IngestError, IngestReport, ingest, ingest_sync
from index.models.embedder import Embedder, get_embedder
from index.search.retriever import MODES, Hit, Retriever
from index.store.snapshot import (
    Snapshot,
    SnapshotError,
    SnapshotMismatchError,
    SnapshotNotFound,
    current_path,
    load_snapshot,
)
from index.store.tree import Node, NodeTree

__all__ = [
    "MODES", "Embedder", "Hit", "IndexConfig", "IngestCancelled", "IngestError", "IngestReport", "Node", "NodeTree",
    "Retriever", "Snapshot", "SnapshotError", "SnapshotMismatchError", "SnapshotNotFound",
    "current_path", "get_embedder", "ingest", "ingest_sync", "load_snapshot",
]
