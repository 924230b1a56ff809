"""The chat widget in a real chromium: the example portal embeds it from another origin and it
talks to the real service (real index of data/notes, real model) over loopback."""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, Response, expect

from .conftest import QUERY_KEY, PortalServer, ServerThread
from .helpers import (
    ask,
    host,
    last_answer,
    open_portal,
    open_widget,
    record_states,
    shadow_active,
    states,
)

# the service's url (NOTESRAG_SOURCE_URL_TEMPLATE), not the portal's source-url-template
# (https://notes.example.com/{name}#{anchor}), which fills in only when the service sends none
LOSS_LINK = "https://portal.example/notes/01-fundamentals-of-deep-learning/#loss"


def api_requests(page: Page) -> list[Request]:
    seen: list[Request] = []
    page.on("request", lambda r: seen.append(r) if "/v1/" in r.url and r.method == "POST" else None)
    return seen


def test_answer_streams_in_with_a_citation_of_the_loss_section(page: Page, portal: PortalServer,
                                                               service: ServerThread) -> None:
    open_portal(page, portal, service.url, key=QUERY_KEY)
    open_widget(page)
    record_states(page)
    bot = ask(page, "What is Huber loss?")

    expect(bot).to_have_attribute("data-state", "answered")
    expect(bot.locator(".answer")).to_contain_text("L1 loss for large errors")
    seen = states(page)
    shown = [i for i, s in enumerate(seen) if s["state"] == "streaming" and s["text"]]
    done = [i for i, s in enumerate(seen) if s["state"] == "answered"]
    # the text was on screen while the stream was still open, before the final event
    assert shown and done and shown[0] < done[0], seen
    assert "L1 loss for large errors" in seen[shown[-1]]["text"]

    headings = bot.locator(".sources summary .heading").all_text_contents()
    assert any(h.split(" › ")[-1] == "Loss" for h in headings), headings
    loss = bot.locator(".sources details").filter(has=page.locator(".heading", has_text=re.compile(r"› Loss$")))
    expect(loss.first.locator("blockquote")).to_be_hidden()
    loss.first.locator("summary").click()
    expect(loss.first.locator("blockquote")).to_contain_text("L1 loss for large errors")
    expect(loss.first.locator("a.open-source")).to_have_attribute("href", LOSS_LINK)

    # the [n] marker in the answer opens its source
    first = bot.locator(".sources details").first
    first.evaluate("d => { d.open = false; }")
    bot.locator(".answer .ref").first.click()
    expect(first).to_have_js_property("open", True)


def test_answer_arrives_delta_by_delta(page: Page, portal: PortalServer, slow_service: ServerThread) -> None:
    """Over an LLM that sends a word every 80 ms, the answer grows on screen word by word."""
    open_portal(page, portal, slow_service.url)
    open_widget(page)
    record_states(page)
    bot = ask(page, "What is Huber loss?")

    expect(bot).to_have_attribute("data-state", "answered")
    texts = [s["text"] for s in states(page) if s["state"] == "streaming" and s["text"]]
    assert len(texts) >= 5, texts
    for shorter, longer in pairwise(texts):
        assert longer.startswith(shorter) and len(longer) > len(shorter), texts
    assert texts[-1].startswith("According to the team's notes") and "Huber" in texts[-1]
    assert (bot.locator(".sources summary .heading").first.text_content() or "").endswith("› Loss")


def test_follow_up_question_sends_the_conversation(page: Page, portal: PortalServer,
                                                   service: ServerThread) -> None:
    sent = api_requests(page)
    open_portal(page, portal, service.url, key=QUERY_KEY)
    open_widget(page)
    first = ask(page, "What is Huber loss?")
    expect(first).to_have_attribute("data-state", "answered")
    answer = host(page).evaluate("h => h.conversation[1].content")
    second = ask(page, "How does Adam update the parameters?")
    expect(second).to_have_attribute("data-state", re.compile("answered|unanswerable"))

    assert [r.url for r in sent] == [f"{service.url}/v1/ask", f"{service.url}/v1/chat/completions"]
    first_body, second_body = (r.post_data_json or {} for r in sent)
    assert first_body == {"question": "What is Huber loss?", "stream": True}
    assert second_body["stream"] is True
    assert second_body["messages"] == [
        {"role": "user", "content": "What is Huber loss?"},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "How does Adam update the parameters?"},
    ]
    assert "L1 loss" in answer
    assert all(r.headers["authorization"] == f"Bearer {QUERY_KEY}" for r in sent)
    expect(host(page).locator(".msg.user")).to_have_count(2)  # the conversation stays on screen


