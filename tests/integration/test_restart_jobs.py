"""Kill the service (SIGKILL) while ingest jobs are queued and running, start it again: every job
is reported, finished or failed with the reason, never lost; the index and the journal still work."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from live_service import ADMIN_KEY, ServiceProcess

from index import current_path, load_snapshot
from service.jobs import INTERRUPTED, JOURNAL

ROOT = Path(__file__).resolve().parents[2]
NOTES = ROOT / "data" / "notes"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def job(c: httpx.Client, job_id: str) -> dict[str, Any]:
    r = c.get(f"/v1/ingest/{job_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_for(c: httpx.Client, job_id: str, statuses: tuple[str, ...], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        j = job(c, job_id)
        if j["status"] in statuses:
            return j
        assert time.monotonic() < deadline, f"job {job_id} never reached {statuses}: {j}"
        time.sleep(0.02)


def submit(c: httpx.Client, body: dict[str, Any]) -> str:
    r = c.post("/v1/ingest", json=body)
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    return job_id


def test_jobs_survive_a_sigkill_as_finished_or_failed(tmp_path: Path, notes_copy: tuple[Path, Path]) -> None:
    corpus, index_dir = notes_copy  # a copy of data/notes and its index
    service = ServiceProcess(index_dir, corpus, tmp_path / "service.log")
    try:
        service.start().wait_ready()
        with httpx.Client(base_url=service.url, headers=ADMIN, timeout=30) as c:
            with open(corpus / "06-rag.md", "a", encoding="utf-8") as f:
                f.write("\n\n## Zanzibaria\n\nThe capital of Zanzibaria is Quuxville.\n")
            done = submit(c, {"paths": ["06-rag.md"]})
            finished = wait_for(c, done, ("succeeded", "failed"))
            assert finished["status"] == "succeeded", finished
            # a rebuild embeds everything again (seconds): the first is running, the rest wait
            pending = [submit(c, {"paths": ["."], "rebuild": True}) for _ in range(4)]
            wait_for(c, pending[0], ("running",))
            before = {j: job(c, j)["status"] for j in pending}
            service.kill()
        assert before[pending[0]] == "running" and before[pending[-1]] == "queued", before

        # the journal holds every job; the live snapshot is a complete one
        lines = [json.loads(line) for line in (index_dir / JOURNAL).read_text().splitlines()]
        assert {r["id"] for r in lines} == {done, *pending}
        snap = load_snapshot(index_dir)
        assert current_path(index_dir) == snap.path and len(snap.tree) > 0

        service.start().wait_ready(60)
        with httpx.Client(base_url=service.url, headers=ADMIN, timeout=30) as c:
            after = job(c, done)
            assert after["status"] == "succeeded" and after["snapshot"] == finished["snapshot"]
            assert after["progress"]["files_changed"] == 1 and after["paths"] == ["06-rag.md"]
            for j in pending:
                body = job(c, j)
                if body["status"] == "failed":
                    assert body["error"] == INTERRUPTED and body["finished_at"] >= body["created_at"]
                else:  # the kill came after the job's last state change
                    assert body["status"] == "succeeded", body
            assert job(c, pending[-1])["status"] == "failed"  # it never started
            assert c.get("/v1/ingest/0123456789abcdef").status_code == 404

            # the restarted service answers, and new jobs run and are journalled
            answer = c.post("/v1/ask", json={"question": "What is the capital of Zanzibaria?"}).json()
            assert "Quuxville" in answer["answer"]
            again = wait_for(c, submit(c, {"paths": ["06-rag.md"]}), ("succeeded", "failed"))
            assert again["status"] == "succeeded" and again["progress"]["files_unchanged"] == 1
        # the journal was compacted at start-up: one line per old job, then the new job's lines
        lines = [json.loads(line) for line in (index_dir / JOURNAL).read_text().splitlines()]
        assert [r["id"] for r in lines[:5]] == [done, *pending]
        assert all(r["status"] in ("succeeded", "failed") for r in lines[:5])
        assert [r["status"] for r in lines[5:]] == ["queued", "running", "succeeded"]
    finally:
        service.kill()
