"""The embeddable chat widget (`GET /widget.js`) and a demo page that uses it (`GET /`)."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources

from fastapi import APIRouter, Request, Response

router = APIRouter(tags=["widget"])

# Short enough that a new widget reaches portals within minutes; the ETag makes the
# revalidation after that a 304 without a body.
WIDGET_CACHE = "public, max-age=300, stale-while-revalidate=86400"


@lru_cache(maxsize=8)
def asset(name: str) -> tuple[bytes, str]:
    """The bytes of `service/static/<name>` (shipped as package data) and their ETag."""
    body = (resources.files("service") / "static" / name).read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _serve(request: Request, name: str, media_type: str, headers: dict[str, str]) -> Response:
    body, etag = asset(name)
    headers = {**headers, "ETag": etag, "X-Content-Type-Options": "nosniff"}
    if etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


@router.get("/widget.js", include_in_schema=False)
async def widget_js(request: Request) -> Response:
    """The `<notesrag-chat>` web component; any site may load it (it holds no secret)."""
    return _serve(request, "widget.js", "application/javascript; charset=utf-8",
                  {"Cache-Control": WIDGET_CACHE, "Cross-Origin-Resource-Policy": "cross-origin"})


@router.get("/", include_in_schema=False)
async def demo(request: Request) -> Response:
    """A page with the widget talking to this server (same origin, so no CORS set-up is needed)."""
    return _serve(request, "demo.html", "text/html; charset=utf-8", {"Cache-Control": "no-cache"})
