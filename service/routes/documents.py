"""Admin: what the served snapshot holds, document by document, and what was skipped and why."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from service.deps import AdminCaller, EngineDep, SettingsDep
from service.errors import ApiError
from service.routes.common import require_ready
from service.routes.ingest import ERRORS

router = APIRouter(tags=["admin"])


def shown(source: str, root: Path) -> str:
    """A file under the corpus root as its path relative to the root; a URL or another file as is."""
    with contextlib.suppress(ValueError, OSError):
        return str(Path(source).relative_to(root.resolve()))
    return source


def _documents(engine: Any, root: Path) -> tuple[str, list[dict[str, Any]]]:
    served = require_ready(engine)
    m = served.snapshot.manifest
    docs = [{"path": shown(src, root), "status": "indexed", "sha256": e.sha256, "size": e.size,
             "chunks": len(served.snapshot.tree.of_source(src)), "indexed_at": e.indexed_at, "reason": None}
            for src, e in m.files.items()]
    docs += [{"path": shown(src, root), "status": "skipped", "sha256": None, "size": None, "chunks": 0,
              "indexed_at": None, "reason": reason} for src, reason in m.skipped.items() if src not in m.files]
    return served.version, sorted(docs, key=lambda d: d["path"])


@router.get("/v1/documents", responses=ERRORS)
async def list_documents(engine: EngineDep, settings: SettingsDep, caller: AdminCaller) -> dict[str, Any]:
    """Every document of the served snapshot (path, content hash, chunks, indexed-at) and every
    file skipped, with its reason."""
    version, docs = _documents(engine, settings.corpus_root)
    return {"snapshot": version, "documents": docs}


@router.get("/v1/documents/{path:path}", responses=ERRORS)
async def get_document(path: str, engine: EngineDep, settings: SettingsDep, caller: AdminCaller) -> dict[str, Any]:
    """One document, by the path `GET /v1/documents` lists."""
    version, docs = _documents(engine, settings.corpus_root)
    for d in docs:
        if d["path"] == path:
            return {"snapshot": version, **d}
    raise ApiError(404, "document_not_found", f"no document {path!r} in snapshot {version}")
