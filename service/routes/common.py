"""Checks and conversions shared by the query routes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from service import logs
from service.engine import NotReady, QAEngine, Served
from service.errors import ApiError, error_body
from service.settings import Settings

T = TypeVar("T")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def check_question(question: str, settings: Settings, what: str = "question") -> str:
    if len(question) > settings.max_question_chars:
        raise ApiError(422, "question_too_long", f"the {what} is {len(question)} characters long; "
                       f"the limit is {settings.max_question_chars} characters")
    if not question.strip():
        raise ApiError(422, "invalid_request", f"the {what} is empty")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError:  # JSON can carry a lone surrogate ("\ud800"); the tokenizer cannot
        raise ApiError(422, "invalid_request", f"the {what} is not valid Unicode text (a lone surrogate)") from None
    return question


def check_top_k(top_k: int | None, settings: Settings) -> int:
    if top_k is None:
        return settings.default_top_k
    if not 1 <= top_k <= settings.max_top_k:
        raise ApiError(422, "invalid_request", f"top_k must be between 1 and {settings.max_top_k}, got {top_k}")
    return top_k


def require_ready(engine: QAEngine) -> Served:
    try:
        return engine.current()
    except NotReady as e:
        raise ApiError(503, "not_ready", f"no index is loaded yet: {e}", {"Retry-After": "1"}) from None


async def call(engine: QAEngine, work: Awaitable[T]) -> T:
    try:
        return await work
    except NotReady as e:
        raise ApiError(503, "not_ready", f"no index is loaded yet: {e}", {"Retry-After": "1"}) from None


def wants_cache(cache_control: str | None) -> bool:
    """False when the client sent `Cache-Control: no-cache` (or no-store)."""
    if not cache_control:
        return True
    directives = {d.strip().lower() for d in cache_control.split(",")}
    return not directives & {"no-cache", "no-store"}


def sse(event: str | None, data: Any) -> bytes:
    body = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {body}\n\n".encode()


async def guarded(events: AsyncIterator[bytes], error_event: str | None = "error") -> AsyncIterator[bytes]:
    """A stream that ends with an error event, not a cut connection, when something fails mid-way."""
    try:
        async for chunk in events:
            yield chunk
    except NotReady as e:
        yield sse(error_event, error_body("not_ready", f"no index is loaded yet: {e}"))
    except Exception as e:
        logs.event("stream_failed", 40, error=repr(e))
        yield sse(error_event, error_body("internal_error", "the answer stream failed; see the server log"))
