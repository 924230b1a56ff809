"""Copies of data/notes with their own index, for tests that change the corpus or the index.

Each kind of copy (a name, and the files added to the notes) is ingested with the real model
once per session, at fixed paths, and put back there byte for byte before each test that takes
it: a snapshot names its sources by absolute path, so only a copy in the same place matches its
index. Tests in one process run one at a time, so no two tests hold a copy at once.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from pathlib import Path
from typing import Any

NOTES = Path(__file__).resolve().parent.parent / "data" / "notes"


class NotesCopies:
    def __init__(self, base: Path, embedder: Any) -> None:
        self.base, self.embedder = base, embedder

    def fresh(self, name: str, extra: dict[str, str] | None = None) -> tuple[Path, Path]:
        """(the corpus root, its index directory), as a fresh copy of data/notes (plus `extra`:
        relative path -> text) and an ingest of it would leave them. Call it where no event loop
        runs (in a thread from async code): the first call of a kind ingests with asyncio.run."""
        from index import IndexConfig, ingest_sync

        live, pristine = self.base / name, self.base / f"{name}.pristine"
        root, index_dir = live / "corpus", live / "index"
        if not pristine.exists():  # the first test of this kind: ingest, and keep the result
            shutil.rmtree(live, ignore_errors=True)
            shutil.copytree(NOTES, root)
            for rel, text in (extra or {}).items():
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_text(text, encoding="utf-8")
            ingest_sync([root], index_dir, IndexConfig(), embedder=self.embedder)
            shutil.copytree(live, pristine, symlinks=True)
            return root, index_dir
        with open(index_dir / ".lock", "a") if index_dir.is_dir() else open(os.devnull) as lock:
            # a writer the last test left running (an ingest in a thread) finishes first
            deadline = time.monotonic() + 120
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{index_dir} is still locked by a writer") from None
                    time.sleep(0.05)
            shutil.rmtree(live)
            shutil.copytree(pristine, live, symlinks=True)
        return root, index_dir
