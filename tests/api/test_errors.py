"""Every error is JSON {"error": {"code", "message"}} with the right status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app

from .conftest import ADMIN_KEY, ORIGIN, QUERY_KEY, auth, client, make_settings, running


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    if code is not None:
        assert body["error"]["code"] == code
    assert "Traceback" not in r.text
    message: str = body["error"]["message"]
    return message


async def test_missing_and_invalid_api_keys_are_401(app: FastAPI) -> None:
    async with client(app) as c:
        r = await c.post("/v1/ask", json={"question": "What is Huber loss?"})
        assert "Bearer" in assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = await c.post("/v1/ask", json={"question": "q"}, headers=auth("not-a-real-key-000"))
        assert_error(r, 401, "unauthorized")
        r = await c.post("/v1/ask", json={"question": "q"}, headers={"Authorization": f"Basic {QUERY_KEY}"})
        assert_error(r, 401, "unauthorized")
        r = await c.get("/v1/search", params={"q": "loss"})
        assert_error(r, 401)


async def test_query_key_cannot_ingest_but_admin_key_can_query(app: FastAPI) -> None:
    async with client(app) as c:
        r = await c.post("/v1/ingest", json={"paths": ["."]}, headers=auth(QUERY_KEY))
        assert "admin" in assert_error(r, 403, "forbidden")
        r = await c.get("/v1/ingest/abc", headers=auth(QUERY_KEY))
        assert_error(r, 403, "forbidden")
        r = await c.post("/v1/ask", json={"question": "What is Huber loss?"}, headers=auth(ADMIN_KEY))
        assert r.status_code == 200


async def test_unknown_route_and_method_are_json(api: httpx.AsyncClient) -> None:
    assert "/v1/nothing" in assert_error(await api.get("/v1/nothing"), 404, "not_found")
    assert_error(await api.get("/v1/ask"), 405, "method_not_allowed")


async def test_unknown_job_is_404(app: FastAPI) -> None:
    async with client(app, **auth(ADMIN_KEY)) as c:
        assert_error(await c.get("/v1/ingest/0123456789abcdef"), 404, "job_not_found")


async def test_invalid_json_is_400(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/ask", content=b'{"question": ', headers={"Content-Type": "application/json"})
    assert_error(r, 400, "invalid_json")


async def test_chat_without_a_final_user_message_is_400(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/chat/completions", json={"messages": [{"role": "assistant", "content": "hi"}]})
    assert "user" in assert_error(r, 400)


@pytest.mark.parametrize("body", [
    {}, {"question": ""}, {"question": 3}, {"question": "q", "top_k": 0}, {"question": "q", "mode": "fuzzy"},
    {"question": "q", "unknown": 1}, {"question": "q", "top_k": 51},
])
async def test_invalid_bodies_are_422(api: httpx.AsyncClient, body: dict) -> None:
    assert_error(await api.post("/v1/ask", json=body), 422)


async def test_question_over_the_limit_is_422_naming_the_limit(api: httpx.AsyncClient) -> None:
    message = assert_error(await api.post("/v1/ask", json={"question": "x" * 301}), 422, "question_too_long")
    assert "300" in message and "301" in message
    r = await api.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "y" * 400}]})
    assert "300" in assert_error(r, 422, "question_too_long")
    assert "300" in assert_error(await api.get("/v1/search", params={"q": "z" * 301}), 422)
    # exactly at the limit is fine
    assert (await api.post("/v1/ask", json={"question": "w" * 300})).status_code == 200


async def test_body_over_the_limit_is_413(api: httpx.AsyncClient) -> None:
    big = {"question": "q", "padding": "x" * 20_000}
    message = assert_error(await api.post("/v1/ask", json=big), 413, "payload_too_large")
    assert str(16 * 1024) in message

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the bytes are counted
        for _ in range(20):
            yield b"x" * 1024

    r = await api.post("/v1/ask", content=chunked(), headers={"Content-Type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "payload_too_large")


async def test_rate_limit_is_429_with_retry_after(index_dir: Path) -> None:
    app = create_app(make_settings(index_dir, rate_limit_per_minute=60, rate_limit_burst=2))
    async with running(app), client(app, **auth()) as c:
        q = {"question": "What is Huber loss?"}
        assert (await c.post("/v1/ask", json=q)).status_code == 200
        assert (await c.post("/v1/ask", json=q)).status_code == 200
        r = await c.post("/v1/ask", json=q)
        assert "60" in assert_error(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) >= 1
        # another key has its own bucket; health checks are not limited
        assert (await c.post("/v1/ask", json=q, headers=auth(ADMIN_KEY))).status_code == 200
        assert (await c.get("/healthz")).status_code == 200


async def test_not_ready_until_an_index_exists(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path / "empty-index"))
    async with running(app, ready=False), client(app, **auth()) as c:
        assert (await c.get("/healthz")).status_code == 200
        r = await c.get("/readyz")
        assert "no index" in assert_error(r, 503, "not_ready")
        assert_error(await c.post("/v1/ask", json={"question": "What is Huber loss?"}), 503, "not_ready")
        assert_error(await c.post("/v1/ask", json={"question": "Huber?", "stream": True}), 503, "not_ready")
        assert_error(await c.get("/v1/search", params={"q": "loss"}), 503, "not_ready")
        r = await c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert_error(r, 503, "not_ready")


async def test_cors_allowlist(api: httpx.AsyncClient) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    r = await api.options("/v1/ask", headers=preflight)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    r = await api.options("/v1/ask", headers={**preflight, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    r = await api.post("/v1/ask", json={"question": "x" * 999}, headers={"Origin": ORIGIN})
    assert r.status_code == 422 and r.headers["access-control-allow-origin"] == ORIGIN
    r = await api.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


async def test_request_id_is_returned_and_logged(api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    import json
    import logging

    from service.logs import JsonFormatter

    with caplog.at_level(logging.INFO, logger="notesrag"):
        r = await api.get("/healthz", headers={"X-Request-ID": "req-abc-123"})
        generated = await api.get("/healthz")
    assert r.headers["x-request-id"] == "req-abc-123"
    assert len(generated.headers["x-request-id"]) == 16
    lines = [json.loads(JsonFormatter().format(rec)) for rec in caplog.records if rec.getMessage() == "request"]
    mine = [line for line in lines if line.get("request_id") == "req-abc-123"]
    assert mine and mine[0]["status"] == 200 and mine[0]["path"] == "/healthz" and "ms" in mine[0]


async def test_snapshot_of_another_model_is_503_naming_both(index_dir: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from index import current_path

    other = tmp_path / "other-index"
    shutil.copytree(index_dir, other)
    manifest_path = current_path(other) / "manifest.json"  # type: ignore[operator]
    manifest = json.loads(manifest_path.read_text())
    manifest["model"] = "some-other-model"
    manifest_path.write_text(json.dumps(manifest))
    app = create_app(make_settings(other))
    async with running(app, ready=False), client(app, **auth(ADMIN_KEY)) as c:
        for _ in range(100):
            r = await c.get("/readyz")
            if "some-other-model" in r.text:
                break
            await asyncio.sleep(0.05)
        message = assert_error(r, 503, "not_ready")
        assert "some-other-model" in message and "all-MiniLM-L6-v2" in message
        assert_error(await c.post("/v1/reload"), 503, "reload_failed")


async def test_reload_is_admin_only(app: FastAPI) -> None:
    async with client(app, **auth(QUERY_KEY)) as c:
        assert_error(await c.post("/v1/reload"), 403, "forbidden")
    async with client(app, **auth(ADMIN_KEY)) as c:
        r = await c.post("/v1/reload")
        assert r.status_code == 200 and r.json()["swapped"] is False and r.json()["snapshot"]
