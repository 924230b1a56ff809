"""Ingest jobs started over HTTP: checked paths, one job at a time, live progress.

Every job is written to a journal (`jobs.jsonl` in the index directory, one JSON
line per state change, fsynced) before it is acknowledged and whenever its state
changes. At start-up the journal is read back: a job left queued or running by a
process that is gone (killed, crashed, restarted) is reported failed, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from index import IngestCancelled, IngestError, IngestReport, SnapshotError, ingest
from index.config import IndexConfig
from index.ingestion.documents import is_utf8
from service import logs
from service.engine import QAEngine
from service.errors import ApiError
from service.metrics import Metrics

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
KEEP_JOBS = 100
JOURNAL = "jobs.jsonl"
INTERRUPTED = "interrupted by a restart of the service before it finished"
STOPPED = "interrupted: the service stopped before the job finished"
CANCELLED = "cancelled by DELETE /v1/ingest/{job}; the previous snapshot is still served"


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_ingest_paths(root: Path, raw_paths: list[str]) -> list[Path]:
    """The resolved paths to ingest; ApiError 403 for a path that leads outside `root`.

    Only the named paths are checked here, to answer at once; the job checks again when it
    runs, and confines every file it opens to the root then (links inside a folder that lead
    out are skipped with a reason, as `notesrag ingest` skips them). A missing path inside the
    root is a 404; a path outside it is a 403 with one message whether it exists or not, so
    nothing is learnt about what exists there.
    """
    try:
        root = root.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise ApiError(503, "corpus_root_missing", "the configured corpus root does not exist") from None
    out: list[Path] = []
    for raw in raw_paths or ["."]:
        if "\x00" in raw:
            raise ApiError(422, "invalid_path", "paths must not contain NUL characters")
        if not is_utf8(raw):  # a lone surrogate (JSON allows "\ud800") cannot name a file
            raise ApiError(422, "invalid_path", "paths must be valid Unicode text (no lone surrogates)")
        given = Path(raw)
        candidate = given if given.is_absolute() else root / given
        outside = ApiError(403, "path_outside_root", f"{raw!r} is outside the corpus root")
        try:
            resolved = candidate.resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError):
            if not _inside(Path(*_normalise(candidate)), root):
                raise outside from None
            raise ApiError(404, "path_not_found", f"no such file or folder in the corpus root: {raw!r}") from None
        except (RuntimeError, OSError):  # a symlink loop, a name too long
            raise ApiError(403, "path_outside_root", f"{raw!r} cannot be resolved inside the corpus root") from None
        if not _inside(resolved, root):
            raise outside
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
    cancel_requested: bool = False  # the running job stops at its next file or batch

    @property
    def finished(self) -> bool:
        return self.status not in ("queued", "running")

    def as_dict(self, root: Path | None = None) -> dict[str, Any]:
        report = self.report
        progress: dict[str, Any] = {}
        if report is not None:
            progress = {k: v for k, v in report.as_dict().items() if k != "skipped"}
        return {
            "id": self.id, "status": self.status, "paths": [_show(p, root) for p in self.paths],
            "rebuild": self.rebuild, "created_at": self.created_at, "started_at": self.started_at,
            "finished_at": self.finished_at, "progress": progress,
            "errors": {_show(Path(p), root) if "://" not in p else p: why
                       for p, why in {**report.skipped, **report.partial}.items()} if report else {},
            "error": self.error,
            "cancel_requested": self.cancel_requested,
            "snapshot": report.snapshot if report and self.status == "succeeded" else None,
        }


def process_token(pid: int | None = None) -> str | None:
    """`pid:start time` of a process (its start time tells it from a later process with its pid);
    None when the process does not exist."""
    pid = os.getpid() if pid is None else pid
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc here: the pid alone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return f"{pid}:"
    # the command name (field 2) may hold spaces and parentheses: count fields after the last ')'
    return f"{pid}:{stat.rsplit(')', 1)[1].split()[19]}"


def _owner_alive(owner: str) -> bool:
    pid, _, _ = owner.partition(":")
    return pid.isdigit() and process_token(int(pid)) == owner


class JobJournal:
    """Jobs on disk: one JSON line per state change, the last line of a job wins.

    Appends and compaction hold an exclusive lock on a side file, so the workers of one
    server (processes sharing the index directory) can share the journal.
    """

    def __init__(self, path: Path, keep: int = KEEP_JOBS) -> None:
        self.path = Path(path)
        self.keep = keep
        self.owner = process_token() or f"{os.getpid()}:"
        self.appended = 0  # lines written since the last compaction

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def record(self, job: Job) -> None:
        """Append the job's state and fsync it; raises OSError when that is not possible."""
        # ASCII JSON: a path may hold surrogates (a file name that is not UTF-8)
        line = json.dumps(_record(job, self.owner)) + "\n"
        with self._lock():
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        self.appended += 1

    def _read(self) -> tuple[list[dict[str, Any]], int]:
        """The last record of each job, oldest job first, and the number of lines read."""
        records: dict[str, dict[str, Any]] = {}
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return [], 0
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:  # a line cut short by a crash
                continue
            if isinstance(rec, dict) and isinstance(rec.get("id"), str):
                records[rec["id"]] = rec
        ordered = sorted(records.values(), key=lambda r: r.get("created_at") or 0.0)
        return ordered, len(lines)

    def recover(self) -> list[Job]:
        """The newest `keep` jobs; those a dead process left unfinished are marked failed on disk.

        Nothing is written when nothing needs marking or compacting (a read-only index works)."""
        records, lines = self._read()
        if any(self._orphaned(r) for r in records) or lines > len(records) or len(records) > self.keep:
            with self._lock():
                records, _ = self._read()
                now = time.time()
                for rec in records:
                    if self._orphaned(rec):
                        rec.update(status="failed", error=INTERRUPTED, finished_at=now)
                records = records[-self.keep:]
                self._rewrite(records)
        jobs = []
        for rec in records[-self.keep:]:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                jobs.append(_job(rec))
        return jobs

    @staticmethod
    def _orphaned(rec: dict[str, Any]) -> bool:
        return rec.get("status") in ("queued", "running") and not _owner_alive(str(rec.get("owner", "")))

    def compact(self) -> None:
        """Keep one line for each of the newest `keep` jobs."""
        with self._lock():
            self._rewrite(self._read()[0][-self.keep:])

    def _rewrite(self, records: list[dict[str, Any]]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        # the journal names files of the corpus: owner-only, as record() creates it
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # a stale temp file of a crashed rewrite may have another mode
        with open(fd, "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.appended = 0


def _record(job: Job, owner: str) -> dict[str, Any]:
    return {"id": job.id, "status": job.status, "paths": [str(p) for p in job.paths], "rebuild": job.rebuild,
            "strict": job.strict, "created_at": job.created_at, "started_at": job.started_at,
            "finished_at": job.finished_at, "error": job.error, "owner": owner,
            "report": dataclasses.asdict(job.report) if job.report is not None else None}


_REPORT_FIELDS = {f.name for f in dataclasses.fields(IngestReport)}


def _job(rec: dict[str, Any]) -> Job:
    report = rec.get("report")
    return Job(id=rec["id"], paths=[Path(p) for p in rec["paths"]], rebuild=bool(rec.get("rebuild")),
               strict=bool(rec.get("strict")), status=rec["status"], created_at=float(rec["created_at"]),
               started_at=rec.get("started_at"), finished_at=rec.get("finished_at"), error=rec.get("error"),
               report=IngestReport(**{k: v for k, v in report.items() if k in _REPORT_FIELDS})
               if isinstance(report, dict) else None)


def _show(p: Path, root: Path | None) -> str:
    if root is not None:
        with contextlib.suppress(ValueError, OSError):
            return str(p.relative_to(root.resolve())) or "."
    return str(p)


class IngestJobs:
    """Runs ingest jobs one after the other in the app's event loop (work happens in threads)."""

    def __init__(self, engine: QAEngine, index_dir: Path, config: IndexConfig, metrics: Metrics,
                 corpus_root: Path | None = None, max_leaves: int | None = None) -> None:
        self.engine = engine
        self.max_leaves = max_leaves  # chunks one job may embed (None: no budget)
        self.corpus_root = corpus_root  # every file a job reads must lie inside it
        self.index_dir = index_dir
        self.config = config
        self.metrics = metrics
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.journal = JobJournal(index_dir / JOURNAL)
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Read back the jobs of earlier processes, then run jobs as they come."""
        try:
            for job in self.journal.recover():
                self.jobs[job.id] = job
        except OSError as e:  # an unwritable index directory: ingestion will say so too
            logs.event("job_journal_unreadable", 40, path=str(self.journal.path), error=str(e))
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="notesrag-ingest-jobs")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for job in self.jobs.values():
            if job.status in ("queued", "running"):
                job.status, job.error, job.finished_at = "failed", STOPPED, time.time()
                self._record(job)

    def _record(self, job: Job) -> None:
        try:
            self.journal.record(job)
        except OSError as e:
            logs.event("job_journal_failed", 40, job=job.id, error=str(e))

    def submit(self, paths: list[Path], rebuild: bool = False, strict: bool = False) -> Job:
        job = Job(secrets.token_hex(8), paths, rebuild, strict)
        try:
            self.journal.record(job)  # on disk before it is acknowledged
        except OSError as e:
            raise ApiError(503, "job_journal_failed", f"cannot record the ingest job: {e.strerror or e}") from None
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

    def cancel(self, job: Job) -> None:
        """A queued job is cancelled at once; a running one stops at its next file or batch."""
        if job.finished:
            return
        job.cancel_requested = True
        if job.status == "queued":
            job.status, job.error, job.finished_at = "cancelled", CANCELLED, time.time()
            self._record(job)
            self._observe(job)
        logs.event("ingest_cancel_requested", job=job.id, status=job.status)

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            if job.status == "queued":  # (not cancelled while it waited)
                await self._run_one(job)

    async def _run_one(self, job: Job) -> None:
        job.status, job.started_at = "running", time.time()
        self._record(job)

        def on_progress(report: IngestReport) -> None:
            job.report = report

        try:
            if self.engine.embedder is None:
                raise IngestError("the embedding model is still loading; try again shortly")
            report = await ingest(job.paths, self.index_dir, self.config, embedder=self.engine.embedder,
                                  strict=job.strict, rebuild=job.rebuild, on_progress=on_progress,
                                  confine=self.corpus_root, should_stop=lambda: job.cancel_requested,
                                  max_leaves=self.max_leaves)
            job.report = report
            # swap before saying "succeeded": a client that sees it is served the new snapshot
            with contextlib.suppress(Exception):  # (a failed load: the watcher tries again)
                await self.engine.reload()
            job.status = "succeeded"
        except IngestCancelled:
            job.status, job.error = "cancelled", CANCELLED
        except (IngestError, SnapshotError, OSError, ValueError) as e:
            job.status, job.error = "failed", str(e)
        except Exception as e:  # a bug: the job fails, the server goes on
            job.status, job.error = "failed", f"internal error: {type(e).__name__}"
            logs.event("ingest_crashed", 40, job=job.id, error=repr(e))
        job.finished_at = time.time()
        self._record(job)
        if self.journal.appended > 10 * KEEP_JOBS:
            with contextlib.suppress(OSError):
                self.journal.compact()
        self._observe(job)
        logs.event("ingest_finished", job=job.id, status=job.status, error=job.error,
                   summary=job.report.summary() if job.report and job.status == "succeeded" else None)

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
