"""Thumbs up/down in the widget, by keyboard, in a real chromium against the real service; the
down rating with the right source picked from a search is exported and scored by `notesrag eval`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from eval.cli import main as eval_main

from .conftest import NOTES, QUERY_KEY, ROOT, PortalServer, ServerThread
from .helpers import ask, open_portal, open_widget

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def feedback_posts(page: Page) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    page.on("request", lambda r: seen.append(json.loads(r.post_data or "{}"))
            if r.url.endswith("/v1/feedback") and r.method == "POST" else None)
    return seen


def active(page: Page) -> dict[str, str]:
    """Tag, type and aria-label of the focused element inside the widget."""
    found: dict[str, str] = page.evaluate("""() => {
      const a = document.querySelector('notesrag-chat').shadowRoot.activeElement;
      return a ? {tag: a.tagName, type: a.type || '', label: a.getAttribute('aria-label') || ''} : {};
    }""")
    return found


def test_thumbs_up_is_sent_and_pressed(page: Page, portal: PortalServer, service: ServerThread) -> None:
    posts = feedback_posts(page)
    open_portal(page, portal, service.url, key=QUERY_KEY)
    open_widget(page)
    bot = ask(page, "What does LoRA do?")
    up = bot.get_by_role("button", name="Helpful", exact=True)
    up.focus()
    page.keyboard.press("Enter")
    expect(bot.locator(".feedback > .fb-status")).to_have_text("Thanks for the feedback.")
    expect(up).to_have_attribute("aria-pressed", "true")
    expect(bot.get_by_role("button", name="Not helpful")).to_have_attribute("aria-pressed", "false")
    assert [p["rating"] for p in posts] == ["up"] and posts[0]["answer_id"].startswith("ans_")


def test_down_rating_with_a_searched_source_is_exported_and_scored(
        page: Page, portal: PortalServer, service: ServerThread, notes_index: Path, tmp_path: Path,
        artifacts: Path) -> None:
    posts = feedback_posts(page)
    open_portal(page, portal, service.url, key=QUERY_KEY)
    open_widget(page)
    bot = ask(page, "What is Huber loss?")
    expect(bot).to_have_attribute("data-state", "answered")
    bot.screenshot(path=str(artifacts / "widget-feedback-buttons.png"))

    # all by keyboard: "Not helpful", then the picker takes the focus
    bot.get_by_role("button", name="Not helpful").focus()
    page.keyboard.press("Enter")
    picker = bot.locator(".fb-pick")
    expect(picker).to_be_visible()
    expect(picker.get_by_role("group", name="Which source was the right one?")).to_be_visible()
    assert active(page)["type"] == "radio"  # the first citation
    search = picker.get_by_role("searchbox", name="Search the notes for the right source")
    search.focus()
    page.keyboard.type("Huber loss")
    page.keyboard.press("Enter")
    hits = picker.locator(".fb-hits input[type=radio]")
    expect(hits.first).to_be_visible()
    assert active(page)["type"] == "radio"  # the first hit
    page.keyboard.press("Space")
    expect(hits.first).to_be_checked()
    picker.get_by_role("textbox", name="Comment (optional)").fill("the answer missed the Loss section")
    bot.screenshot(path=str(artifacts / "widget-feedback-picker.png"))
    picker.get_by_role("button", name="Send").focus()
    page.keyboard.press("Enter")
    expect(bot.locator(".feedback > .fb-status")).to_have_text("Thanks: the right source is noted.")
    expect(picker).to_have_count(0)
    assert active(page)["label"] == "Not helpful"  # the focus goes back where it was
    bot.screenshot(path=str(artifacts / "widget-feedback-sent.png"))

    assert [p["rating"] for p in posts] == ["down", "down"]
    answer_id = posts[0]["answer_id"]
    assert posts[1]["source"]["node_id"] and posts[1]["comment"] == "the answer missed the Loss section"

    # the rating from the browser becomes a labelled question that notesrag eval scores
    questions, report = tmp_path / "feedback.jsonl", tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "service.cli", "feedback", "export", "--index-dir",
                           str(notes_index), "--rating", "down", "--out", str(questions)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = {q["id"]: q for q in map(json.loads, questions.read_text(encoding="utf-8").splitlines())}
    mine = rows[f"fb-{answer_id}"]
    assert mine["question"] == "What is Huber loss?" and mine["feedback"]["comment"] == posts[1]["comment"]
    # `notesrag eval` in this process, as tests/api/test_feedback.py runs it (the CLI's own wiring is
    # tested in tests/integration/test_eval_cli.py), in a thread of its own: Playwright's sync API
    # keeps an event loop running in this one
    with ThreadPoolExecutor(1) as pool:
        code = pool.submit(eval_main, ["--questions", str(questions), "--corpus", str(NOTES), "--url", service.url,
                                       "--api-key", QUERY_KEY, "--modes", "hybrid", "--k", "5", "--no-ragas",
                                       "--no-progress", "--out", str(report)]).result(timeout=300)
    assert code == 0
    scored = {row["qid"] for row in map(json.loads, (report / "per_question.jsonl").read_text().splitlines())}
    assert f"fb-{answer_id}" in scored
    assert json.loads((report / "report.json").read_text())["runs"][0]["metrics"]["hit@5"] == 1.0
