"""A small static website on 127.0.0.1 for the web-ingestion tests: pages from a dict that the
test may change between runs, ETag or Last-Modified validators honoured, every request logged."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Site:
    """path -> (content type, body); pages whose path is in `etag_paths` send an ETag, the
    others a Last-Modified of `mtime[path]` (seconds)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[str, bytes]] = {}
        self.mtime: dict[str, float] = {}
        self.etag_paths: set[str] = set()
        self.fail: dict[str, int] = {}  # path -> the error status it answers with
        self.log: list[tuple[str, int]] = []  # (path, status) of every request
        self.base = ""

    def put(self, path: str, body: str | bytes, kind: str = "text/html; charset=utf-8",
            mtime: float = 1_700_000_000.0) -> None:
        self.files[path] = (kind, body.encode() if isinstance(body, str) else body)
        self.mtime[path] = mtime

    def sitemap(self, paths: list[str], at: str = "/sitemap.xml") -> None:
        locs = "".join(f"<url><loc>{self.base}{p}</loc></url>" for p in paths)
        self.put(at, '<?xml version="1.0" encoding="UTF-8"?>'
                 f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{locs}</urlset>',
                 "application/xml")

    def statuses(self, path: str) -> list[int]:
        return [s for p, s in self.log if p == path]


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in site.fail:
                return self._send(site.fail[path], b"failing", "text/plain")
            if path not in site.files:
                return self._send(404, b"not found", "text/plain")
            kind, body = site.files[path]
            headers: dict[str, str] = {}
            if path in site.etag_paths:
                etag = '"' + hashlib.sha1(body).hexdigest() + '"'
                headers["ETag"] = etag
                if self.headers.get("If-None-Match") == etag:
                    return self._send(304, b"", kind, headers)
            else:
                headers["Last-Modified"] = formatdate(site.mtime[path], usegmt=True)
                since = self.headers.get("If-Modified-Since")
                if since and parsedate_to_datetime(since).timestamp() >= int(site.mtime[path]):
                    return self._send(304, b"", kind, headers)
            self._send(200, body, kind, headers)

        def _send(self, status: int, body: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
            site.log.append((self.path, status))
            self.send_response(status)
            self.send_header("Content-Type", kind)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if status != 304:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if status != 304:
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def serve(site: Site) -> Iterator[Site]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(site))
    site.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
