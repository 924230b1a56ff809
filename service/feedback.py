"""Answer feedback: the answers the service gave, the ratings users gave them, and the export of
ratings as a labelled question set that `notesrag eval --questions` scores.

One SQLite file in the index directory (`feedback.sqlite3`), WAL mode, shared by every worker
process. `synchronous=NORMAL`: a commit is in the WAL file before the call returns, so it
survives the process being killed (SIGKILL); an OS crash or power loss may lose the last ones.
Both tables are bounded: past the limit the oldest rows go first.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from index.store.tree import Node

DB_NAME = "feedback.sqlite3"
Rating = Literal["up", "down"]
RATINGS: tuple[str, ...] = ("up", "down")
EVIDENCE_CHARS = 200  # the longest evidence excerpt taken from a picked passage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    answer_id TEXT PRIMARY KEY,
    answered_at REAL NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    answerable INTEGER NOT NULL,
    citations TEXT NOT NULL,
    snapshot TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ratings (
    answer_id TEXT PRIMARY KEY,
    rating TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    comment TEXT,
    source TEXT,
    rated_at REAL NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    answerable INTEGER NOT NULL,
    citations TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    answered_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ratings_rated_at ON ratings (rated_at);
"""


class UnknownAnswer(LookupError):
    """No answer with this id is on record (never given, or pruned as one of the oldest)."""


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    answer_id: str
    question: str
    answer: str
    answerable: bool
    citations: list[dict[str, Any]]
    snapshot: str
    answered_at: float


@dataclass(frozen=True, slots=True)
class RatingRecord:
    answer: AnswerRecord
    rating: str
    comment: str | None
    source: dict[str, Any] | None  # the passage the user picked as the right one
    rated_at: float


def picked_citation(citations: Sequence[Mapping[str, Any]], n: int) -> dict[str, Any]:
    """The answer's citation `n` as a picked source; ValueError when the answer has none such."""
    for c in citations:
        if c.get("n") == n:
            return {"kind": "citation", "n": n, "node_id": c["node_id"], "source": c["source"],
                    "heading_path": list(c["heading_path"]), "quote": c["quote"]}
    raise ValueError(f"the answer has no citation {n} (it has {len(citations)})")


def picked_node(node: Node) -> dict[str, Any]:
    """A passage of the served snapshot as a picked source, with an evidence excerpt of its text."""
    return {"kind": "passage", "node_id": node.id, "source": node.source,
            "heading_path": list(node.heading_path), "quote": evidence_excerpt(node.text)}


