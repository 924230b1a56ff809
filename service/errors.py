"""Every error leaves as JSON `{"error": {"code", "message"}}` with its status, never a traceback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from index.store.snapshot import SnapshotUnavailable
from service import logs
from service.links import hide_paths

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
          415: "unsupported_media_type", 422: "invalid_request", 429: "rate_limited",
          500: "internal_error", 502: "bad_gateway", 503: "not_ready", 504: "timeout"}


class ApiError(Exception):
    """An error a route raises; it becomes the JSON error body with `status`."""

    def __init__(self, status: int, code: str, message: str,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str,
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=dict(headers or {}))


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc if p != "body") or "body"


def validation_message(errors: list[Any]) -> str:
    parts = []
    for e in errors[:5]:
        parts.append(f"{_loc(e.get('loc', ()))}: {e.get('msg', 'invalid')}")
    more = len(errors) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


def _short(path: str, limit: int = 100) -> str:
    """A request path as an error message repeats it: at most `limit` characters (a 100 kB path
    must not come back as a 100 kB body)."""
    return path if len(path) <= limit else path[:limit] + f"... ({len(path)} characters)"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODES.get(exc.status_code, "error")
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"no such route: {request.method} {_short(request.url.path)}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {_short(request.url.path)}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, code, message, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "invalid_json", "request body is not valid JSON")
    return error_response(422, "invalid_request", validation_message(errors))


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    logs.event("vector_store_unavailable", 40, path=request.url.path, error=str(exc))
    return error_response(503, "vector_store_unavailable", hide_paths(str(exc)), {"Retry-After": "5"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logs.event("unhandled_error", 40, path=request.url.path, error=repr(exc))
    return error_response(500, "internal_error", "internal server error; see the server log "
                          f"(request id {logs.request_id_var.get()})")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(SnapshotUnavailable, _store_unavailable)  # Milvus down mid-request
    app.add_exception_handler(Exception, _unexpected)
