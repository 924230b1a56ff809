"""Admin: ingest server-side paths inside the corpus root, follow a job, reload the snapshot."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from index import SnapshotError
from service.deps import AdminCaller, EngineDep, JobsDep, SettingsDep
from service.errors import ApiError
from service.jobs import resolve_ingest_paths
from service.routes.common import require_ready
from service.schemas import IngestJobOut, IngestRequest

router = APIRouter(tags=["admin"])

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid API key"}, 403: {"description": "not an admin key, or a "
                                                                               "path outside the corpus root"},
    404: {"description": "no such path or job"}, 409: {"description": "the job has finished"},
    422: {"description": "invalid request"},
}


@router.post("/v1/ingest", status_code=202, response_model=IngestJobOut, responses=ERRORS)
async def start_ingest(body: IngestRequest, jobs: JobsDep, settings: SettingsDep, caller: AdminCaller) -> Any:
    """Queue an ingest job; jobs run one at a time. Poll `GET /v1/ingest/{job}` for progress."""
    paths = await asyncio.to_thread(resolve_ingest_paths, settings.corpus_root, body.paths)
    job = jobs.submit(paths, rebuild=body.rebuild, strict=body.strict)
    return job.as_dict(settings.corpus_root)


@router.get("/v1/ingest/{job_id}", response_model=IngestJobOut, responses=ERRORS)
async def ingest_status(job_id: str, jobs: JobsDep, settings: SettingsDep, caller: AdminCaller) -> Any:
    """Status, progress, counts and per-file errors of an ingest job."""
    job = jobs.get(job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no ingest job {job_id!r} (the last 100 jobs are kept)")
    return job.as_dict(settings.corpus_root)


@router.delete("/v1/ingest/{job_id}", status_code=202, response_model=IngestJobOut, responses=ERRORS)
async def cancel_ingest(job_id: str, jobs: JobsDep, settings: SettingsDep, caller: AdminCaller) -> Any:
    """Cancel a job: a queued one at once, a running one at its next file or batch (poll it); the
    snapshot served before stays. A finished job is left as it is (409)."""
    job = jobs.get(job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no ingest job {job_id!r} (the last 100 jobs are kept)")
    if job.finished:
        raise ApiError(409, "job_finished", f"ingest job {job_id!r} has already {job.status}")
    jobs.cancel(job)
    return job.as_dict(settings.corpus_root)


@router.post("/v1/reload", responses=ERRORS)
async def reload(engine: EngineDep, caller: AdminCaller) -> dict[str, Any]:
    """Load the snapshot the index directory names now, if it is not the one served."""
    try:
        swapped = await engine.reload(force=True)
    except (SnapshotError, OSError, ValueError) as e:
        raise ApiError(503, "reload_failed", f"cannot load the snapshot: {e}") from None
    return {"swapped": swapped, "snapshot": require_ready(engine).version}
