"""The FastAPI app: `create_app(settings)`; its lifespan builds the engine and the job runner."""

from __future__ import annotations

import secrets
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from index.answer.citations import SUPPORT_THRESHOLD
from index.models.embedder import FEW_TEXTS, get_query_embedder
from index.models.llm_server import LLMServerConfig, ManagedLLMServer
from index.models.reranker import BatchingReranker, Reranker, get_reranker
from index.models.threads import default_workers
from service import errors, logs
from service.answerers import Answerer, ExtractiveAnswerer, LLMAnswerer
from service.deps import RateLimiter
from service.engine import QAEngine
from service.feedback import FeedbackStore
from service.hosts import HostCheckMiddleware, allowed_hosts
from service.jobs import IngestJobs
from service.links import Linker
from service.mcp_server import build_mcp, http_endpoint, session_manager_running
from service.metrics import Metrics
from service.routes import ask, chat, documents, feedback, health, ingest, search, widget
from service.settings import Settings, SettingsError, get_settings
from service.watcher import CorpusWatcher

_BODY_METHODS = {"POST", "PUT", "PATCH"}


def build_answerers(settings: Settings, llm: ManagedLLMServer | None = None,
                    reranker: Reranker | None = None) -> tuple[dict[str, Answerer], str]:
    """The extractive answerer, and the LLM one when a server is set or `llm` runs one."""
    extractive = ExtractiveAnswerer(settings.abstain_threshold, settings.max_sentences,
                                    reranker=reranker, units_scored=settings.units_scored,
                                    low_confidence=settings.low_confidence)
    answerers: dict[str, Answerer] = {"extractive": extractive}
    url, model = (llm.base_url, llm.model) if llm is not None else (settings.llm_base_url, settings.llm_model)
    if url:
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
        answerers["llm"] = LLMAnswerer(url, model, api_key=key,
                                       timeout_s=settings.llm_timeout_s, max_tokens=settings.llm_max_tokens,
                                       temperature=settings.llm_temperature, fallback=extractive,
                                       grammar=settings.llm_grammar if settings.llm_grammar is not None else llm is not None,
                                       support_threshold=SUPPORT_THRESHOLD if settings.llm_support_threshold is None else settings.llm_support_threshold,
                                       unsupported=settings.llm_unsupported)
        return answerers, "llm"
    return answerers, "extractive"


def managed_llm(settings: Settings) -> ManagedLLMServer | None:
    """The llama.cpp server to run for NOTESRAG_LLM_GGUF; None when no GGUF is set."""
    if settings.llm_gguf is None:
        return None
    config = LLMServerConfig(settings.llm_gguf, port=settings.llm_port, ctx_size=settings.llm_ctx_size,
                             threads=settings.llm_threads, parallel=settings.llm_parallel)
    return ManagedLLMServer(config, start_timeout_s=settings.llm_start_timeout_s)


def build_engine(settings: Settings, metrics: Metrics, llm: ManagedLLMServer | None = None) -> QAEngine:
    threads = settings.rerank_threads or default_workers()
    reranker = batched(get_reranker(settings.reranker, threads), settings, metrics)  # a damaged model stops the start
    answerers, default = build_answerers(settings, llm, reranker)
    return QAEngine(
        settings.index_dir, lambda: get_query_embedder(settings.model, settings.device, settings.embed_backend,
                                   few=max(FEW_TEXTS, settings.batch_max)), answerers,
        default_answerer=default, merge_threshold=settings.merge_threshold,
        batch_window_s=settings.batch_window_ms / 1000, batch_max=settings.batch_max,
        cache_size=settings.cache_size, reload_interval_s=settings.reload_interval_s, metrics=metrics,
        thread_init=lambda: configure_threads(settings), index_config=settings.index_config(),
        reranker=reranker, rerank_depth=settings.rerank_depth, rerank_weight=settings.rerank_weight,
        fusion=settings.fusion, linker=Linker(settings.corpus_root, settings.source_url_template),
    )


def batched(reranker: Reranker | None, settings: Settings, metrics: Metrics) -> Reranker | None:
    """The cross-encoder shared by concurrent requests through `rerank_workers` encoder threads,
    with the question encoder's window and batch bound (`BatchingReranker`)."""
    if reranker is None or not hasattr(reranker, "score_pairs"):
        return reranker

    def observe(requests: int, pairs: int) -> None:
        metrics.rerank_batch_size.observe(requests)

    return BatchingReranker(reranker, window_s=settings.batch_window_ms / 1000,  # type: ignore[arg-type]
                            max_requests=settings.batch_max, on_batch=observe,
                            workers=settings.rerank_workers or default_workers())


def configure_threads(settings: Settings) -> None:
    """Thread counts of torch and FAISS for the calling thread (see Settings.torch_threads).

    FAISS's OpenMP setting is per thread here (it depends on which libgomp loaded first), so
    the engine's worker threads call this too, as their executors' initializer.
    """
    if settings.torch_threads and "torch" in sys.modules:  # the ONNX question encoder needs no torch
        import torch

        torch.set_num_threads(settings.torch_threads)
    if settings.faiss_threads:
        import faiss

        faiss.omp_set_num_threads(settings.faiss_threads)


