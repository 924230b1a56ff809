"""Continuous sync with real file changes in a temporary folder, watchfiles and the real model:
an edit and a deletion reach the snapshot, a burst of 100 new files makes at most 3 snapshots."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from index import IndexConfig, IngestReport, load_snapshot
from index.ingestion.watch import Pending, watch

WAIT_S = 10.0


async def until(check, what: str, wait_s: float = WAIT_S) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + wait_s
    while not check():
        assert time.monotonic() < deadline, f"not within {wait_s} s: {what}"
        await asyncio.sleep(0.1)


async def test_edits_deletions_and_a_burst_reach_the_snapshot(tmp_path: Path, embedder) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("# Loss\n\nHuber loss uses L2 for small errors.\n")
    (notes / "b.md").write_text("# Trees\n\nLightGBM grows trees leaf-wise.\n")
    index_dir = tmp_path / "index"
    reports: list[IngestReport] = []
    stop = asyncio.Event()
    pending = Pending()
    task = asyncio.create_task(watch([notes], index_dir, IndexConfig(), embedder, debounce_ms=500,
                                     stop_event=stop, pending=pending, on_report=reports.append))
    try:
        await until(lambda: reports, "the first ingest")
        await asyncio.sleep(0.5)  # the watcher is set up once the first run is done

        (notes / "a.md").write_text("# Loss\n\nHuber loss is quadratic near zero and linear far out.\n")
        await until(lambda: any(r.files_changed for r in reports), "the edit")
        texts = " ".join(n.text for n in load_snapshot(index_dir).tree.by_id.values())
        assert "quadratic near zero" in texts and "L2 for small errors" not in texts
        assert pending.since is None and pending.age() == 0.0

        (notes / "b.md").unlink()
        await until(lambda: any(r.files_removed for r in reports), "the deletion")
        assert str(notes / "b.md") not in load_snapshot(index_dir).manifest.files

        before = len(reports)
        for i in range(100):
            (notes / f"n{i:03}.md").write_text(f"# Note {i}\n\nFact number {i} about kernels.\n")
        # (embedding 100 notes takes a while on a shared CPU: the bound here is on snapshots, not time)
        await until(lambda: sum(r.files_new for r in reports[before:]) >= 100, "the burst of 100 files", 120)
        await asyncio.sleep(2)  # a late batch would show here
        assert len(load_snapshot(index_dir).manifest.files) == 101
        burst = [r for r in reports[before:] if r.changed]
        assert 1 <= len(burst) <= 3, [r.summary() for r in burst]
        assert sum(r.files_new for r in burst) == 100
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def test_pending_age() -> None:
    p = Pending()
    assert p.age(now=50.0) == 0.0
    p.seen(100.0)
    p.seen(103.0)  # the oldest change counts
    assert p.age(now=105.0) == 5.0


def test_watch_command(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("# Loss\n\nHuber loss uses L2 for small errors.\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "watch", str(notes), "--index-dir",
                             str(tmp_path / "index"), "--debounce-ms", "300"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, text=True)
    import threading

    watchdog = threading.Timer(120, proc.kill)  # a readline that never returns ends the test
    watchdog.start()
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("ingested 1 files (1 new"), first
        time.sleep(1)
        (notes / "b.md").write_text("# Trees\n\nLightGBM grows trees leaf-wise.\n")
        second = proc.stdout.readline()
        assert "1 new" in second and "1 unchanged" in second, second
    finally:
        watchdog.cancel()
        proc.terminate()
        proc.wait(20)
