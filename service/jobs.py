"""Ingest jobs started over HTTP: checked paths, one job at a time, live progress."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from index import IngestError, IngestReport, SnapshotError, ingest
from index.config import IndexConfig
from index.documents import discover
from service import logs
from service.engine import QAEngine
from service.errors import ApiError
from service.metrics import Metrics

Status = Literal["queued", "running", "succeeded", "failed"]
KEEP_JOBS = 100


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_ingest_paths(root: Path, raw_paths: list[str]) -> list[Path]:
    """The resolved paths to ingest; ApiError 403 for anything that leads outside `root`.

    Symlinks are followed before the check, including those found inside a folder,
    since ingestion follows them too. A missing path inside the root is a 404; a
    missing path outside it is a 403, so nothing is learnt about what exists there.
    """
    try:
        root = root.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise ApiError(503, "corpus_root_missing", "the configured corpus root does not exist") from None
    out: list[Path] = []
    for raw in raw_paths or ["."]:
        if "\x00" in raw:
            raise ApiError(422, "invalid_path", "paths must not contain NUL characters")
        given = Path(raw)
        candidate = given if given.is_absolute() else root / given
        try:
            resolved = candidate.resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError):
            if not _inside(Path(*_normalise(candidate)), root):
                raise ApiError(403, "path_outside_root", f"{raw!r} is outside the corpus root") from None
            raise ApiError(404, "path_not_found", f"no such file or folder in the corpus root: {raw!r}") from None
        except (RuntimeError, OSError):  # a symlink loop, a name too long
            raise ApiError(403, "path_outside_root", f"{raw!r} cannot be resolved inside the corpus root") from None
        if not _inside(resolved, root):
            raise ApiError(403, "path_outside_root", f"{raw!r} resolves outside the corpus root")
        if resolved.is_dir():
            for f in discover([candidate]):
                try:
                    target = f.resolve(strict=True)
                except (OSError, RuntimeError):
                    continue  # ingestion skips it and reports why
                if not _inside(target, root):
                    shown = f.relative_to(candidate) if f.is_relative_to(candidate) else f.name
                    raise ApiError(403, "path_outside_root",
                                   f"{raw!r} holds {str(shown)!r}, a link that resolves outside the corpus root")
        out.append(resolved)
    return out


def _normalise(p: Path) -> list[str]:
    """`p` with `.` and `..` folded lexically (the path does not exist, so it cannot be resolved)."""
    parts: list[str] = []
    for part in p.parts:
        if part == "..":
            if len(parts) > 1:
                parts.pop()
        elif part != ".":
            parts.append(part)
    return parts


@dataclass
class Job:
    id: str
    paths: list[Path]
    rebuild: bool
    strict: bool
    status: Status = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    report: IngestReport | None = None
    error: str | None = None

    def as_dict(self, root: Path | None = None) -> dict[str, Any]:
        report = self.report
        progress: dict[str, Any] = {}
        if report is not None:
            progress = {k: v for k, v in report.as_dict().items() if k != "skipped"}
        return {
            "id": self.id, "status": self.status, "paths": [_show(p, root) for p in self.paths],
            "rebuild": self.rebuild, "created_at": self.created_at, "started_at": self.started_at,
            "finished_at": self.finished_at, "progress": progress,
            "errors": dict(report.skipped) if report else {}, "error": self.error,
            "snapshot": report.snapshot if report and self.status == "succeeded" else None,
        }


def _show(p: Path, root: Path | None) -> str:
    if root is not None:
        with contextlib.suppress(ValueError, OSError):
            return str(p.relative_to(root.resolve())) or "."
    return str(p)


class IngestJobs:
    """Runs ingest jobs one after the other in the app's event loop (work happens in threads)."""

    def __init__(self, engine: QAEngine, index_dir: Path, config: IndexConfig, metrics: Metrics) -> None:
        self.engine = engine
        self.index_dir = index_dir
        self.config = config
        self.metrics = metrics
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="notesrag-ingest-jobs")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    def submit(self, paths: list[Path], rebuild: bool = False, strict: bool = False) -> Job:
        job = Job(secrets.token_hex(8), paths, rebuild, strict)
        self.jobs[job.id] = job
        while len(self.jobs) > KEEP_JOBS:
            oldest = next(iter(self.jobs.values()))
            if oldest.status in ("queued", "running"):
                break
            self.jobs.popitem(last=False)
        self._queue.put_nowait(job)
        logs.event("ingest_queued", job=job.id, paths=[str(p) for p in paths], rebuild=rebuild)
        return job

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            await self._run_one(job)

    async def _run_one(self, job: Job) -> None:
        job.status, job.started_at = "running", time.time()

        def on_progress(report: IngestReport) -> None:
            job.report = report

        try:
            if self.engine.embedder is None:
                raise IngestError("the embedding model is still loading; try again shortly")
            report = await ingest(job.paths, self.index_dir, self.config, embedder=self.engine.embedder,
                                  strict=job.strict, rebuild=job.rebuild, on_progress=on_progress)
            job.report = report
            job.status = "succeeded"
        except (IngestError, SnapshotError, OSError, ValueError) as e:
            job.status, job.error = "failed", str(e)
        except Exception as e:  # a bug: the job fails, the server goes on
            job.status, job.error = "failed", f"internal error: {type(e).__name__}"
            logs.event("ingest_crashed", 40, job=job.id, error=repr(e))
        job.finished_at = time.time()
        self._observe(job)
        logs.event("ingest_finished", job=job.id, status=job.status, error=job.error,
                   summary=job.report.summary() if job.report and job.status == "succeeded" else None)
        if job.status == "succeeded":
            with contextlib.suppress(Exception):  # the watcher retries a failed load
                await self.engine.reload()

    def _observe(self, job: Job) -> None:
        m = self.metrics
        m.ingest_jobs.labels(job.status).inc()
        r = job.report
        if r is None:
            return
        for outcome, n in (("new", r.files_new), ("changed", r.files_changed), ("unchanged", r.files_unchanged),
                           ("removed", r.files_removed), ("skipped", len(r.skipped))):
            if n:
                m.ingest_files.labels(outcome).inc(n)
        m.ingest_leaves_embedded.inc(r.leaves_embedded)
