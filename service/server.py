"""`notesrag serve`: ingest the corpus when there is no index yet, then run uvicorn."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from service import logs
from service.settings import Settings, get_settings, is_loopback

LOOPBACK = "127.0.0.1"


def bind_host(requested: str, settings: Settings) -> tuple[str, str | None]:
    """The address to bind, and a notice when it is not the one asked for."""
    if settings.auth_enabled or is_loopback(requested):
        return requested, None
    return LOOPBACK, (f"no API keys configured (NOTESRAG_API_KEYS): binding to {LOOPBACK} only, not "
                      f"{requested}; set keys to serve other hosts")


def ensure_index(settings: Settings) -> int:
    """Ingest `settings.corpus_root` into `settings.index_dir` when it holds no snapshot; 0 on success."""
    from index import IngestError, SnapshotError, current_path, ingest

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets DEBUG on import; its lines break the bar
    try:
        if current_path(settings.index_dir) is not None:
            return 0
    except SnapshotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    root = settings.corpus_root
    if not root.exists():
        print(f"error: no index in {settings.index_dir} and no corpus at {root} to build one "
              "(set NOTESRAG_CORPUS_ROOT)", file=sys.stderr)
        return 1
    print(f"no index in {settings.index_dir}: ingesting {root} first", file=sys.stderr)
    try:
        report = asyncio.run(ingest([root], settings.index_dir, settings.index_config(), progress=True))
    except (IngestError, SnapshotError, OSError, ValueError) as e:
        print(f"error: ingestion failed: {e}", file=sys.stderr)
        return 1
    for path, reason in report.skipped.items():
        print(f"warning: skipped {path}: {reason}", file=sys.stderr)
    print(report.summary(), file=sys.stderr)
    return 0


def run_server(host: str | None = None, port: int | None = None, index_dir: Path | None = None,
               workers: int = 1) -> int:
    """Serve the API until interrupted; returns the exit code."""
    import uvicorn

    if index_dir is not None:
        # worker processes build their settings from the environment
        os.environ["NOTESRAG_INDEX_DIR"] = str(index_dir)
        get_settings.cache_clear()
    settings = get_settings()
    logs.configure(settings.log_level, settings.log_json)
    code = ensure_index(settings)
    if code:
        return code
    bound, notice = bind_host(host or settings.host, settings)
    if notice:
        print(f"warning: {notice}", file=sys.stderr)
    elif not settings.auth_enabled:
        print(f"no API keys configured: listening on loopback {bound} only", file=sys.stderr)
    port = port or settings.port
    print(f"serving on http://{bound}:{port} (index {settings.index_dir}, {workers} worker(s)); "
          f"docs at http://{bound}:{port}/docs", file=sys.stderr)
    uvicorn.run("service.app:app_from_env", factory=True, host=bound, port=port, workers=workers,
                log_config=None, access_log=False, timeout_graceful_shutdown=10)
    return 0
