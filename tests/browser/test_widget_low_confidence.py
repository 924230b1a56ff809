"""An answer under the service's low-confidence threshold shows a note in the widget, on the native
stream (a first question) and on the chat stream (a follow-up); a confident one shows none. The
services run with NOTESRAG_LOW_CONFIDENCE=0.99 (the note is certain for answers the cross-encoder
is not sure of) and =0 (no answer is flagged)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from service.app import create_app

from .conftest import PortalServer, ServerThread, service_settings
from .helpers import ask, host, open_portal, open_widget

FIRST = "What are the common GAN metrics?"
FOLLOW_UP = "What is Huber loss?"
NOTE = "Low confidence: the notes may not answer this exactly. Check the sources below."


def colors(note: Locator) -> list[str]:
    """The note's text and background colours."""
    got: list[str] = note.evaluate("n => [getComputedStyle(n).color, getComputedStyle(n).backgroundColor]")
    return got


def threshold_service(index: Path, portal: PortalServer, value: str) -> Iterator[ServerThread]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NOTESRAG_LOW_CONFIDENCE", value)  # read from the environment, as at a real start
        settings = service_settings(index, cors_origins=portal.origin)
    assert settings.low_confidence == float(value)
    with ServerThread(create_app(settings)) as server:
        server.wait_ready()
        yield server


@pytest.fixture(scope="module")
def strict_service(notes_index: Path, portal: PortalServer) -> Iterator[ServerThread]:
    yield from threshold_service(notes_index, portal, "0.99")


@pytest.fixture(scope="module")
def unflagged_service(notes_index: Path, portal: PortalServer) -> Iterator[ServerThread]:
    yield from threshold_service(notes_index, portal, "0")


def test_a_low_confidence_answer_shows_a_note_above_it(page: Page, portal: PortalServer,
                                                       strict_service: ServerThread, artifacts: Path) -> None:
    open_portal(page, portal, strict_service.url)
    open_widget(page)
    for question in (FIRST, FOLLOW_UP):  # /v1/ask, then /v1/chat/completions with the first turn
        bot = ask(page, question)
        expect(bot).to_have_attribute("data-state", "low-confidence")
        note = bot.get_by_role("note")
        expect(note).to_have_text(NOTE)
        expect(note).to_be_visible()
        # the answer and its sources are shown as for any answer, under the note
        expect(bot.locator(".answer .ref").first).to_be_visible()
        assert bot.locator(".sources li").count() >= 1
        assert bot.evaluate("b => b.querySelector('.bubble').firstElementChild.className") == "confidence-note"
        # in the warning colours, distinct from the answer's own text
        assert colors(note) == ["rgb(122, 77, 0)", "rgb(255, 246, 214)"]
    # a portal themes it like the rest of the widget
    host(page).evaluate("h => h.style.setProperty('--notesrag-warn', 'rgb(1, 2, 3)')")
    assert colors(bot.get_by_role("note"))[0] == "rgb(1, 2, 3)"
    host(page).evaluate("h => h.style.removeProperty('--notesrag-warn')")
    bot.screenshot(path=str(artifacts / "widget-low-confidence.png"))
    page.screenshot(path=str(artifacts / "widget-low-confidence-page.png"))


def test_a_confident_answer_shows_no_note(page: Page, portal: PortalServer,
                                          unflagged_service: ServerThread, artifacts: Path) -> None:
    open_portal(page, portal, unflagged_service.url)
    open_widget(page)
    for question in (FIRST, FOLLOW_UP):
        bot = ask(page, question)
        expect(bot).to_have_attribute("data-state", "answered")
        expect(bot.locator(".confidence-note")).to_have_count(0)
        expect(bot.locator(".answer")).not_to_have_text(re.compile("Low confidence"))
    bot.screenshot(path=str(artifacts / "widget-confident.png"))
