"""Structured logs: one JSON object a line, each with the id of the request that caused it."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

log = logging.getLogger("notesrag")


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log `name` with key-value `fields` (`event("snapshot_swapped", version=...)`)."""
    if log.isEnabledFor(level):
        rid = request_id_var.get()  # read now: a handler may format the record later, elsewhere
        log.log(level, name, extra={"fields": fields if rid is None else {"request_id": rid, **fields}})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    """For a terminal: `level event key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [f"{record.levelname.lower():7s} {record.getMessage()}"]
        parts.extend(f"{k}={v}" for k, v in getattr(record, "fields", {}).items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str = "INFO", json_lines: bool = True) -> None:
    """Send the `notesrag` logger (and uvicorn's error log) to stderr, once."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else KeyValueFormatter())
    for name in ("notesrag", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers = [handler]
        lg.setLevel(level.upper())
        lg.propagate = False
