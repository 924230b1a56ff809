"""GET /v1/search: ranked passages for a query, without an answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from service.deps import EngineDep, QueryCaller, SettingsDep
from service.engine import Query as EngineQuery
from service.routes.ask import ERRORS
from service.routes.common import call, check_question, check_top_k
from service.schemas import ContextOut, Mode, SearchResponse

router = APIRouter(tags=["answers"])


@router.get("/v1/search", response_model=SearchResponse, responses=ERRORS)
async def search(engine: EngineDep, settings: SettingsDep, caller: QueryCaller,
                 q: Annotated[str, Query(min_length=1, description="the query")],
                 k: Annotated[int | None, Query(ge=1, description="number of passages")] = None,
                 mode: Mode = "hybrid",
                 merge: Annotated[bool, Query(description="auto-merge children into their parent")] = True) -> Response:
    """The passages retrieval ranks highest for `q`, best first."""
    query = EngineQuery(check_question(q, settings, "query"), check_top_k(k, settings), mode)
    hits, version, timings = await call(engine, engine.search(query, merge=merge))
    body = SearchResponse(query=q, mode=mode, snapshot=version, timings=timings.as_dict(),
                          hits=[ContextOut.of(i, h) for i, h in enumerate(hits, 1)])
    return Response(body.model_dump_json(), media_type="application/json")
