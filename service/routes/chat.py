"""OpenAI-compatible chat completions: the last user message is the question, earlier turns
steer retrieval of follow-ups, citations ride in an extra `citations` field."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import StreamingResponse

from service.answerers import Turn
from service.deps import AnswerLog, EngineDep, QueryCaller, SettingsDep
from service.engine import QAEngine, QAResult, Query
from service.errors import ApiError
from service.routes.ask import ERRORS
from service.routes.common import (
    SSE_HEADERS,
    call,
    check_question,
    check_top_k,
    guarded,
    require_ready,
    sse,
    wants_cache,
)
from service.routes.feedback import remember
from service.schemas import ChatRequest, CitationOut, ContextOut

router = APIRouter(tags=["openai"])

MAX_HISTORY_TURNS = 8


def _query(body: ChatRequest, engine: QAEngine, settings: Any, cache_control: str | None) -> Query:
    turns = [m for m in body.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user":
        raise ApiError(400, "bad_request", "the last message must come from the user: it is the question")
    question = check_question(turns[-1].text(), settings)
    history = [Turn(m.role, m.text()) for m in turns[:-1] if m.text().strip()][-MAX_HISTORY_TURNS:]
    for t in history:
        if t.role == "user":
            check_question(t.content, settings, "earlier user message")
    if body.answerer is not None and body.answerer not in engine.answerers:
        raise ApiError(422, "invalid_request", f"answerer {body.answerer!r} is not configured on this server")
    return Query(question, check_top_k(body.top_k, settings), body.mode, history,
                 use_cache=wants_cache(cache_control), answerer=body.answerer)


def _extra(r: QAResult, answer_id: str = "") -> dict[str, Any]:
    a = r.answer
    return {
        "citations": [CitationOut.of(c).model_dump() for c in a.citations],
        "notesrag": {"answer_id": answer_id, "answerable": a.answerable, "confidence": round(a.confidence, 4),
                     "low_confidence": a.low_confidence, "snapshot": r.snapshot,
                     "answerer": a.answerer, "reranker": a.reranker, "warnings": list(a.warnings), "cached": r.cached,
                     "citation_support": a.citation_support,
                     "timings": r.timings.as_dict(), "retrieval_query": r.retrieval_query,
                     "contexts": [ContextOut.of(i, h).model_dump() for i, h in enumerate(r.hits, 1)]},
    }


@router.post("/v1/chat/completions", responses=ERRORS)
async def chat_completions(body: ChatRequest, engine: EngineDep, settings: SettingsDep, caller: QueryCaller,
                           log: AnswerLog, cache_control: Annotated[str | None, Header()] = None) -> Any:
    """OpenAI's chat-completions API over the notes; `stream: true` sends `chat.completion.chunk`s
    and `[DONE]`. Extra fields: `citations`, and `notesrag` (answerable, contexts, timings)."""
    query = _query(body, engine, settings, cache_control)
    cid, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())
    if body.stream:
        require_ready(engine)
        return StreamingResponse(guarded(_chunks(engine, query, cid, created, body.model, log), error_event=None),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    r = await call(engine, engine.ask(query))
    answer_id = await remember(log, cid, query.question, r)  # the completion's id is the answer's
    return {
        "id": cid, "object": "chat.completion", "created": created, "model": body.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": r.answer.text},
                     "finish_reason": "stop", "logprobs": None}],
        **_extra(r, answer_id),
    }


async def _chunks(engine: QAEngine, query: Query, cid: str, created: int, model: str,
                  log: Any = None) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        return sse(None, {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                          "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                          **extra})

    yield chunk({"role": "assistant", "content": ""})
    async for kind, value in engine.ask_stream(query):
        if kind == "delta":
            yield chunk({"content": value})
        elif kind == "done":
            yield chunk({}, "stop", **_extra(value, await remember(log, cid, query.question, value)))
    yield b"data: [DONE]\n\n"


@router.get("/v1/models", tags=["openai"])
async def models(caller: QueryCaller) -> dict[str, Any]:
    """The one model this server offers, for clients that list models first."""
    return {"object": "list", "data": [{"id": "notesrag", "object": "model", "created": 0, "owned_by": "notesrag"}]}