def open_feedback(settings: Settings) -> FeedbackStore | None:
    """The answers-and-ratings store in the index directory; None (feedback off, answers still
    served) when it cannot be opened, e.g. on a read-only index volume."""
    try:
        return FeedbackStore.in_index_dir(settings.index_dir, max_answers=settings.feedback_max_answers,
                                          max_ratings=settings.feedback_max_ratings)
    except (OSError, sqlite3.Error) as e:
        logs.event("feedback_unavailable", 40, error=str(e), index_dir=str(settings.index_dir))
        return None


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service; the index and the model load in the background once it starts (see /readyz)."""
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_threads(settings)
        llm = managed_llm(settings)
        if llm is not None:  # before readiness: the first request may already want it
            await llm.start()
        app.state.llm_server = llm
        engine = build_engine(settings, metrics, llm)
        jobs = IngestJobs(engine, settings.index_dir, settings.index_config(), metrics, settings.corpus_root,
                          settings.ingest_max_leaves or None)
        app.state.engine, app.state.jobs = engine, jobs
        app.state.feedback = open_feedback(settings)
        await engine.start()
        jobs.start()
        watcher = CorpusWatcher(engine, settings, metrics) if settings.watch else None
        if watcher is not None:
            watcher.start()
        logs.event("service_started", index_dir=str(settings.index_dir), auth=settings.auth_enabled,
                   answerer=engine.default_answerer, cors=settings.cors_origins)
        try:
            async with session_manager_running(mcp):
                yield
        finally:
            if watcher is not None:
                await watcher.stop()
            await jobs.stop()
            await engine.stop()
            if app.state.feedback is not None:
                app.state.feedback.close()
            if llm is not None:
                await llm.stop()
            logs.event("service_stopped")

    app = FastAPI(
        title="notesrag", version="0.1.0", lifespan=lifespan,
        description="Cited answers from your technical notes: a native API, an OpenAI-compatible "
                    "chat endpoint, search and ingestion.",
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.feedback = None
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    app.state.auth_failures = RateLimiter(settings.auth_failures_per_minute, settings.auth_failure_burst)
    errors.install(app)
    mcp = build_mcp(lambda: app.state.engine, lambda: app.state.feedback, settings)
    app.router.routes.append(Route("/mcp", http_endpoint(mcp, settings)))  # MCP over streamable HTTP
    for module in (ask, chat, search, ingest, health, widget, feedback, documents):
        app.include_router(module.router)
    # the outermost middleware comes last: request ids and timing see everything, CORS headers
    # are added even to the errors of the inner ones
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-ID", "Cache-Control"],
                           expose_headers=["X-Request-ID", "Retry-After"], max_age=600)
    hosts = allowed_hosts(settings)
    if hosts is not None:
        app.add_middleware(HostCheckMiddleware, hosts=hosts)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app


def app_from_env() -> FastAPI:
    """The factory uvicorn workers import (`service.app:app_from_env`)."""
    try:
        settings = get_settings()
    except SettingsError as e:  # one line per problem, and no traceback that shows the values
        raise SystemExit(str(e)) from None
    logs.configure(settings.log_level, settings.log_json)
    return create_app(settings)


class RequestContextMiddleware:
    """A request id for every request (from X-Request-ID or new), its latency by route, one log line."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        rid = given if given and len(given) <= 128 and given.isprintable() else secrets.token_hex(8)
        token = logs.request_id_var.set(rid)
        t0 = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - t0
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.request_seconds.labels(scope["method"], path, str(status)).observe(seconds)
            state = scope.get("state")
            principal = getattr(state.get("principal"), "key_id", None) if isinstance(state, dict) else None
            logs.event("request", method=scope["method"], path=scope["path"], route=path, status=status,
                       ms=round(seconds * 1e3, 2), caller=principal)
            logs.request_id_var.reset(token)


class BodyLimitMiddleware:
    """413 for a body over `max_bytes`, by Content-Length or by counting a chunked one."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None and _header(scope, b"transfer-encoding") is not None:
            # RFC 9112 6.1: a request with both is a smuggling attempt or a broken proxy
            await _send_error(send, 400, "bad_request", "a request must not have both Content-Length "
                                                        "and Transfer-Encoding", close=True)
            return
        if scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        if length is not None:
            if not length.isdigit():
                await _send_error(send, 400, "bad_request", "invalid Content-Length")
                return
            if int(length) > self.max_bytes:
                await self._too_large(send)
                return
        # read the body here (it is small by now) so an oversized chunked body is refused too
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await _send_error(send, 413, "payload_too_large",
                          f"the request body is larger than the limit of {self.max_bytes} bytes")


async def _send_error(send: Send, status: int, code: str, message: str, close: bool = False) -> None:
    response = errors.error_response(status, code, message, {"Connection": "close"} if close else None)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k == name:
            value: str = v.decode("latin-1")
            return value
    return None