def test_question_the_notes_do_not_cover_shows_the_no_answer_state(
        page: Page, portal: PortalServer, service: ServerThread, artifacts: Path) -> None:
    open_portal(page, portal, service.url, key=QUERY_KEY)
    open_widget(page)
    bot = ask(page, "How do I bake sourdough bread?")

    expect(bot).to_have_attribute("data-state", "unanswerable")
    expect(bot.locator(".notice-title")).to_have_text("The notes do not cover this")
    expect(bot.locator(".answer")).to_contain_text("No passage in the notes answers this question.")
    expect(bot.locator(".sources")).to_have_count(0)
    page.screenshot(path=artifacts / "widget-no-answer.png")


def test_origin_missing_from_the_cors_allowlist_is_refused(page: Page, foreign_portal: PortalServer,
                                                           portal: PortalServer, service: ServerThread) -> None:
    failed: list[Request] = []
    page.on("requestfailed", lambda r: failed.append(r) if "/v1/" in r.url else None)
    open_portal(page, foreign_portal, service.url, key=QUERY_KEY)
    open_widget(page)
    bot = ask(page, "What is Huber loss?")

    expect(bot).to_have_attribute("data-state", "error")
    expect(bot.locator(".error-text")).to_contain_text(f"Could not reach the notes service at {service.url}")
    expect(bot.locator(".error-text")).to_contain_text("CORS")
    assert [r.url for r in failed] == [f"{service.url}/v1/ask"]
    # the browser refused because the service's preflight answer does not allow this origin
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    refused = httpx.options(f"{service.url}/v1/ask", headers={"Origin": foreign_portal.origin, **preflight})
    allowed = httpx.options(f"{service.url}/v1/ask", headers={"Origin": portal.origin, **preflight})
    assert "access-control-allow-origin" not in refused.headers
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == portal.origin


HOSTILE_CSS = """
html { font-size: 40px !important; }
* { color: red !important; font-size: 40px !important; font-family: "Comic Sans MS", cursive !important;
    line-height: 3 !important; letter-spacing: 4px !important; text-transform: uppercase !important;
    background-color: yellow !important; display: block; }
button { display: none !important; }
details, summary, blockquote, textarea, p, ol, li, a, h2 { display: none !important; }
"""

STYLE_PROBE = """(host) => {
  const root = host.shadowRoot;
  const props = ['color', 'background-color', 'font-size', 'font-family', 'font-weight', 'line-height',
                 'letter-spacing', 'text-transform', 'display', 'visibility'];
  const out = {};
  for (const sel of ['.launcher', '.panel', '.head h2', '.close', '.log', '.msg.user .bubble',
                     '.msg.bot .bubble', '.answer', '.ref', '.sources summary', '.sources .heading',
                     '.sources blockquote', 'textarea', '.send', '.hint']) {
    const el = root.querySelector(sel);
    if (!el) { out[sel] = null; continue; }
    const cs = getComputedStyle(el);
    const r = el.getBoundingClientRect();
    out[sel] = Object.fromEntries(props.map(p => [p, cs.getPropertyValue(p)]));
    out[sel].box = [r.x, r.y, r.width, r.height].map(Math.round);
  }
  return out;
}"""


def test_host_page_css_does_not_change_the_widget(page: Page, portal: PortalServer, service: ServerThread,
                                                  artifacts: Path) -> None:
    open_portal(page, portal, service.url, key=QUERY_KEY)
    dialog = open_widget(page)
    bot = ask(page, "What is Huber loss?")
    expect(bot).to_have_attribute("data-state", "answered")
    bot.locator(".sources summary").first.click()
    page.mouse.move(0, 0)  # no hover effects in the pictures
    before = host(page).evaluate(STYLE_PROBE)
    log_before = dialog.locator(".log").screenshot(animations="disabled")
    composer_before = dialog.locator(".composer").screenshot(animations="disabled")

    page.add_style_tag(content=HOSTILE_CSS)
    assert page.evaluate("getComputedStyle(document.querySelector('h1')).color") == "rgb(255, 0, 0)"
    after = host(page).evaluate(STYLE_PROBE)
    page.screenshot(path=artifacts / "widget-hostile-page.png")

    assert all(before.values()), before
    assert after == before
    assert dialog.locator(".log").screenshot(animations="disabled") == log_before
    assert dialog.locator(".composer").screenshot(animations="disabled") == composer_before
    # and still usable
    expect(bot.locator(".sources blockquote").first).to_be_visible()
    ask(page, "What is LoRA?")


