"""NOTESRAG_WATCH=true: the server watches its corpus root and serves each change within seconds.

Each debounced batch of changes runs the incremental pipeline (index.ingestion.watch) with the
server's own embedder, then the engine swaps to the new snapshot; the gauge
`notesrag_unserved_change_age_seconds` reads the age of the oldest change seen and not yet served.
"""

from __future__ import annotations

import asyncio
import contextlib

from index import IngestReport
from index.ingestion.watch import Pending, watch
from service import logs
from service.engine import QAEngine
from service.metrics import Metrics
from service.settings import Settings


class CorpusWatcher:
    def __init__(self, engine: QAEngine, settings: Settings, metrics: Metrics) -> None:
        self.engine, self.settings = engine, settings
        self.pending = Pending()
        metrics.unserved_change_age.set_function(self.pending.age)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="notesrag-watch")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 10)
            except (TimeoutError, asyncio.CancelledError):  # an ingest still running: its snapshot is atomic
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task

    async def _run(self) -> None:
        while self.engine.embedder is None:  # the model loads in the background
            if self._stop.is_set():
                return
            await asyncio.sleep(0.2)
        s = self.settings
        logs.event("watch_started", root=str(s.corpus_root), debounce_ms=s.watch_debounce_ms)
        try:
            await watch([s.corpus_root], s.index_dir, s.index_config(), self.engine.embedder,
                        debounce_ms=s.watch_debounce_ms, stop_event=self._stop, pending=self.pending,
                        on_report=self._served)
        except Exception as e:  # a missing root, a watcher error: the server goes on without sync
            logs.event("watch_failed", 40, error=f"{type(e).__name__}: {e}")

    async def _served(self, report: IngestReport) -> None:
        if report.changed:
            await self.engine.reload()
        logs.event("watch_ingested", summary=report.summary())
