"""The labelled set `data/questions.jsonl` is valid and covers every section of the notes."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from eval.datasets import load_jsonl
from eval.metrics import normalize_text

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = ROOT / "data" / "questions.jsonl"
NOTES = ROOT / "data" / "notes"
HEADING = re.compile(r"^(#{1,6})\s+(.*\S)\s*$")


@dataclass(frozen=True)
class Section:
    file: str
    lineno: int
    level: int
    title: str
    own_lines: tuple[int, ...]  # body lines up to the next heading of any level
    subtree_lines: tuple[int, ...]  # body lines up to the next heading of this level or above


def _sections(path: Path) -> list[Section]:
    lines = path.read_text(encoding="utf-8").splitlines()
    headings = [
        (i, len(m.group(1)), m.group(2))
        for i, line in enumerate(lines, start=1)
        if (m := HEADING.match(line))
    ]
    # Non-empty body lines (1-based), i.e. neither headings nor blank.
    body = [i for i, line in enumerate(lines, start=1) if line.strip() and not HEADING.match(line)]
    sections = []
    for n, (lineno, level, title) in enumerate(headings):
        later = headings[n + 1 :]
        own_end = later[0][0] if later else len(lines) + 1
        sub_end = next((h[0] for h in later if h[1] <= level), len(lines) + 1)
        own = tuple(i for i in body if lineno < i < own_end)
        subtree = tuple(i for i in body if lineno < i < sub_end)
        sections.append(Section(path.name, lineno, level, title, own, subtree))
    return sections


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def note_lines() -> dict[str, list[str]]:
    return {p.name: p.read_text(encoding="utf-8").splitlines() for p in sorted(NOTES.glob("*.md"))}


def _evidence_lines(evidence: str, note_lines: dict[str, list[str]]) -> set[tuple[str, int]]:
    """(file, line number) of every non-heading line holding `evidence`."""
    needle = normalize_text(evidence)
    return {
        (name, i)
        for name, lines in note_lines.items()
        for i, line in enumerate(lines, start=1)
        if not HEADING.match(line) and needle in normalize_text(line)
    }


def test_loads_with_the_dataset_loader() -> None:
    dataset = load_jsonl(QUESTIONS, NOTES)
    assert len(dataset.questions) >= 80
    assert len(dataset.unanswerable) >= 12
    assert all(q.relevant_docs for q in dataset.answerable)


def test_fields_and_unique_ids(rows: list[dict]) -> None:
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))
    questions = [normalize_text(r["question"]) for r in rows]
    assert len(questions) == len(set(questions)), "a question is asked twice"
    for r in rows:
        assert set(r) == {"id", "question", "answer", "evidence", "answerable"}, r["id"]
        assert isinstance(r["answerable"], bool)
        if r["answerable"]:
            assert r["evidence"], r["id"]
            assert r["answer"].strip(), r["id"]
        else:
            assert r["evidence"] == [] and r["answer"] == "", r["id"]


def test_sizes(rows: list[dict]) -> None:
    assert len(rows) >= 80
    assert sum(not r["answerable"] for r in rows) >= 12
    assert sum(len(r["evidence"]) >= 2 for r in rows) >= 10, "too few two-passage questions"


def test_canonical_questions_present(rows: list[dict]) -> None:
    asked = {r["question"] for r in rows if r["answerable"]}
    assert {"What is Huber loss?", "What makes LightGBM efficient?"} <= asked


def test_evidence_lies_within_one_body_line(
    rows: list[dict], note_lines: dict[str, list[str]]
) -> None:
    for r in rows:
        for ev in r["evidence"]:
            assert len(ev.split()) >= 3 or len(ev) >= 15, f"{r['id']}: too short: {ev!r}"
            found = _evidence_lines(ev, note_lines)
            assert found, f"{r['id']}: not in a body line: {ev!r}"
            assert len(found) == 1, f"{r['id']}: evidence not specific, in {sorted(found)}"


def test_every_section_is_covered(rows: list[dict], note_lines: dict[str, list[str]]) -> None:
    covered: set[tuple[str, int]] = set()
    for r in rows:
        for ev in r["evidence"]:
            covered |= _evidence_lines(ev, note_lines)
    sections = [s for p in sorted(NOTES.glob("*.md")) for s in _sections(p)]
    assert len(sections) >= 30
    missing = []
    for s in sections:
        # A section with text of its own needs a question on that text; a heading that
        # only groups subsections is covered through them.
        lines = s.own_lines or s.subtree_lines
        if not any((s.file, i) in covered for i in lines):
            missing.append(f"{s.file}:{s.lineno} {s.title}")
    assert not missing, f"sections without a question: {missing}"
