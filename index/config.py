"""Settings of the index: plain data, so the library needs no settings framework."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

MAX_FILE_BYTES = 20 * 1024 * 1024
VECTOR_BACKENDS = ("faiss", "milvus")
# how texts are embedded, see index.models.embedder
EMBED_BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
MILVUS_INDEX_TYPES = ("FLAT", "HNSW")
# Milvus names: a letter or underscore, then letters, digits and underscores. A generation
# suffix (`_g` and 8 hex digits, index.store.milvus) is appended, so the name stays under 245.
_MILVUS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")

DEFAULT_CHUNK_SIZES = (2048, 512, 128)


def check_chunk_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(int(s) for s in sizes)
    if not sizes:
        raise ValueError("chunk sizes must not be empty")
    if any(s < 16 for s in sizes):
        raise ValueError(f"chunk sizes must be at least 16 tokens, got {list(sizes)}")
    if any(a <= b for a, b in itertools.pairwise(sizes)):
        raise ValueError(f"chunk sizes must be strictly decreasing, got {list(sizes)}")
    return sizes


@dataclass(frozen=True)
class IndexConfig:
    chunk_sizes: tuple[int, ...] = DEFAULT_CHUNK_SIZES
    chunk_overlap: int = 20
    model: str | None = None  # None: the packaged all-MiniLM-L6-v2
    device: str = "auto"
    # How passages are embedded (index.models.embedder.BACKEND_CHOICES): "auto" is int8 ONNX on a
    # CPU host (each text alone, no torch) and torch on a GPU; "torch" gives fp32 passage vectors.
    embed_backend: str = "auto"
    batch_size: int | None = None  # None: sized for the device
    hnsw_threshold: int = 100_000
    max_file_bytes: int = MAX_FILE_BYTES
    queue_size: int = 8
    # How sentences get their vectors (extractive answers score them): "pooled" from their
    # leaf's token vectors in the leaf's one pass, or "separate", a pass of their own. Pooled
    # by default: about half the encoder work at ingestion, and on data/questions.jsonl
    # answer_accuracy 0.917 / F1 0.403 against 0.911 / 0.400 separate (eval/README.md).
    sentence_vectors: str = "pooled"
    # Where leaf vectors live: "faiss" (a file in each snapshot, the default) or "milvus"
    # (index.store.milvus). milvus_uri None: Milvus Lite in <index_dir>/milvus.db; else a server URL
    # or another Lite file. The token never reaches a snapshot, a log or a repr.
    vector_backend: str = "faiss"
    milvus_uri: str | None = field(default=None, repr=False)  # may hold user:password@
    milvus_token: str | None = field(default=None, repr=False)
    milvus_collection: str | None = None  # None: derived from the index directory
    milvus_index_type: str = "FLAT"  # exact, as FAISS's flat index; "HNSW" for large collections

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunk_sizes", check_chunk_sizes(self.chunk_sizes))
        if self.milvus_uri is not None and not self.milvus_uri.strip():
            object.__setattr__(self, "milvus_uri", None)  # an empty variable: not set
        if self.max_file_bytes <= 0:
            raise ValueError(f"max_file_bytes must be positive, got {self.max_file_bytes}")
        if self.batch_size is not None and self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.hnsw_threshold <= 0:
            raise ValueError(f"hnsw_threshold must be positive, got {self.hnsw_threshold}")
        if self.embed_backend not in EMBED_BACKENDS:
            raise ValueError(f"embed backend must be one of {', '.join(EMBED_BACKENDS)}, got {self.embed_backend!r}")
        if self.sentence_vectors not in ("pooled", "separate"):
            raise ValueError(f"sentence vectors must be pooled or separate, got {self.sentence_vectors!r}")
        if self.vector_backend not in VECTOR_BACKENDS:
            raise ValueError(f"vector backend must be one of {', '.join(VECTOR_BACKENDS)}, "
                             f"got {self.vector_backend!r}")
        if self.milvus_index_type not in MILVUS_INDEX_TYPES:
            raise ValueError(f"milvus index type must be one of {', '.join(MILVUS_INDEX_TYPES)}, "
                             f"got {self.milvus_index_type!r}")
        if self.milvus_collection is not None and not _MILVUS_NAME.fullmatch(self.milvus_collection):
            raise ValueError("milvus collection name must start with a letter or underscore and hold "
                             f"only letters, digits and underscores (at most 200), got {self.milvus_collection!r}")
        if self.milvus_uri is not None and not (
                "://" in self.milvus_uri or self.milvus_uri.strip().endswith(".db")):
            # (the value is not repeated: it may hold a password)
            raise ValueError("milvus_uri must be a server URL such as http://milvus:19530 or a Milvus "
                             "Lite file ending in .db")
