"""Feedback store benchmark: what putting each answer on record costs a request.

Every /v1/ask and chat answer is one INSERT into feedback.sqlite3 (WAL, synchronous=NORMAL)
before the response goes out. Timed side by side in one run: that insert, the same insert with
synchronous=FULL (an fsync per commit), and a rating (look-up + replace in one transaction).
Run: `python -m bench.feedback [--n 2000]`.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from bench import call_times
from service.feedback import AnswerRecord, FeedbackStore

CITES = [{"n": i, "node_id": f"n{i}", "source": "01-fundamentals-of-deep-learning.md",
          "heading_path": ["Fundamentals of Deep Learning", "Loss"], "start": 0, "end": 80,
          "quote": "Huber Loss: uses L2 loss for small errors, L1 loss for large errors.", "score": 0.8}
         for i in (1, 2, 3)]


def _record(i: int) -> AnswerRecord:
    return AnswerRecord(f"ans_{i:024d}", "What is Huber loss?", "Huber Loss: uses L2 loss for small errors [1]",
                        True, CITES, "snap-20261201", time.time())


def _row(name: str, ms: list[float]) -> str:
    ms = sorted(ms)
    return f"| {name} | {statistics.median(ms):.3f} | {ms[int(len(ms) * 0.99) - 1]:.3f} |"


def run(n: int = 2000) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        store = FeedbackStore(Path(tmp) / "normal.sqlite3")
        normal = call_times(lambda i: store.record_answer(_record(i)), n)
        rate = call_times(lambda i: store.rate(f"ans_{i:024d}", "down" if i % 2 else "up", "comment"), n)
        full = FeedbackStore(Path(tmp) / "full.sqlite3")
        with full._lock:
            full._db.execute("PRAGMA synchronous=FULL")
        fsync = call_times(lambda i: full.record_answer(_record(i)), max(n // 4, 1))
        store.close()
        full.close()
    return ["| operation | median ms | p99 ms |", "| --- | ---: | ---: |",
            _row("record an answer (WAL, synchronous=NORMAL: the service)", normal),
            _row("record an answer (WAL, synchronous=FULL, for comparison)", fsync),
            _row("rate an answer (look-up + replace, one transaction)", rate),
            "", f"{n} answers and ratings (FULL: {max(n // 4, 1)}), sqlite {sqlite3.sqlite_version}."]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    print("\n".join(run(p.parse_args().n)))


if __name__ == "__main__":
    main()
