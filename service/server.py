"""`notesrag serve`: ingest the corpus when there is no index yet, then run uvicorn."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # the C parser (the `httptools` dependency); h11, pure Python, where it is missing
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpTools
    HttpToolsProtocol: type | None = _HttpTools
except ImportError:  # pragma: no cover - installed with the project
    HttpToolsProtocol = None

from service import logs
from service.settings import Settings, SettingsError, get_settings, is_loopback

LOOPBACK = "127.0.0.1"
_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class ReadDeadline:
    """A deadline for reading each request, head and body, for uvicorn's HTTP protocols.

    uvicorn bounds only the idle time between requests (`timeout_keep_alive`); a client that
    sends part of a request head and stops, or a byte a second, holds its connection for as
    long as it likes. Here the clock starts when the connection opens and again after each
    response; when the request is not wholly read by `read_timeout_s`, the connection gets a
    408 (if nothing was answered yet) and is closed. Mixed into uvicorn's httptools protocol
    (`ReadDeadlineProtocol`) or its h11 one (`ReadDeadlineH11Protocol`), whose attributes it
    uses; subclass it with the timeout set (`read_deadline_protocol`)."""

    read_timeout_s: float = 10.0
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: Any
    client: Any

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_after: object = None  # the cycle answered before the request being read
        self._arm(None)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        self._disarm_when_read()

    def on_response_complete(self) -> None:
        answered = self.cycle
        super().on_response_complete()  # type: ignore[misc]  # may start a pipelined request read
        if not self.transport.is_closing():
            self._arm(answered)
            self._disarm_when_read()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self, answered: object) -> None:
        self._cancel()
        self._waiting_after = answered
        self._deadline = self.loop.call_later(self.read_timeout_s, self._timed_out)

    def _disarm_when_read(self) -> None:
        cycle = self.cycle
        if self._deadline is not None and cycle is not None and cycle is not self._waiting_after \
                and not cycle.more_body:
            self._cancel()

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle is self._waiting_after:  # still in the head: nothing sent
            self.transport.write(_TIMED_OUT)
        logs.event("request_read_timeout", 30, client=f"{self.client[0]}" if self.client else None,
                   seconds=self.read_timeout_s)
        self.transport.close()


class ReadDeadlineH11Protocol(ReadDeadline, H11Protocol):
    pass


def _refused(self: Any, msg: str) -> None:
    """httptools' 400 for a request its parser refuses (ambiguous framing such as both
    Content-Length and Transfer-Encoding, a bad head), as the service's JSON error, with the
    parser's reason; the connection is closed."""
    exc = sys.exc_info()[1]  # called inside uvicorn's `except HttpParserError`
    reason = f"malformed HTTP request: {exc}" if exc is not None and str(exc) else msg
    body = json.dumps({"error": {"code": "bad_request", "message": reason}}).encode()
    self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
    self.transport.close()


# httptools parses a request head in C, h11 in Python (bench/README.md, "Throughput")
ReadDeadlineProtocol: type[ReadDeadline] = ReadDeadlineH11Protocol if HttpToolsProtocol is None else \
    type("ReadDeadlineProtocol", (ReadDeadline, HttpToolsProtocol), {"send_400_response": _refused})


_TIMED_CLASS = re.compile(r"(ReadDeadlineProtocol|ReadDeadlineH11Protocol)_(\d+)us")


def read_deadline_protocol(read_timeout_s: float, h11: bool = False) -> type[ReadDeadline]:
    """The protocol class with this deadline. It is named after its deadline in this module
    (`ReadDeadlineProtocol_10000000us`), made again on first use by that name in another
    process: `serve --workers N` pickles it, by name, to each worker process."""
    base = ReadDeadlineH11Protocol if h11 else ReadDeadlineProtocol
    name = f"{base.__name__}_{round(read_timeout_s * 1e6)}us"
    return globals().get(name) or _timed_class(name)


def _timed_class(name: str) -> type[ReadDeadline]:
    match = _TIMED_CLASS.fullmatch(name)
    if match is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    base = ReadDeadlineH11Protocol if match.group(1) == "ReadDeadlineH11Protocol" else ReadDeadlineProtocol
    cls: type[ReadDeadline] = type(name, (base,), {"read_timeout_s": int(match.group(2)) / 1e6,
                                                   "__qualname__": name, "__module__": __name__})
    globals()[name] = cls
    return cls


def __getattr__(name: str) -> Any:  # unpickling in a worker process: the class by its name
    return _timed_class(name)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What uvicorn is told about the wire, from the settings: every server (`notesrag serve`,
    compose, the tests' loopback servers) runs with these."""
    trusted = settings.trusted_proxies
    return {
        "http": read_deadline_protocol(settings.read_timeout_s),
        "timeout_keep_alive": settings.keep_alive_s,
        "limit_concurrency": settings.max_connections,
        # uvicorn trusts X-Forwarded-For from 127.0.0.1 unless told otherwise: a local caller
        # could then pick its own address, and with it a fresh rate-limit bucket
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": ",".join(trusted) if trusted else "",
        "server_header": False,
    }


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
    try:
        settings = get_settings()
    except SettingsError as e:
        print(e, file=sys.stderr)
        return 2
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
                log_config=None, access_log=False, timeout_graceful_shutdown=10, **uvicorn_options(settings))
    return 0
