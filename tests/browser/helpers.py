"""Driving the widget in a page: open it, ask, and record what the answer looked like over time."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Locator, Page, expect

from .conftest import PortalServer

SETTLED = re.compile(r"^(answered|low-confidence|unanswerable|error|cancelled)$")

# Records the last answer's (state, text) at every change inside the widget's shadow root. The
# widget yields a frame after each delta, so every delta shows up here as its own state.
RECORD_STATES = """(host) => {
  const root = host.shadowRoot;
  window.__states = [];
  const snap = () => {
    const bots = root.querySelectorAll('.msg.bot');
    const last = bots[bots.length - 1];
    if (!last) return;
    const s = {n: bots.length, state: last.dataset.state, text: last.querySelector('.answer').textContent};
    const prev = window.__states[window.__states.length - 1];
    if (!prev || prev.n !== s.n || prev.state !== s.state || prev.text !== s.text) window.__states.push(s);
  };
  new MutationObserver(snap).observe(root, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def open_portal(page: Page, portal: PortalServer, endpoint: str, *, key: str | None = None,
                script: str | None = None, csp: bool = False) -> None:
    page.goto(portal.url(endpoint, key=key, script=script, csp=csp))
    page.wait_for_function("!!customElements.get('notesrag-chat')")


def host(page: Page) -> Locator:
    return page.locator("notesrag-chat")


def open_widget(page: Page) -> Locator:
    """Click the launcher; the dialog."""
    page.get_by_role("button", name="Ask the notes", exact=True).click()
    dialog = page.get_by_role("dialog", name="Ask the notes")
    expect(dialog).to_be_visible()
    return dialog


def record_states(page: Page) -> None:
    host(page).evaluate(RECORD_STATES)


def states(page: Page) -> list[dict[str, Any]]:
    recorded: list[dict[str, Any]] = page.evaluate("window.__states")
    return recorded


def last_answer(page: Page) -> Locator:
    return host(page).locator(".msg.bot").last


def ask(page: Page, question: str, *, settle: bool = True) -> Locator:
    """Type `question`, press Enter; the answer's message (settled unless `settle` is false)."""
    before = host(page).locator(".msg.bot").count()
    box = page.get_by_role("textbox", name="Your question")
    box.fill(question)
    box.press("Enter")
    expect(host(page).locator(".msg.bot")).to_have_count(before + 1)
    bot = host(page).locator(".msg.bot").nth(before)
    if settle:
        expect(bot).to_have_attribute("data-state", SETTLED)
    return bot


def shadow_active(page: Page) -> str:
    """The class of the focused element inside the widget ('' when the focus is elsewhere)."""
    active: str = page.evaluate("""() => {
      const h = document.querySelector('notesrag-chat');
      const a = document.activeElement === h ? h.shadowRoot.activeElement : null;
      return a ? a.className : '';
    }""")
    return active
