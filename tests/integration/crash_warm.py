"""Imported by the crash tests' forkserver before it forks any child: the ingestion stack, and one
small ingest, so that what the stack imports and sets up on first use (llama-index's parser and
its tokenizer, NLTK, the stemmer) is done once. Each child then starts as a warm process would,
and the kill falls in the ingest itself."""

from __future__ import annotations

import tempfile
from pathlib import Path

import tqdm
from crash_corpus import HashEmbedder, corpus

from index import ingest_sync

tqdm.tqdm.monitor_interval = 0  # no monitor thread: the forkserver forks with one thread only

with tempfile.TemporaryDirectory() as _d:
    corpus(Path(_d) / "notes", 0, files=2, words=400)  # long enough to be split
    ingest_sync([Path(_d) / "notes"], Path(_d) / "idx", embedder=HashEmbedder())