def test_widget_works_under_a_strict_content_security_policy(page: Page, portal: PortalServer,
                                                             service: ServerThread) -> None:
    """No inline style or script is needed: a portal with `style-src 'self'` gets a styled widget."""
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    open_portal(page, portal, service.url, key=QUERY_KEY, csp=True)
    launcher = page.get_by_role("button", name="Ask the notes", exact=True)
    assert launcher.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(11, 122, 92)"  # the portal's accent
    assert launcher.evaluate("b => getComputedStyle(b).position") == "fixed"
    open_widget(page)
    expect(ask(page, "What is Huber loss?")).to_have_attribute("data-state", "answered")
    assert violations == []


def test_stop_aborts_the_stream(page: Page, portal: PortalServer, slow_service: ServerThread) -> None:
    failed: list[Request] = []
    page.on("requestfailed", lambda r: failed.append(r) if "/v1/" in r.url else None)
    open_portal(page, portal, slow_service.url)
    open_widget(page)
    bot = ask(page, "Tell me about the Huber loss", settle=False)
    expect(bot).to_have_attribute("data-state", "streaming")
    stop = page.get_by_role("button", name="Stop the answer")
    expect(stop).to_be_visible()
    stop.click()

    expect(bot).to_have_attribute("data-state", "cancelled")
    expect(bot.locator(".status")).to_contain_text("Stopped")
    partial = bot.locator(".answer").text_content()
    page.wait_for_timeout(600)  # the rest of the answer would have arrived by now
    assert bot.locator(".answer").text_content() == partial
    assert partial and not partial.endswith("[1]")
    assert [(r.url, r.failure) for r in failed] == [(f"{slow_service.url}/v1/ask", "net::ERR_ABORTED")]
    expect(stop).to_be_hidden()
    expect(page.get_by_role("button", name="Send question")).to_be_visible()
    assert shadow_active(page) == "question"  # the focus left the vanished stop button for the input
    assert host(page).evaluate("h => h.conversation") == []  # an aborted answer is no context


