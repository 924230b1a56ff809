"""What routes receive: the engine, the settings, the job runner and the authenticated caller."""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service import logs
from service.engine import QAEngine
from service.errors import ApiError
from service.feedback import FeedbackStore
from service.jobs import IngestJobs
from service.settings import Scope, Settings


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: `key_id` is a hash prefix of the API key (never the key), or the client IP."""

    key_id: str
    scope: Scope
    anonymous: bool = False

    def allows(self, scope: Scope) -> bool:
        return self.scope == "admin" or scope == self.scope


class RateLimiter:
    """A token bucket per caller: `per_minute` sustained, up to `burst` at once."""

    MAX_CALLERS = 10_000

    def __init__(self, per_minute: int, burst: int) -> None:
        if per_minute < 0 or burst < 1:
            raise ValueError(f"rate limit needs per_minute >= 0 and burst >= 1, got {per_minute}, {burst}")
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def check(self, caller: str, now: float | None = None) -> float:
        """0 when the request may go ahead, else the seconds to wait."""
        if not self.enabled:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(caller, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[caller] = (tokens - 1.0, now)
            self._prune(now)
            return 0.0
        self._buckets[caller] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def wait(self, caller: str, now: float | None = None) -> float:
        """What `check` would answer, without taking a token: 0 when one is there."""
        if not self.enabled or caller not in self._buckets:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets[caller]
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        if len(self._buckets) > self.MAX_CALLERS:  # forget callers whose bucket has refilled
            full = self.burst / self.rate
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}


def key_id(key: str) -> str:
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def authenticate(request: Request, settings: Settings) -> Principal:
    if not settings.auth_enabled:
        client = request.client.host if request.client else "unknown"
        return Principal(f"ip:{client}", "admin", anonymous=True)
    header = request.headers.get("authorization")
    challenge = {"WWW-Authenticate": 'Bearer realm="notesrag"'}
    if not header:
        raise ApiError(401, "unauthorized", "missing API key: send Authorization: Bearer <key>", challenge)
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "the Authorization header must be 'Bearer <key>'", challenge)
    found: Scope | None = None
    for key, scope in settings.key_scopes().items():
        # compare with every key, in constant time, so timing tells nothing about near misses
        if hmac.compare_digest(key.encode(), token.encode()):
            found = scope
    if found is None:
        raise ApiError(401, "unauthorized", "invalid API key", challenge)
    return Principal(key_id(token), found)


def authenticate_throttled(request: Request, settings: Settings, failures: RateLimiter) -> Principal:
    """`authenticate`, with failed attempts counted per client address: past the allowance a
    429, before the key is compared, so guessing keys runs at the allowance's pace. Each address
    has its own allowance: a client guessing keys locks out only its own address."""
    client = request.client.host if request.client else "unknown"
    wait = failures.wait(client)
    if wait > 0:
        raise ApiError(429, "too_many_auth_failures", "too many requests with a wrong API key from this "
                       f"address; retry in {math.ceil(wait)}s", {"Retry-After": str(math.ceil(wait))})
    try:
        return authenticate(request, settings)
    except ApiError as e:
        if e.status == 401:
            failures.check(client)
            logs.event("auth_failed", 30, client=client, reason=e.message)
        raise


# The dependencies are `async def` though they never wait: FastAPI runs a plain `def` one in a
# worker thread, a hand-off there and back for each of a request's four (bench/README.md, "Throughput").
def _guard(scope: Scope) -> Callable[[Request], Awaitable[Principal]]:
    async def dependency(request: Request) -> Principal:
        return check_caller(scope, request)

    return dependency


def check_caller(scope: Scope, request: Request) -> Principal:
    """The caller of a request that needs `scope`, or the ApiError to answer it with (401, 403,
    429); the route guard, also for ASGI apps mounted beside the routes (the MCP endpoint)."""
    state = request.app.state
    principal = authenticate_throttled(request, state.settings, state.auth_failures)
    if not principal.allows(scope):
        raise ApiError(403, "forbidden", f"this API key has scope {principal.scope!r}; "
                       f"this endpoint needs {scope!r}")
    wait = state.rate_limiter.check(principal.key_id)
    if wait > 0:
        raise ApiError(429, "rate_limited", f"rate limit of {state.settings.rate_limit_per_minute} "
                       f"requests a minute exceeded; retry in {math.ceil(wait)}s",
                       {"Retry-After": str(math.ceil(wait))})
    request.state.principal = principal
    return principal


async def get_engine(request: Request) -> QAEngine:
    engine: QAEngine = request.app.state.engine
    return engine


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_jobs(request: Request) -> IngestJobs:
    jobs: IngestJobs = request.app.state.jobs
    return jobs


async def get_feedback(request: Request) -> FeedbackStore:
    store: FeedbackStore | None = request.app.state.feedback
    if store is None:
        raise ApiError(503, "feedback_unavailable", "feedback cannot be stored: see the server log")
    return store


async def get_feedback_or_none(request: Request) -> FeedbackStore | None:
    store: FeedbackStore | None = request.app.state.feedback
    return store


EngineDep = Annotated[QAEngine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
JobsDep = Annotated[IngestJobs, Depends(get_jobs)]
FeedbackDep = Annotated[FeedbackStore, Depends(get_feedback)]
AnswerLog = Annotated[FeedbackStore | None, Depends(get_feedback_or_none)]  # answers go on record when it is set
QueryCaller = Annotated[Principal, Depends(_guard("query"))]
AdminCaller = Annotated[Principal, Depends(_guard("admin"))]
