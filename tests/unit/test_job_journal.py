"""The ingest job journal: what a restarted service reads back about earlier jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from index import IngestReport
from service.errors import ApiError
from service.jobs import (
    INTERRUPTED,
    JOURNAL,
    STOPPED,
    IngestJobs,
    Job,
    JobJournal,
    process_token,
)
from service.metrics import Metrics


def dead_owner() -> str:
    """The token of a process that has exited."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    return f"{int(proc.stdout)}:1"


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_process_token_tells_a_live_process_from_a_later_one_with_its_pid() -> None:
    me = process_token()
    assert me is not None and me.startswith(f"{os.getpid()}:") and me == process_token(os.getpid())
    assert process_token(2**22 + 12345) is None  # above Linux's pid_max


def test_unfinished_jobs_of_a_dead_process_are_failed_and_the_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL
    dead = JobJournal(path)
    dead.owner = dead_owner()
    finished = Job("done", [tmp_path / "a.md"], False, False, created_at=1.0)
    queued = Job("queued", [tmp_path], True, False, created_at=2.0)
    running = Job("running", [tmp_path], False, True, created_at=3.0)
    for job in (finished, queued, running):
        dead.record(job)
    running.status, running.started_at = "running", 3.5
    dead.record(running)
    report = IngestReport(files_seen=1, files_new=1, snapshot="snap-1", skipped={"/x/b.md": "binary file"})
    finished.status, finished.report, finished.finished_at = "succeeded", report, 1.5
    dead.record(finished)
    with open(path, "a") as f:
        f.write('{"id": "cut-short", "stat')  # the process died in the middle of a line

    jobs = {j.id: j for j in JobJournal(path).recover()}
    assert list(jobs) == ["done", "queued", "running"]  # in the order they were created
    assert jobs["done"].status == "succeeded" and jobs["done"].report == report
    shown = jobs["done"].as_dict()
    assert shown["snapshot"] == "snap-1" and shown["errors"] == {"/x/b.md": "binary file"}
    for j in ("queued", "running"):
        assert jobs[j].status == "failed" and jobs[j].error == INTERRUPTED
        assert jobs[j].finished_at is not None
    assert jobs["queued"].paths == [tmp_path] and jobs["queued"].rebuild and jobs["running"].strict
    # written back, one line a job, so the next start reads the same
    assert [(r["id"], r["status"]) for r in lines(path)] == [
        ("done", "succeeded"), ("queued", "failed"), ("running", "failed")]
    again = {j.id: j.status for j in JobJournal(path).recover()}
    assert again == {"done": "succeeded", "queued": "failed", "running": "failed"}
    assert path.stat().st_mode & 0o777 == 0o600  # the rewrite keeps the journal owner-only


def test_the_journal_stays_owner_only_through_rewrites(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL
    journal = JobJournal(path, keep=2)
    old = os.umask(0o022)
    try:
        for i in range(4):
            journal.record(Job(f"j{i}", [tmp_path], False, False, status="succeeded", created_at=float(i)))
        assert path.stat().st_mode & 0o777 == 0o600
        journal.compact()
        assert [r["id"] for r in lines(path)] == ["j2", "j3"]
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_jobs_of_a_live_process_are_left_alone(tmp_path: Path) -> None:
    """Workers of one server share the index directory: a starting worker must not fail the
    jobs another worker is running."""
    path = tmp_path / JOURNAL
    live = JobJournal(path)
    live.record(Job("mine", [tmp_path], False, False))
    assert [(j.id, j.status) for j in JobJournal(path).recover()] == [("mine", "queued")]
    reused = JobJournal(path)
    reused.owner = f"{os.getpid()}:0"  # this pid, but another process's start time
    reused.record(Job("old", [tmp_path], False, False, created_at=0.5))
    statuses = {j.id: j.status for j in JobJournal(path).recover()}
    assert statuses == {"old": "failed", "mine": "queued"}


def test_recover_keeps_the_newest_jobs_and_writes_nothing_when_nothing_changed(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL
    journal = JobJournal(path, keep=3)
    for i in range(5):
        job = Job(f"j{i}", [tmp_path], False, False, created_at=float(i))
        job.status = "succeeded"
        journal.record(job)
    assert [j.id for j in JobJournal(path, keep=3).recover()] == ["j2", "j3", "j4"]
    assert len(lines(path)) == 3
    before = path.stat()
    JobJournal(path, keep=3).recover()
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert JobJournal(tmp_path / "none" / JOURNAL).recover() == []
    assert not (tmp_path / "none").exists()  # a missing journal is not created by reading it


def test_compact_keeps_the_last_line_of_each_job(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL
    journal = JobJournal(path)
    job = Job("a", [tmp_path], False, False)
    for status in ("queued", "running", "succeeded"):
        job.status = status  # type: ignore[assignment]
        journal.record(job)
    assert journal.appended == 3
    journal.compact()
    assert [r["status"] for r in lines(path)] == ["succeeded"] and journal.appended == 0


class NoEngine:
    embedder = None


async def test_submit_is_journalled_before_it_returns_and_stop_fails_what_is_left(tmp_path: Path) -> None:
    jobs = IngestJobs(NoEngine(), tmp_path, None, Metrics())  # type: ignore[arg-type]
    job = jobs.submit([tmp_path / "a.md"])
    assert [(r["id"], r["status"]) for r in lines(tmp_path / JOURNAL)] == [(job.id, "queued")]
    await jobs.stop()  # the worker never started: the job is still queued
    assert job.status == "failed" and job.error == STOPPED
    assert lines(tmp_path / JOURNAL)[-1]["status"] == "failed"
    restarted = IngestJobs(NoEngine(), tmp_path, None, Metrics())  # type: ignore[arg-type]
    restarted.start()
    try:
        back = restarted.get(job.id)
        assert back is not None and back.status == "failed" and back.error == STOPPED
    finally:
        await restarted.stop()


async def test_a_job_that_cannot_be_journalled_is_refused(tmp_path: Path) -> None:
    (tmp_path / JOURNAL).mkdir()  # the journal cannot be opened for writing
    jobs = IngestJobs(NoEngine(), tmp_path, None, Metrics())  # type: ignore[arg-type]
    with pytest.raises(ApiError, match="cannot record the ingest job") as e:
        jobs.submit([tmp_path])
    assert e.value.status == 503 and not jobs.jobs
