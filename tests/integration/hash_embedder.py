"""A stand-in embedder for the crash tests' child processes: bag of hashed words, 64 dimensions.

Deterministic and fast, so a SIGKILL falls in the pipeline's own work rather than in a model."""

from __future__ import annotations

import hashlib

import numpy as np


class HashEmbedder:
    model_name, dim, device = "hash-test", 64, "cpu"

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        out = np.zeros((len(texts), 64), np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % 64] += 1.0
            out[i, 0] += 1e-3
        vecs: np.ndarray = out / np.linalg.norm(out, axis=1, keepdims=True)
        return vecs