def evidence_excerpt(text: str, limit: int = EVIDENCE_CHARS) -> str:
    """The longest line of `text`, cut to `limit` characters at a word boundary: a short exact
    substring of the passage, which the labelled-set rule (a node containing it is relevant) needs."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ValueError("the passage has no text")
    line = max(lines, key=len)
    if len(line) <= limit:
        return line
    cut = line[:limit]
    space = cut.rfind(" ")
    return cut[:space] if space > limit // 2 else cut


class FeedbackStore:
    """The answers on record and their ratings; thread-safe, one connection per store."""

    def __init__(self, path: Path, max_answers: int = 100_000, max_ratings: int = 100_000) -> None:
        if max_answers < 1 or max_ratings < 1:
            raise ValueError(f"max_answers and max_ratings must be >= 1, got {max_answers}, {max_ratings}")
        self.path = Path(path)
        self.max_answers = max_answers
        self.max_ratings = max_ratings
        self._lock = threading.Lock()
        self._inserts = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    @classmethod
    def in_index_dir(cls, index_dir: Path, **limits: int) -> FeedbackStore:
        return cls(Path(index_dir) / DB_NAME, **limits)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writes -------------------------------------------------------------------------
    def record_answer(self, a: AnswerRecord) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?)",
                (a.answer_id, a.answered_at, a.question, a.answer, int(a.answerable),
                 json.dumps(a.citations, ensure_ascii=False), a.snapshot))
            self._inserts += 1
            if self._inserts % 64 == 1:  # pruning on every insert would cost a scan of the max each time
                self._db.execute("DELETE FROM answers WHERE rowid <= (SELECT MAX(rowid) FROM answers) - ?",
                                 (self.max_answers,))

    def rate(self, answer_id: str, rating: str, comment: str | None = None,
             source: dict[str, Any] | None = None, now: float | None = None) -> tuple[RatingRecord, bool]:
        """Store a rating of an answer on record, replacing an earlier rating of the same answer.

        Returns the rating and whether it replaced one. UnknownAnswer when the id is not on record.
        """
        if rating not in RATINGS:
            raise ValueError(f"rating must be up or down, got {rating!r}")
        now = time.time() if now is None else now
        with self._lock:
            a = self._answer(answer_id)
            if a is None:
                raise UnknownAnswer(answer_id)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                replaced = self._db.execute("SELECT 1 FROM ratings WHERE answer_id = ?",
                                            (answer_id,)).fetchone() is not None
                self._db.execute(
                    "INSERT OR REPLACE INTO ratings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (answer_id, rating, comment, json.dumps(source, ensure_ascii=False) if source else None, now,
                     a.question, a.answer, int(a.answerable), json.dumps(a.citations, ensure_ascii=False),
                     a.snapshot, a.answered_at))
                self._db.execute(
                    "DELETE FROM ratings WHERE answer_id IN (SELECT answer_id FROM ratings ORDER BY rated_at "
                    "LIMIT MAX(0, (SELECT COUNT(*) FROM ratings) - ?))", (self.max_ratings,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return RatingRecord(a, rating, comment, source, now), replaced

    # -- reads --------------------------------------------------------------------------
    def answer(self, answer_id: str) -> AnswerRecord | None:
        with self._lock:
            return self._answer(answer_id)

    def _answer(self, answer_id: str) -> AnswerRecord | None:
        row = self._db.execute("SELECT answer_id, question, answer, answerable, citations, snapshot, answered_at "
                               "FROM answers WHERE answer_id = ?", (answer_id,)).fetchone()
        if row is None:
            return None
        return AnswerRecord(row[0], row[1], row[2], bool(row[3]), json.loads(row[4]), row[5], row[6])

    def ratings(self, since: float | None = None, rating: str | None = None) -> list[RatingRecord]:
        """Ratings, oldest first; `since` a Unix time, `rating` up or down."""
        sql = ("SELECT answer_id, question, answer, answerable, citations, snapshot, answered_at, rating, "
               "comment, source, rated_at FROM ratings WHERE rated_at >= ?")
        args: list[Any] = [since or 0.0]
        if rating is not None:
            sql += " AND rating = ?"
            args.append(rating)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY rated_at, answer_id", args).fetchall()
        return [RatingRecord(AnswerRecord(r[0], r[1], r[2], bool(r[3]), json.loads(r[4]), r[5], r[6]),
                             r[7], r[8], json.loads(r[9]) if r[9] else None, r[10]) for r in rows]

    def stats(self) -> dict[str, Any]:
        """Counts and the share of down ratings: in all, by UTC day of rating, by snapshot answered from."""
        with self._lock:
            total = self._group("SELECT 'all'")
            by_day = self._group("SELECT date(rated_at, 'unixepoch')")
            by_snapshot = self._group("SELECT snapshot")
            answers = self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        empty = {"ratings": 0, "up": 0, "down": 0, "down_rate": None, "with_source": 0, "with_comment": 0}
        return {**total.get("all", empty), "answers_on_record": answers,
                "by_day": [{"day": k, **v} for k, v in sorted(by_day.items())],
                "by_snapshot": [{"snapshot": k, **v} for k, v in sorted(by_snapshot.items())]}

    def _group(self, key_sql: str) -> dict[str, dict[str, Any]]:
        sql = (f"{key_sql} AS k, COUNT(*), SUM(rating = 'up'), SUM(rating = 'down'), SUM(source IS NOT NULL), "
               "SUM(comment IS NOT NULL AND comment != '') FROM ratings GROUP BY k")
        out: dict[str, dict[str, Any]] = {}
        for k, n, up, down, src, com in self._db.execute(sql).fetchall():
            out[str(k)] = {"ratings": n, "up": up, "down": down, "down_rate": round(down / n, 4),
                           "with_source": src, "with_comment": com}
        return out


# -- export as a labelled question set ---------------------------------------------------------
_MARKER = re.compile(r"\s*\[\d+\]")


def labelled_question(r: RatingRecord) -> dict[str, Any] | None:
    """One line of the data/questions.jsonl format from a rating, or None when it labels nothing.

    The evidence is the source the user picked; an "up" without a pick takes the answer's own
    citations (an "up" on an abstention labels the question unanswerable); a "down" without a
    pick says only that the answer was wrong, not where the right one is, so it labels nothing.
    """
    a = r.answer
    if r.source is not None:
        evidence, answerable, reference = [r.source["quote"]], True, r.source["quote"]
    elif r.rating == "up" and a.answerable and a.citations:
        evidence = list(dict.fromkeys(c["quote"] for c in a.citations))
        answerable, reference = True, _MARKER.sub("", a.answer).strip()
    elif r.rating == "up" and not a.answerable:
        evidence, answerable, reference = [], False, ""
    else:
        return None
    return {"id": f"fb-{a.answer_id}", "question": a.question, "answer": reference, "evidence": evidence,
            "answerable": answerable,
            "feedback": {"rating": r.rating, "comment": r.comment, "snapshot": a.snapshot,
                         "answered_at": _iso(a.answered_at), "rated_at": _iso(r.rated_at),
                         "source": r.source and {k: r.source[k] for k in ("kind", "source", "heading_path")},
                         "given_answer": a.answer}}


def export_lines(ratings: Iterable[RatingRecord]) -> tuple[list[str], int]:
    """JSONL lines of the ratings that label a question, and how many labelled nothing."""
    lines, skipped = [], 0
    for r in ratings:
        q = labelled_question(r)
        if q is None:
            skipped += 1
        else:
            lines.append(json.dumps(q, ensure_ascii=False))
    return lines, skipped


def parse_since(value: str) -> float:
    """A Unix time from an ISO date or date-time (UTC when it names no zone)."""
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--since must be an ISO date or date-time like 2026-12-01, got {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
