"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from service.deps import EngineDep
from service.engine import NotReady
from service.errors import error_response
from service.links import scrub

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (it may still be loading its index)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "no index loaded yet"}})
async def readyz(engine: EngineDep) -> Any:
    """200 with the served snapshot once an index is loaded; 503 until then."""
    try:
        info = engine.describe()
    except NotReady as e:
        return error_response(503, "not_ready", f"no index is loaded yet: {e}", {"Retry-After": "1"})
    # anyone may ask: no folder of this host in it (a model set by its folder, a Milvus Lite file)
    info = scrub(info)
    return {"status": "ready", "snapshot": info["version"], "index_kind": info["index_kind"],
            "device": info["device"], "reranker": info["reranker"],
            "low_confidence_threshold": info["low_confidence_threshold"], "index": info}


@router.get("/metrics", response_class=Response)
async def metrics(engine: EngineDep) -> Response:
    """Prometheus metrics of this worker process."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(engine.metrics.render(), media_type=CONTENT_TYPE_LATEST)
