"""Settings of the index: plain data, so the library needs no settings framework."""

from __future__ import annotations

from dataclasses import dataclass

from index.chunking import DEFAULT_CHUNK_SIZES, check_chunk_sizes

MAX_FILE_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class IndexConfig:
    chunk_sizes: tuple[int, ...] = DEFAULT_CHUNK_SIZES
    chunk_overlap: int = 20
    model: str | None = None  # None: the packaged all-MiniLM-L6-v2
    device: str = "auto"
    batch_size: int | None = None  # None: sized for the device
    hnsw_threshold: int = 100_000
    max_file_bytes: int = MAX_FILE_BYTES
    queue_size: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunk_sizes", check_chunk_sizes(self.chunk_sizes))
        if self.max_file_bytes <= 0:
            raise ValueError(f"max_file_bytes must be positive, got {self.max_file_bytes}")
        if self.batch_size is not None and self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.hnsw_threshold <= 0:
            raise ValueError(f"hnsw_threshold must be positive, got {self.hnsw_threshold}")
