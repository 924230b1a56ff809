"""The feedback store on a real SQLite file: WAL, replace-on-repeat, bounds, SIGKILL, export rules."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from index.store.tree import Node
from service.feedback import (
    AnswerRecord,
    FeedbackStore,
    RatingRecord,
    UnknownAnswer,
    evidence_excerpt,
    export_lines,
    labelled_question,
    parse_since,
    picked_citation,
    picked_node,
)

ROOT = Path(__file__).resolve().parents[2]
CITES = [{"n": 1, "node_id": "n1", "source": "a.md", "heading_path": ["A", "Loss"], "start": 0, "end": 10,
          "quote": "Huber loss: MSE near 0, MAE far away", "score": 0.9}]


def answer(i: int | str = 1, answerable: bool = True) -> AnswerRecord:
    return AnswerRecord(f"ans_{i}", f"question {i}?", "Huber loss: MSE near 0, MAE far away [1]" if answerable
                        else "The notes do not cover this.", answerable, CITES if answerable else [], "snap-1",
                        1_700_000_000.0)


def test_wal_mode_and_a_repeated_rating_replaces_the_first(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "fb.sqlite3")
    store.record_answer(answer())
    first, replaced = store.rate("ans_1", "up", now=1_700_000_100.0)
    assert not replaced and first.rating == "up"
    _, replaced = store.rate("ans_1", "down", "wrong section", picked_citation(CITES, 1), now=1_700_000_200.0)
    assert replaced
    rows = store.ratings()
    assert len(rows) == 1 and rows[0].rating == "down" and rows[0].comment == "wrong section"
    assert rows[0].source is not None and rows[0].source["quote"] == CITES[0]["quote"]
    assert rows[0].answer.question == "question 1?" and rows[0].answer.snapshot == "snap-1"
    store.close()
    with sqlite3.connect(tmp_path / "fb.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unknown_answer_stores_nothing(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "fb.sqlite3")
    with pytest.raises(UnknownAnswer):
        store.rate("ans_missing", "up")
    with pytest.raises(ValueError, match="rating must be up or down, got 'meh'"):
        store.rate("ans_missing", "meh")
    assert store.ratings() == [] and store.stats()["ratings"] == 0


def test_tables_are_bounded_oldest_first_out(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "fb.sqlite3", max_answers=5, max_ratings=3)
    for i in range(5):
        store.record_answer(answer(i))
    for i in range(5):
        store.rate(f"ans_{i}", "up", now=1_700_000_000.0 + i)
    assert [r.answer.answer_id for r in store.ratings()] == ["ans_2", "ans_3", "ans_4"]
    for i in range(5, 70):  # pruning runs every 64 inserts
        store.record_answer(answer(i))
    assert store.answer("ans_0") is None and store.answer("ans_69") is not None
    assert store.stats()["answers_on_record"] <= 5 + 64


def test_stats_by_day_and_snapshot(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "fb.sqlite3")
    day = parse_since("2026-11-30")
    for i, (rating, t) in enumerate([("up", day + 10), ("down", day + 20), ("down", day + 86_400 + 5)]):
        store.record_answer(answer(i))
        store.rate(f"ans_{i}", rating, "x" if i == 1 else None, now=t)
    s = store.stats()
    assert (s["ratings"], s["up"], s["down"], s["down_rate"], s["with_comment"]) == (3, 1, 2, round(2 / 3, 4), 1)
    assert [(d["day"], d["up"], d["down"]) for d in s["by_day"]] == [("2026-11-30", 1, 1), ("2026-12-01", 0, 1)]
    assert s["by_snapshot"] == [{"snapshot": "snap-1", "ratings": 3, "up": 1, "down": 2,
                                 "down_rate": 0.6667, "with_source": 0, "with_comment": 1}]
    assert [r.rated_at for r in store.ratings(since=parse_since("2026-12-01"))] == [day + 86_400 + 5]
    assert [r.rating for r in store.ratings(rating="up")] == ["up"]


_WRITER = """
import sys, time
from service.feedback import AnswerRecord, FeedbackStore
store = FeedbackStore(sys.argv[1])
for i in range(50):
    store.record_answer(AnswerRecord(f"ans_{i}", f"q{i}?", "a", True, [], "snap-1", 1.0))
    store.rate(f"ans_{i}", "down" if i % 2 else "up", f"comment {i}")
print("written", flush=True)
time.sleep(60)
"""


def test_ratings_survive_sigkill_of_the_writer(tmp_path: Path) -> None:
    db = tmp_path / "fb.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(db)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
        os.kill(proc.pid, signal.SIGKILL)  # no close, no checkpoint: the rows are only in the WAL
    finally:
        proc.kill()
        proc.wait(10)
    assert (tmp_path / "fb.sqlite3-wal").stat().st_size > 0
    rows = FeedbackStore(db).ratings()
    assert len(rows) == 50 and rows[49].comment == "comment 49" and rows[49].rating == "down"


def test_export_takes_evidence_from_the_picked_source() -> None:
    node = Node("n9", 2, "## Loss\n\nHuber loss is quadratic for small errors and linear for large ones.\n",
                "b.md", ("A", "Loss"), 0, 70, None)
    down = RatingRecord(answer(1), "down", "no", picked_node(node), 1_700_000_500.0)
    q = labelled_question(down)
    assert q is not None
    assert q["evidence"] == ["Huber loss is quadratic for small errors and linear for large ones."]
    assert q["answerable"] is True and q["id"] == "fb-ans_1" and q["question"] == "question 1?"
    assert q["feedback"]["rating"] == "down" and q["feedback"]["source"]["source"] == "b.md"
    up = labelled_question(RatingRecord(answer(2), "up", None, None, 1.0))
    assert up is not None and up["evidence"] == [CITES[0]["quote"]] and up["answer"] == CITES[0]["quote"]
    abstained = labelled_question(RatingRecord(answer(3, answerable=False), "up", None, None, 1.0))
    assert abstained is not None and abstained["answerable"] is False and abstained["evidence"] == []
    lines, skipped = export_lines([down, RatingRecord(answer(4), "down", "bad", None, 1.0)])
    assert skipped == 1 and [json.loads(x)["id"] for x in lines] == ["fb-ans_1"]


def test_evidence_excerpt_is_a_short_substring() -> None:
    text = "short\n" + "word " * 100 + "\nend"
    ex = evidence_excerpt(text, limit=42)
    assert len(ex) <= 42 and ex in text and not ex.endswith(" ")
    with pytest.raises(ValueError, match="no text"):
        evidence_excerpt("  \n ")
    with pytest.raises(ValueError, match="the answer has no citation 2 \\(it has 1\\)"):
        picked_citation(CITES, 2)
    with pytest.raises(ValueError, match="--since must be an ISO date"):
        parse_since("yesterday")


def test_two_stores_on_one_file_share_answers_and_ratings(tmp_path: Path) -> None:
    """Worker processes each open the file: an answer one recorded can be rated through another."""
    a, b = FeedbackStore(tmp_path / "fb.sqlite3"), FeedbackStore(tmp_path / "fb.sqlite3")
    a.record_answer(answer(7))
    b.rate("ans_7", "down", "from the other worker")
    assert [r.comment for r in a.ratings()] == ["from the other worker"]
