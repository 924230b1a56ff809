"""What the crash tests ingest and embed with: versions of a synthetic corpus, and a stand-in
embedder (bag of hashed words, 64 dimensions) for their child processes.

Deterministic and fast, so a SIGKILL falls in the pipeline's own work rather than in a model."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

WORDS = ("gradient", "loss", "tree", "attention", "kernel", "batch", "norm", "vector", "index")


def corpus(root: Path, version: int, files: int, words: int) -> None:
    """Write version `version` of the corpus: `files` notes of `words` words each."""
    root.mkdir(exist_ok=True)
    for i in range(files):
        body = " ".join(f"{WORDS[(i + j + version) % len(WORDS)]}{j % 7}" for j in range(words))
        (root / f"n{i}.md").write_text(f"# Note {i} v{version}\n\n{body}.\n")


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


def ingest_child(root: str, idx: str, rebuild: bool) -> None:
    """What a crash test's child process runs: `ingest_sync` with the hashing embedder, its
    output thrown away (the kills interrupt it anywhere)."""
    import os

    from index import ingest_sync

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    ingest_sync([root], idx, embedder=HashEmbedder(), rebuild=rebuild)
