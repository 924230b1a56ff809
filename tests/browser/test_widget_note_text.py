"""Note text reaches the widget as text: markup that an HTML note escaped (`&lt;img ...&gt;`)
comes back decoded in answers and quotes, and the widget must show it, never run it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from index import IndexConfig, get_embedder, ingest
from service.app import create_app

from .conftest import QUERY_KEY, PortalServer, ServerThread, service_settings
from .helpers import ask, host, open_portal, open_widget

NOTE = """<html><body>
<h1>Banner markup</h1>
<p>The maintenance banner is written as &lt;img src=x onerror="window.__pwned=1"&gt; in the old template.</p>
<p>Escaping matters: &lt;script&gt;window.__pwned=2&lt;/script&gt; must stay text in every page.</p>
</body></html>
"""
QUESTION = "How is the maintenance banner written in the old template?"


@pytest.fixture(scope="session")
def markup_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = tmp_path_factory.mktemp("markup-notes")
    (corpus / "banner.html").write_text(NOTE, encoding="utf-8")
    index_dir = tmp_path_factory.mktemp("markup-index")
    asyncio.run(ingest([corpus], index_dir, IndexConfig(), embedder=get_embedder(None, "auto")))
    return index_dir


@pytest.fixture(scope="session")
def markup_service(markup_index: Path, portal: PortalServer) -> Iterator[ServerThread]:
    settings = service_settings(markup_index, api_keys=f"{QUERY_KEY}:query", cors_origins=portal.origin)
    with ServerThread(create_app(settings)) as server:
        server.wait_ready()
        yield server


def test_note_markup_is_shown_as_text_and_never_run(markup_index: Path, markup_service: ServerThread,
                                                    page: Page, portal: PortalServer) -> None:
    # the API hands the decoded markup over as it is: rendering it as text is the client's part
    body = httpx.post(markup_service.url + "/v1/ask", json={"question": QUESTION},
                      headers={"Authorization": f"Bearer {QUERY_KEY}"}, timeout=60).json()
    quoted = [c["quote"] for c in body["citations"]] + [body["answer"]]
    assert any("<img src=x onerror=" in q for q in quoted), body

    open_portal(page, portal, markup_service.url, key=QUERY_KEY)
    open_widget(page)
    bot = ask(page, QUESTION)
    expect(bot).to_have_attribute("data-state", "answered")
    for details in bot.locator(".sources details").all():
        details.locator("summary").click()
    shown = bot.evaluate("b => b.textContent")
    assert "<img src=x onerror=" in shown, shown
    # nothing of it became an element, and nothing ran
    assert bot.locator("img, script, [onerror]").count() == 0
    assert host(page).evaluate("h => h.shadowRoot.querySelectorAll('img, script, [onerror]').length") == 0
    assert page.evaluate("() => window.__pwned") is None
