"""Shared fixtures: the real packaged model, a real index of data/notes built once per session,
apps driven through httpx's ASGI transport, and real uvicorn servers on loopback."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx
import pytest
from fastapi import FastAPI

from index import get_embedder
from index.models.embedder import SentenceTransformerEmbedder
from service.app import create_app
from service.feedback import DB_NAME as FEEDBACK_DB
from service.jobs import JOURNAL
from service.settings import Settings

from .llm_stub import StubState, make_app
from .servers import ServerThread

ROOT = Path(__file__).resolve().parents[2]
NOTES = ROOT / "data" / "notes"
QUERY_KEY = "query-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"
ORIGIN = "https://docs.example.com"


def make_settings(index_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "index_dir": index_dir, "corpus_root": NOTES, "reload_interval_s": 0.2,
        "api_keys": f"{QUERY_KEY}:query,{ADMIN_KEY}:admin", "cors_origins": ORIGIN,
        "rate_limit_per_minute": 0, "max_question_chars": 300, "max_body_bytes": 16 * 1024,
        "llm_base_url": None, "abstain_threshold": None,
        "auth_failure_burst": 10_000,  # many tests send wrong keys; test_hardening checks the throttle
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def auth(key: str = QUERY_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    # the same cache key as the service's get_embedder(settings.model, settings.device)
    return get_embedder(None, "auto")


# what a service keeps in its index directory beside the snapshots: never copied with them
SERVICE_STATE = shutil.ignore_patterns(f"{FEEDBACK_DB}*", JOURNAL, ".lock", ".tmp-*")


def copy_index(src: Path, dst: Path) -> Path:
    """A copy of the index in `src` (its snapshots and CURRENT), without the feedback, job journal
    or lock a service left there. Snapshots name their sources by absolute path, so the copy
    serves the same corpus as the original."""
    shutil.copytree(src, dst, ignore=SERVICE_STATE)
    return dst


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory: pytest.TempPathFactory, notes_index: Path) -> Path:
    """data/notes indexed with the real model: a copy of the session's `notes_index` (one ingest
    for the whole suite), so the services of these tests keep their feedback and jobs apart."""
    return copy_index(notes_index, tmp_path_factory.mktemp("index") / "index")


async def wait_until(predicate: Any, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running(app: FastAPI, ready: bool = True) -> AsyncIterator[FastAPI]:
    """Run the app's lifespan (ASGITransport does not), waiting for the index to load."""
    async with app.router.lifespan_context(app):
        if ready:
            await wait_until(lambda: app.state.engine.ready, what="the index to load")
        yield app


def client(app: FastAPI, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://testserver", headers=headers)


@pytest.fixture(scope="session")
async def app(index_dir: Path) -> AsyncIterator[FastAPI]:
    """The service with API keys, CORS and a 300-character question limit; no rate limit."""
    async with running(create_app(make_settings(index_dir))) as a:
        yield a


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app, **auth()) as c:
        yield c


@pytest.fixture(scope="session")
def live_server(index_dir: Path) -> Iterator[ServerThread]:
    """The service under a real uvicorn on loopback."""
    with ServerThread(create_app(make_settings(index_dir))) as server:
        server.wait_ready()
        yield server


@pytest.fixture(scope="session")
def llm_stub() -> Iterator[tuple[ServerThread, StubState]]:
    state = StubState()
    with ServerThread(make_app(state)) as server:
        yield server, state


@pytest.fixture
def stub_state(llm_stub: tuple[ServerThread, StubState]) -> Iterator[StubState]:
    _, state = llm_stub
    state.mode, state.requests = "echo", []
    yield state
    state.mode = "echo"


LOSS_FILE = "01-fundamentals-of-deep-learning.md"


def cited_line(citation: dict[str, Any], root: Path = NOTES) -> str:
    """The line of the cited file (its source is relative to the corpus root) that holds the cited
    span, checking that the quote is there."""
    assert not Path(citation["source"]).is_absolute(), citation["source"]
    text = (root / citation["source"]).read_text(encoding="utf-8")
    start, end = citation["start"], citation["end"]
    assert text[start:end] == citation["quote"], "the quote is not at the cited span"
    return text[text.rfind("\n", 0, start) + 1:text.find("\n", end) if "\n" in text[end:] else len(text)]


def assert_cites_huber(citation: dict[str, Any]) -> None:
    """The citation quotes the Huber loss line of the Loss section (the answerer may quote all of
    the line or only part of it)."""
    assert Path(citation["source"]).name == LOSS_FILE
    assert citation["heading_path"][-1] == "Loss"
    assert "Huber" in cited_line(citation)
