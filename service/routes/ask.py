"""POST /v1/ask: a cited answer, as one JSON body or as Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import Response, StreamingResponse

from index.answer.extractive import Citation
from service.deps import AnswerLog, EngineDep, QueryCaller, SettingsDep
from service.engine import QAResult, Query
from service.errors import ApiError
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
from service.routes.feedback import new_answer_id, remember
from service.schemas import AskRequest, AskResponse, CitationOut, ContextOut

router = APIRouter(tags=["answers"])

ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"description": d} for s, d in ((400, "invalid JSON"), (401, "missing or invalid API key"),
                                       (413, "body too large"), (422, "invalid request or question too long"),
                                       (429, "rate limited"), (503, "no index loaded yet"))}


@router.post("/v1/ask", response_model=AskResponse, responses=ERRORS)
async def ask(body: AskRequest, engine: EngineDep, settings: SettingsDep, caller: QueryCaller, log: AnswerLog,
              cache_control: Annotated[str | None, Header()] = None) -> Any:
    """Answer a question from the notes with citations; `stream: true` sends SSE events
    `contexts`, `citations`, `delta` (several) and `done` (the full response)."""
    query = Query(check_question(body.question, settings), check_top_k(body.top_k, settings), body.mode,
                  use_cache=wants_cache(cache_control), answerer=body.answerer)
    if body.answerer is not None and body.answerer not in engine.answerers:
        raise ApiError(422, "invalid_request", f"answerer {body.answerer!r} is not configured on this server")
    if body.stream:
        require_ready(engine)
        return StreamingResponse(guarded(_events(engine, query, log)), media_type="text/event-stream",
                                 headers=SSE_HEADERS)
    r = await call(engine, engine.ask(query))
    answer_id = await remember(log, new_answer_id(), query.question, r)
    # serialised by pydantic-core straight to JSON: FastAPI would validate the model again
    return Response(AskResponse.of(r, answer_id).model_dump_json(), media_type="application/json")


async def _events(engine: Any, query: Query, log: Any) -> AsyncIterator[bytes]:
    async for kind, value in engine.ask_stream(query):
        if kind == "contexts":
            r: QAResult = value
            yield sse("contexts", {"snapshot": r.snapshot, "contexts": [
                ContextOut.of(i, h).model_dump() for i, h in enumerate(r.hits, 1)]})
        elif kind == "citations":
            cites: list[Citation] = value
            yield sse("citations", {"citations": [CitationOut.of(c).model_dump() for c in cites]})
        elif kind == "delta":
            yield sse("delta", {"text": value})
        else:
            answer_id = await remember(log, new_answer_id(), query.question, value)
            yield sse("done", AskResponse.of(value, answer_id).model_dump())
