"""All settings in one object, from the environment (prefix NOTESRAG_) or a .env file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from index.config import MAX_FILE_BYTES, IndexConfig


def _split(value: object) -> object:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOTESRAG_", env_file=".env", extra="ignore")

    # index
    index_dir: Path = Path("var/index")
    corpus_root: Path = Path("data/notes")
    model: str | None = None  # None: the packaged all-MiniLM-L6-v2
    device: str = "auto"
    chunk_sizes: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [2048, 512, 128])
    chunk_overlap: int = 20
    hnsw_threshold: int = 100_000
    max_file_bytes: int = MAX_FILE_BYTES
    merge_threshold: float = Field(0.5, gt=0, le=1)

    # serving
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)

    _split_lists = field_validator("chunk_sizes", mode="before")(_split)

    def index_config(self, chunk_sizes: str | None = None) -> IndexConfig:
        sizes = [int(s) for s in chunk_sizes.split(",")] if chunk_sizes else self.chunk_sizes
        return IndexConfig(
            chunk_sizes=tuple(sizes), chunk_overlap=self.chunk_overlap, model=self.model,
            device=self.device, hnsw_threshold=self.hnsw_threshold, max_file_bytes=self.max_file_bytes,
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
