"""An extractive answer that quotes a list or a diagram is shown with the quote's lines, not run
together on one line as the service's answer text has them."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

from .conftest import QUERY_KEY, PortalServer, ServerThread
from .helpers import ask, host, open_portal, open_widget

DISPLAY = """([text, cites]) => customElements.get('notesrag-chat').utils.displayText(text, cites)"""
LIST = "- Use dropout\n- Use normalization\n- Use regularization."


def display(page: Page, text: str, cites: list[dict[str, Any]]) -> str:
    shown: str = page.evaluate(DISPLAY, [text, cites])
    return shown


def test_display_text_gives_a_quoted_list_its_lines_and_leaves_the_rest(page: Page, portal: PortalServer,
                                                                         service: ServerThread) -> None:
    open_portal(page, portal, service.url, key=QUERY_KEY)
    flat = "- Use dropout - Use normalization - Use regularization. [1]"
    assert display(page, flat, [{"n": 1, "quote": LIST}]) == LIST + " [1]"
    # a line before it and one after: each part starts its own line after the list
    two = f"Three ways: [2] {flat} Or stop early. [3]"
    cites = [{"n": 1, "quote": LIST}, {"n": 2, "quote": "Three ways:"}, {"n": 3, "quote": "Or stop early."}]
    assert display(page, two, cites) == f"Three ways: [2]\n{LIST} [1]\nOr stop early. [3]"
    # words that are not the quote (an LLM's answer) are shown as sent
    llm = "Use dropout and normalization [1]."
    assert display(page, llm, [{"n": 1, "quote": LIST}]) == llm


def test_a_list_answer_is_shown_one_item_a_line(page: Page, portal: PortalServer, service: ServerThread) -> None:
    open_portal(page, portal, service.url, key=QUERY_KEY)
    open_widget(page)
    bot = ask(page, "How do I reduce overfitting?")
    expect(bot).to_have_attribute("data-state", "answered")
    answer = host(page).evaluate("h => h.conversation[1].content")  # the service's text, kept for follow-ups
    assert "\n" not in answer and answer.startswith("- Use dropout - Use normalization"), answer
    lines = bot.locator(".answer").inner_text().splitlines()
    assert lines[:2] == ["- Use dropout", "- Use normalization"], lines
    assert all(line.startswith("- ") for line in lines[1:]), lines
    # nothing is lost: the same words and markers as the service sent
    shown = " ".join(" ".join(lines).split())
    assert shown == " ".join(answer.replace("[1]", "1").split())
