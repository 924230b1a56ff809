"""Fuzzing the HTTP API from its own OpenAPI schema (schemathesis) against a real uvicorn on
loopback: every route, valid and invalid requests, a bounded number of each. No response is a
5xx, every error is the JSON error shape, and every 200 JSON body matches the schema."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance
from schemathesis.specs.openapi.schemas import OpenApiSchema

from index import IndexConfig, ingest
from index.models.embedder import SentenceTransformerEmbedder
from service.app import create_app

from .conftest import ADMIN_KEY, NOTES, QUERY_KEY, ServerThread, make_settings

# every route of the app, read from its schema (building the app loads nothing)
OPERATIONS = [(method.upper(), path) for path, item in create_app(make_settings(Path("unused"))).openapi()["paths"].items()
              for method in item]
EXAMPLES = 25
CALLERS = {"admin": {"Authorization": f"Bearer {ADMIN_KEY}"}, "query": {"Authorization": f"Bearer {QUERY_KEY}"},
           "anonymous": {}}


@pytest.fixture(scope="module")
async def fuzz_index(tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder) -> tuple[Path, Path]:
    """Two notes of the corpus in their own root and index: ingest jobs the fuzzer starts are quick
    and touch nothing else."""
    root = tmp_path_factory.mktemp("fuzz") / "notes"
    root.mkdir()
    for name in ("01-fundamentals-of-deep-learning.md", "06-rag.md"):
        shutil.copy(NOTES / name, root / name)
    index_dir = root.parent / "index"
    await ingest([root], index_dir, IndexConfig(), embedder=embedder)
    return root, index_dir


@pytest.fixture(scope="module")
def fuzz_server(fuzz_index: tuple[Path, Path]) -> Iterator[ServerThread]:
    root, index_dir = fuzz_index
    with ServerThread(create_app(make_settings(index_dir, corpus_root=root))) as server:
        server.wait_ready()
        yield server


@pytest.fixture(scope="module")
def schema(fuzz_server: ServerThread) -> OpenApiSchema:
    return schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")


def content_type(headers: Any) -> str:
    value = headers.get("content-type") or headers.get("Content-Type") or ""
    return str(value[0] if isinstance(value, list) else value)  # schemathesis keeps a list per header


def assert_well_formed(status: int, headers: Any, text: str, where: str) -> None:
    assert status < 500, f"{where}: {status} {text[:500]}"
    if status >= 400:
        assert content_type(headers).startswith("application/json"), f"{where}: {status} {text[:300]}"
        body = json.loads(text)
        assert isinstance(body, dict) and set(body) == {"error"}, f"{where}: {text[:300]}"
        error = body["error"]
        assert set(error) == {"code", "message"}, f"{where}: {text[:300]}"
        assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["code"]
        assert "Traceback" not in text


def test_the_schema_lists_every_route(schema: OpenApiSchema) -> None:
    found = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    assert found == set(OPERATIONS) and len(OPERATIONS) >= 10


@pytest.mark.parametrize("method, path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_fuzz_operation(schema: OpenApiSchema, fuzz_server: ServerThread, method: str, path: str) -> None:
    operation = schema[path][method]
    cases = st.one_of(operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
                      operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))

    statuses: list[int] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=cases, caller=st.sampled_from(sorted(CALLERS)))
    def check(case: Any, caller: str) -> None:
        response = case.call(base_url=fuzz_server.url, headers=CALLERS[caller], timeout=30)
        statuses.append(response.status_code)
        where = f"{method} {path} as {caller}: {case.as_curl_command()}"
        assert_well_formed(response.status_code, response.headers, response.text, where)
        if response.status_code == 200 and content_type(response.headers).startswith("application/json"):
            case.validate_response(response, checks=[response_schema_conformance])

    check()
    assert statuses  # (an operation without inputs has a few distinct requests; the others, EXAMPLES)


# Found by hand: JSON can carry lone surrogates ("\ud800"), which no file name, tokenizer or
# response encoder accepts; each was a 500 before.
HOSTILE = [
    ("/v1/ingest", b'{"paths": ["\\ud800"]}', 422),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\\ud800"}]}', 422),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "a\\udfff"}]}]}', 422),
    ("/v1/chat/completions", b'{"model": "\\ud800", "messages": [{"role": "user", "content": "What is RAG?"}]}', 422),
    ("/v1/chat/completions", b'{"model": "\\ud800", "stream": true, "messages": [{"role": "user", "content": "q"}]}', 422),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\\udc00?"}, {"role": "user", "content": "q"}]}', 422),
    ("/v1/ask", b'{"question": "\\ud83d\\ude00 \\udfff"}', 422),
    ("/v1/ask", b'{"question": "x", "top_k": 1e308}', 422),
    ("/v1/ask", b'"\\ud800"', 422),
    ("/v1/ingest", b'{"paths": ["' + b"a" * 5000 + b'"]}', 403),
    ("/v1/feedback", b'{"answer_id": "ans_\\ud800", "rating": "up"}', 422),
    ("/v1/feedback", b'{"answer_id": "ans_x", "rating": "up", "comment": "\\udfff"}', 422),
    ("/v1/feedback", b'{"answer_id": "ans_x", "rating": "down", "source": {"node_id": "\\ud800"}}', 422),
]


@pytest.mark.parametrize("path, body, status", HOSTILE, ids=[f"{p} {b[:40]!r}" for p, b, _ in HOSTILE])
def test_hostile_json_is_refused_in_the_error_shape(fuzz_server: ServerThread, path: str, body: bytes,
                                                     status: int) -> None:
    r = httpx.post(fuzz_server.url + path, content=body, timeout=30,
                   headers={"Content-Type": "application/json", **CALLERS["admin"]})
    assert r.status_code == status, r.text
    assert_well_formed(r.status_code, r.headers, r.text, path)