def test_keyboard_focus_and_aria(page: Page, portal: PortalServer, service: ServerThread) -> None:
    sent = api_requests(page)
    open_portal(page, portal, service.url, key=QUERY_KEY)
    launcher = page.get_by_role("button", name="Ask the notes", exact=True)
    expect(launcher).to_have_attribute("aria-expanded", "false")
    launcher.focus()
    page.keyboard.press("Enter")

    dialog = page.get_by_role("dialog", name="Ask the notes")
    expect(dialog).to_be_visible()
    assert shadow_active(page) == "question"  # the focus moved to the question box
    expect(page.get_by_role("button", name="Close the chat")).to_have_attribute("aria-expanded", "true")
    log = dialog.get_by_role("log", name="Conversation")
    expect(log).to_have_attribute("aria-live", "polite")
    for name in ("Send question", "Close", "Start a new conversation"):
        expect(dialog.get_by_role("button", name=name, exact=True)).to_be_visible()

    page.keyboard.type("first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    box = dialog.get_by_role("textbox", name="Your question")
    expect(box).to_have_value("first line\nsecond line")
    assert sent == []  # Shift+Enter is a new line, not a question

    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert shadow_active(page) == "launcher"  # the focus went back to the launcher
    expect(launcher).to_have_attribute("aria-expanded", "false")

    page.keyboard.press("Enter")  # the launcher has the focus: open again, the draft is kept
    expect(dialog).to_be_visible()
    expect(box).to_have_value("first line\nsecond line")
    page.keyboard.press("Enter")
    expect(last_answer(page)).to_have_attribute("data-state", re.compile("answered|unanswerable"))
    assert len(sent) == 1 and (sent[0].post_data_json or {})["question"] == "first line\nsecond line"


@pytest.mark.parametrize("key", [None, "not-the-right-key"], ids=["no-key", "wrong-key"])
def test_missing_or_wrong_api_key_is_shown_readably(page: Page, portal: PortalServer, service: ServerThread,
                                                    artifacts: Path, key: str | None) -> None:
    responses: list[Response] = []
    page.on("response", lambda r: responses.append(r) if "/v1/" in r.url else None)
    open_portal(page, portal, service.url, key=key)
    open_widget(page)
    bot = ask(page, "What is Huber loss?")

    expect(bot).to_have_attribute("data-state", "error")
    expect(bot.locator(".notice-title")).to_have_text("Could not get an answer")
    expect(bot.locator(".error-text")).to_contain_text("did not accept this site's API key")
    expect(bot.locator(".error-detail")).to_contain_text("missing API key" if key is None else "invalid API key")
    assert [r.status for r in responses if r.request.method == "POST"] == [401]
    if key is None:
        page.screenshot(path=artifacts / "widget-401.png")


def test_rate_limit_shows_the_wait(page: Page, portal: PortalServer, limited_service: ServerThread) -> None:
    responses: list[Response] = []
    page.on("response", lambda r: responses.append(r) if r.request.method == "POST" else None)
    open_portal(page, portal, limited_service.url)
    open_widget(page)
    expect(ask(page, "What is Huber loss?")).to_have_attribute("data-state", "answered")
    bot = ask(page, "What is LoRA?")

    expect(bot).to_have_attribute("data-state", "error")
    assert [r.status for r in responses] == [200, 429]
    wait = int(responses[1].headers["retry-after"])
    assert 30 <= wait <= 60
    expect(bot.locator(".error-text")).to_contain_text(f"Too many questions at once. Please try again in {wait} seconds.")


def test_unreachable_service_is_shown_readably(page: Page, portal: PortalServer, service: ServerThread) -> None:
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens there
    open_portal(page, portal, closed, script=service.url)
    open_widget(page)
    bot = ask(page, "What is Huber loss?")
    expect(bot).to_have_attribute("data-state", "error")
    expect(bot.locator(".error-text")).to_contain_text(f"Could not reach the notes service at {closed}")


def test_demo_page_talks_to_its_own_origin(page: Page, service: ServerThread, artifacts: Path) -> None:
    sent = api_requests(page)
    page.goto(service.url + "/")
    page.screenshot(path=artifacts / "demo-closed.png")
    page.get_by_label("paste a key").fill(QUERY_KEY)
    page.get_by_role("button", name="What is Huber loss?").click()
    expect(page.get_by_role("dialog", name="Ask the notes")).to_be_visible()
    expect(last_answer(page)).to_have_attribute("data-state", "answered")
    assert [r.url for r in sent] == [f"{service.url}/v1/ask"]
    page.mouse.move(0, 0)
    page.screenshot(path=artifacts / "demo-open.png")


@pytest.mark.parametrize(("name", "width", "height"), [("desktop", 1280, 800), ("360", 360, 740)])
def test_screenshots_of_the_open_widget(browser: Browser, portal: PortalServer, service: ServerThread,
                                        artifacts: Path, name: str, width: int, height: int) -> None:
    mobile: dict[str, Any] = {"is_mobile": True, "has_touch": True, "device_scale_factor": 2} if width < 500 else {}
    context = browser.new_context(viewport={"width": width, "height": height}, **mobile)
    try:
        page = context.new_page()
        open_portal(page, portal, service.url, key=QUERY_KEY)
        dialog = open_widget(page)
        bot = ask(page, "What is Huber loss?")
        expect(bot).to_have_attribute("data-state", "answered")
        bot.locator(".sources summary").first.click()
        page.mouse.move(0, 0)
        page.screenshot(path=artifacts / f"widget-{name}.png")

        box = dialog.bounding_box()
        assert box is not None
        if width < 500:  # a phone: the panel is the whole screen
            assert (box["x"], box["y"], box["width"], box["height"]) == (0, 0, width, height)
        else:
            assert box["x"] + box["width"] <= width - 10 and box["y"] >= 10 and box["width"] <= 420
        # nothing sticks out sideways, and the question box is on screen
        log = dialog.locator(".log")
        assert log.evaluate("l => l.scrollWidth <= l.clientWidth")
        send = dialog.get_by_role("button", name="Send question").bounding_box()
        assert send is not None and send["x"] + send["width"] <= width and send["y"] + send["height"] <= height
    finally:
        context.close()


SSE_SPLIT_ANYWHERE = """async () => {
  const {readSSE} = customElements.get('notesrag-chat').utils;
  const text = 'event: delta\\r\\ndata: {"text":"h\\u00e9llo [1]"}\\r\\n\\r\\n: a comment\\n\\n' +
               'event: done\\ndata: line one\\ndata: line two\\n\\ndata: no blank line at the end';
  const bytes = new TextEncoder().encode(text);
  // one byte a chunk: every boundary falls somewhere awkward (inside \\r\\n, inside the UTF-8 of é)
  const body = new ReadableStream({start(c) { for (const b of bytes) c.enqueue(new Uint8Array([b])); c.close(); }});
  const out = [];
  for await (const ev of readSSE(body)) out.push(ev);
  return out;
}"""

SOURCE_URLS = """() => {
  const {sourceUrl, citationUrl} = customElements.get('notesrag-chat').utils;
  const root = '/srv/notes/';
  const c = {source: '/srv/notes/dl/01 basics.md', heading_path: ['Basics', 'How to reduce overfitting?'],
             start: 10, end: 20, node_id: 'abc'};
  return [
    sourceUrl('https://docs.example/{path}#L{line}', root, {...c, line: 12}),
    sourceUrl('https://docs.example/{path}#L{line}', root, c),
    sourceUrl('https://docs.example/{name}#{anchor}', root, c),
    sourceUrl('https://docs.example/{line}/x', root, c),
    sourceUrl('javascript:alert(1)//{name}', root, c),
    sourceUrl(null, root, c),
    // the service's own url wins; one that is not http(s) falls back to the template
    citationUrl('https://docs.example/{name}', root, {...c, url: 'https://portal.example/dl/01-basics/#x'}),
    citationUrl('https://docs.example/{name}', root, {...c, url: 'javascript:alert(1)'}),
    citationUrl(null, root, {...c, url: null}),
    // the service's anchor, lines and page fill the template's placeholders
    sourceUrl('https://docs.example/{path_noext}/#{anchor}', root, {...c, anchor: 'how-to-reduce-overfitting-1'}),
    sourceUrl('https://docs.example/{path}#L{line_start}-L{line_end}', root, {...c, line_start: 3, line_end: 5}),
    sourceUrl('https://docs.example/{name}#page={page}', root, {...c, page: 2}),
  ];
}"""


def test_stream_parser_and_source_links(page: Page, portal: PortalServer, service: ServerThread) -> None:
    open_portal(page, portal, service.url)
    assert page.evaluate(SSE_SPLIT_ANYWHERE) == [
        {"event": "delta", "data": '{"text":"héllo [1]"}'},
        {"event": "done", "data": "line one\nline two"},
        {"event": "message", "data": "no blank line at the end"},
    ]
    assert page.evaluate(SOURCE_URLS) == [
        "https://docs.example/dl/01%20basics.md#L12",
        "https://docs.example/dl/01%20basics.md",  # no line from the service: no fragment
        "https://docs.example/01%20basics.md#how-to-reduce-overfitting",
        None,  # a missing value outside the fragment: no link
        None,  # only http(s) links
        None,
        "https://portal.example/dl/01-basics/#x",
        "https://docs.example/01%20basics.md",
        None,
        "https://docs.example/dl/01%20basics/#how-to-reduce-overfitting-1",
        "https://docs.example/dl/01%20basics.md#L3-L5",
        "https://docs.example/01%20basics.md#page=2",
    ]
    retry = page.evaluate("""() => {
      const {retryAfterSeconds} = customElements.get('notesrag-chat').utils;
      return [retryAfterSeconds('120'), retryAfterSeconds(new Date(Date.now() + 30500).toUTCString()),
              retryAfterSeconds(null)];
    }""")
    assert retry[0] == 120 and 29 <= retry[1] <= 31 and retry[2] is None
