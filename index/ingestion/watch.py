"""Continuous sync: watch folders with watchfiles and re-ingest when their notes change.

A burst of changes (an editor's save, a `git pull`, a hundred files copied at once) is
grouped by watchfiles' debounce into one batch, and one batch makes one run of the ordinary
incremental pipeline, so one snapshot: unchanged files embed nothing, changed ones are
re-embedded, deleted or renamed-away ones leave every index, and the snapshot is written
the crash-safe way. Changes that arrive while a run is going are taken by the next run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from index.config import IndexConfig
from index.ingestion.documents import SUFFIXES
from index.ingestion.pipeline import IngestError, IngestReport, checked_roots, ingest
from index.models.embedder import Embedder
from index.store.snapshot import SnapshotError

log = logging.getLogger("notesrag.watch")

DEBOUNCE_MS = 1000


class Pending:
    """When the oldest change not yet in a written snapshot was seen (None: nothing pending)."""

    def __init__(self) -> None:
        self.since: float | None = None

    def seen(self, at: float) -> None:
        if self.since is None:
            self.since = at

    def age(self, now: float | None = None) -> float:
        return 0.0 if self.since is None else max(0.0, (now or time.time()) - self.since)


def note_filter(index_dir: Path) -> Callable[[object, str], bool]:
    """Changes worth a run: files of a supported kind, not hidden, not in the index directory."""
    index_dir = index_dir.resolve()

    def keep(_change: object, path: str) -> bool:
        p = Path(path)
        if index_dir == p or index_dir in p.parents:
            return False
        if any(part.startswith(".") for part in p.parts[1:]):
            return False
        # a deleted or renamed folder arrives as its own path, without a suffix
        return p.suffix.lower() in SUFFIXES or not p.suffix

    return keep


async def watch(paths: Sequence[str | Path], index_dir: str | Path, config: IndexConfig, embedder: Embedder, *,
                debounce_ms: int = DEBOUNCE_MS, stop_event: asyncio.Event | None = None,
                pending: Pending | None = None, initial: bool = True,
                on_report: Callable[[IngestReport], Awaitable[None] | None] | None = None) -> None:
    """Ingest `paths` (unless not `initial`), then once per batch of changes until `stop_event`.

    A run that fails (a snapshot it cannot write, no ingestible files left) is logged and the
    watch goes on; `pending.since` stays set until a run succeeds.
    """
    import watchfiles

    roots = checked_roots(paths)
    index_dir = Path(index_dir)
    pending = pending or Pending()

    async def run() -> None:
        started = time.time()
        try:
            report = await ingest(roots, index_dir, config, embedder=embedder)
        except (IngestError, SnapshotError, OSError, ValueError) as e:
            log.warning("watch: ingest failed: %s", e)
            return
        if on_report is not None:
            result = on_report(report)
            if result is not None:
                await result
        # changes seen after this run started are in the next batch
        if pending.since is not None and pending.since <= started:
            pending.since = None

    if initial:
        await run()
    async for changes in watchfiles.awatch(*roots, watch_filter=note_filter(index_dir), debounce=debounce_ms,
                                           stop_event=stop_event):
        pending.seen(time.time())  # when the batch was noticed: at most the debounce after the change
        log.info("watch: %d changes", len(changes))
        await run()
