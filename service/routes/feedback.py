"""Ratings of answers: POST /v1/feedback (query scope) and GET /v1/feedback/stats (admin).

Every answer of /v1/ask and /v1/chat/completions goes on record under its `answer_id`; a
rating names that id. A refused request stores nothing.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from typing import Any

from fastapi import APIRouter

from service import logs
from service.deps import AdminCaller, EngineDep, FeedbackDep, QueryCaller, SettingsDep
from service.engine import QAResult
from service.errors import ApiError
from service.feedback import (
    AnswerRecord,
    FeedbackStore,
    UnknownAnswer,
    picked_citation,
    picked_node,
)
from service.routes.common import require_ready
from service.schemas import CitationOut, FeedbackRequest, FeedbackResponse, PickedSource

router = APIRouter(tags=["feedback"])

ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"description": d} for s, d in ((401, "missing or invalid API key"), (404, "unknown answer id"),
                                       (413, "body too large"), (422, "invalid request or comment too long"),
                                       (429, "rate limited"), (503, "feedback storage unavailable"))}


def new_answer_id() -> str:
    return f"ans_{secrets.token_hex(12)}"


async def remember(store: FeedbackStore | None, answer_id: str, question: str, r: QAResult) -> str:
    """Put an answer on record; its id, or "" when it could not be recorded (the answer still goes out)."""
    if store is None:
        return ""
    record = AnswerRecord(answer_id, question, r.answer.text, r.answer.answerable,
                          [CitationOut.of(c).model_dump() for c in r.answer.citations], r.snapshot, time.time())
    try:
        await asyncio.to_thread(store.record_answer, record)
    except sqlite3.Error as e:
        logs.event("answer_not_recorded", 40, error=str(e))
        return ""
    return answer_id


@router.post("/v1/feedback", response_model=FeedbackResponse, responses=ERRORS)
async def feedback(body: FeedbackRequest, store: FeedbackDep, engine: EngineDep, settings: SettingsDep,
                   caller: QueryCaller) -> Any:
    """Rate an answer up or down, optionally with a comment and the source that was the right one
    (one of its citations, or a passage by node id). A second rating of an answer replaces the first."""
    limit = settings.feedback_max_comment_chars
    if body.comment is not None and len(body.comment) > limit:
        raise ApiError(422, "comment_too_long", f"the comment is {len(body.comment)} characters long; "
                       f"the limit is {limit} characters")
    answer = await asyncio.to_thread(store.answer, body.answer_id)
    if answer is None:
        raise ApiError(404, "unknown_answer", f"no answer {body.answer_id!r} is on record")
    source: dict[str, Any] | None = None
    if body.source is not None and body.source.citation is not None:
        try:
            source = picked_citation(answer.citations, body.source.citation)
        except ValueError as e:
            raise ApiError(422, "invalid_request", str(e)) from None
    elif body.source is not None and body.source.node_id is not None:
        node = require_ready(engine).snapshot.tree.by_id.get(body.source.node_id)
        if node is None:
            raise ApiError(422, "invalid_request", f"no passage {body.source.node_id!r} in the served index")
        source = picked_node(node)
    if source is not None:  # stored and shown back as callers see sources (relative to the corpus root)
        source["source"] = engine.linker.source(source["source"], engine.served.snapshot if engine.served else None)
    try:
        rated, replaced = await asyncio.to_thread(store.rate, body.answer_id, body.rating, body.comment, source)
    except UnknownAnswer:  # pruned as one of the oldest since the look-up
        raise ApiError(404, "unknown_answer", f"no answer {body.answer_id!r} is on record") from None
    engine.metrics.feedback.labels(body.rating, answer.snapshot).inc()
    logs.event("feedback", answer_id=body.answer_id, rating=body.rating, replaced=replaced,
               source=source["kind"] if source else None, snapshot=answer.snapshot)
    return FeedbackResponse(answer_id=body.answer_id, rating=body.rating, replaced=replaced,
                            source=PickedSource(**{k: source[k] for k in PickedSource.model_fields})
                            if source else None, rated_at=rated.rated_at)


@router.get("/v1/feedback/stats", responses={401: {"description": "missing or invalid API key"},
                                             403: {"description": "not an admin key"}})
async def feedback_stats(store: FeedbackDep, caller: AdminCaller) -> dict[str, Any]:
    """Ratings in all, by UTC day and by the snapshot that answered: counts and the share of downs."""
    return await asyncio.to_thread(store.stats)
