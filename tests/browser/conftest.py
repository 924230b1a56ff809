"""Real-browser fixtures: Debian's chromium driven by Playwright, the real service under uvicorn
on loopback over an index of data/notes built with the real model, and the example portal on
other loopback ports (other origins)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
from api.servers import ServerThread
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from playwright.sync_api import Browser, Page, sync_playwright

from service.app import create_app
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
NOTES = ROOT / "data" / "notes"
PORTAL_DIR = ROOT / "examples" / "portal"
ARTIFACTS = ROOT / "tests" / "artifacts"
QUERY_KEY = "widget-query-key-0123"
# what examples/portal/index.html points at; the portal server below rewrites it
PORTAL_DEFAULT = "http://127.0.0.1:8000"
CHROMIUM = shutil.which("chromium")
SERVICE_LINKS = "https://portal.example/notes/{path_noext}/#{anchor}"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def service_settings(index_dir: Path, **overrides: Any) -> Settings:
    """Explicit values for everything that matters here, whatever NOTESRAG_* says."""
    values: dict[str, Any] = {
        "index_dir": index_dir, "corpus_root": NOTES, "api_keys": "", "cors_origins": "",
        "rate_limit_per_minute": 0, "llm_base_url": None, "abstain_threshold": None,
        "reload_interval_s": 5.0, "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class PortalServer:
    """examples/portal on its own loopback port (its own origin).

    `url(endpoint=..., script=..., key=...)` gives the page with the widget's script and endpoint
    rewritten from 127.0.0.1:8000 to the service under test, and an api-key attribute added.
    """

    def __init__(self, default_endpoint: str | None = None) -> None:
        self.default_endpoint = default_endpoint
        handler = partial(_PortalHandler, self, directory=str(PORTAL_DIR))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.origin = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)

    def url(self, endpoint: str | None = None, *, script: str | None = None, key: str | None = None,
            csp: bool = False) -> str:
        """The page; `csp`: served with a strict Content-Security-Policy (no inline styles)."""
        params = {"endpoint": endpoint or self.default_endpoint or "", "script": script or "", "key": key or "",
                  "csp": "1" if csp else ""}
        return f"{self.origin}/index.html?" + "&".join(f"{k}={v}" for k, v in params.items() if v)

    def __enter__(self) -> PortalServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _PortalHandler(SimpleHTTPRequestHandler):
    def __init__(self, portal: PortalServer, *args: Any, **kwargs: Any) -> None:
        self.portal = portal
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path not in ("/", "/index.html"):
            super().do_GET()
            return
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        endpoint = query.get("endpoint") or self.portal.default_endpoint or PORTAL_DEFAULT
        script = query.get("script") or endpoint
        html = (PORTAL_DIR / "index.html").read_text(encoding="utf-8")
        assert f'src="{PORTAL_DEFAULT}/widget.js"' in html and f'endpoint="{PORTAL_DEFAULT}"' in html
        html = html.replace(f'src="{PORTAL_DEFAULT}/widget.js"', f'src="{script}/widget.js"')
        html = html.replace(f'endpoint="{PORTAL_DEFAULT}"', f'endpoint="{endpoint}"')
        if query.get("key"):
            html = html.replace("<notesrag-chat ", f'<notesrag-chat api-key="{query["key"]}" ', 1)
        body = html.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if query.get("csp"):
            self.send_header("Content-Security-Policy", f"default-src 'self'; script-src 'self' {script}; "
                             f"connect-src {endpoint}; style-src 'self'; img-src 'self' data:")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


# -- a slow OpenAI-compatible LLM, so an answer arrives in many deltas over real time -----------
PASSAGE = re.compile(r"<<<PASSAGE (\d+) (\w+)>>>\n(.*?)\n<<<END PASSAGE \1 \2>>>", re.S)
SLOW_DELTA_S = 0.08


def slow_answer(messages: list[dict[str, Any]]) -> str:
    """The line of passage 1 sharing most words with the question, cited [1]."""
    prompt = messages[-1]["content"]
    found = {int(m.group(1)): m.group(3) for m in PASSAGE.finditer(prompt)}
    if not found:
        return "NOT_FOUND"
    question = set(re.findall(r"\w+", prompt.rsplit("Question:", 1)[-1].lower()))
    lines = [ln.strip("- ").strip() for ln in found[1].split("\n\n", 1)[-1].splitlines() if ln.strip()]
    best = max(lines, key=lambda ln: len(question & set(re.findall(r"\w+", ln.lower()))))
    return f"According to the team's notes, {best} [1]"


def slow_llm_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> Any:
        body = await request.json()
        words = re.findall(r"\S+\s*", slow_answer(body["messages"]))
        if not body.get("stream"):
            return {"id": "slow", "object": "chat.completion", "created": 0, "model": "slow",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(words)},
                                 "finish_reason": "stop"}]}

        async def chunks() -> AsyncIterator[bytes]:
            for w in words:
                chunk = {"id": "slow", "object": "chat.completion.chunk", "created": 0, "model": "slow",
                         "choices": [{"index": 0, "delta": {"content": w}}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
                await asyncio.sleep(SLOW_DELTA_S)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    return app


# -- servers --------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def portal() -> Iterator[PortalServer]:
    """The example portal: the only origin in the services' CORS allowlists."""
    with PortalServer() as p:
        yield p


@pytest.fixture(scope="session")
def foreign_portal() -> Iterator[PortalServer]:
    """The same page on another port: an origin no service allows."""
    with PortalServer() as p:
        yield p


@pytest.fixture(scope="session")
def service(notes_index: Path, portal: PortalServer) -> Iterator[ServerThread]:
    """The service as a portal meets it: API keys required, CORS for the portal only, citations
    linked by the service's URL template (which wins over the page's own)."""
    settings = service_settings(notes_index, api_keys=f"{QUERY_KEY}:query", cors_origins=portal.origin,
                                source_url_template=SERVICE_LINKS)
    with ServerThread(create_app(settings)) as server:
        server.wait_ready()
        yield server


@pytest.fixture(scope="session")
def slow_service(notes_index: Path, portal: PortalServer) -> Iterator[ServerThread]:
    """The service with the LLM answerer over a slow LLM: answers stream word by word."""
    with ServerThread(slow_llm_app()) as llm:
        settings = service_settings(notes_index, cors_origins=portal.origin, llm_base_url=f"{llm.url}/v1")
        with ServerThread(create_app(settings)) as server:
            server.wait_ready()
            yield server


@pytest.fixture(scope="session")
def limited_service(notes_index: Path, portal: PortalServer) -> Iterator[ServerThread]:
    """The service with a rate limit of one question a minute."""
    settings = service_settings(notes_index, cors_origins=portal.origin, rate_limit_per_minute=1,
                                rate_limit_burst=1)
    with ServerThread(create_app(settings)) as server:
        server.wait_ready()
        yield server


# -- the browser ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser(notes_index: Path) -> Iterator[Browser]:
    """Chromium for one module's tests.

    Playwright's sync API keeps an event loop running in this thread while it is started, so
    the index (built with asyncio.run) must exist first, and the browser must be gone before
    later modules run their asyncio tests: hence module scope.
    """
    if CHROMIUM is None:  # `make test` installs it; a browser is never downloaded
        pytest.fail("Debian's chromium is not installed: run `make test` or apt-get install chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page (its own context: no shared cache or storage), 1280x800."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
