"""Calibrate the citation-support threshold (`index.answer.citations`) on a labelled set.

`python -m eval.citation_calibration [--questions FILE] [--corpus DIR]` prints the threshold
with the best balanced accuracy and how well the shipped `SUPPORT_THRESHOLD` does. Pairs:
each answerable question's reference answer against the passage around its first evidence
string (supported), and against the passages of two other questions' evidence, the nearest
one in the same file whose passage lacks this evidence and one half the set away
(unsupported). A passage is `WINDOW` characters around the evidence, about a merged
512-token node of the default chunking.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from eval.datasets import Dataset, DatasetError, LabelledQuestion, load_jsonl, read_corpus_dir
from eval.metrics import normalize_text
from index.answer.citations import SUPPORT_THRESHOLD, calibrate_threshold, support

WINDOW = 1200


@dataclass(frozen=True, slots=True)
class Calibration:
    threshold: float
    balanced_accuracy: float
    shipped_accuracy: float  # balanced accuracy of SUPPORT_THRESHOLD on the same pairs
    supported: tuple[float, ...]
    unsupported: tuple[float, ...]


def evidence_passage(texts: dict[str, str], evidence: str, window: int = WINDOW) -> tuple[str, int, str] | None:
    """(source, position, passage): `window` characters of the collapsed source text around
    the evidence; None when no source holds it."""
    needle = normalize_text(evidence)
    for source, text in texts.items():
        flat = normalize_text(text)
        at = flat.find(needle)
        if at >= 0:
            lo = max(0, at + len(needle) // 2 - window // 2)
            return source, at, flat[lo:lo + window]
    return None


def pairs(dataset: Dataset, texts: dict[str, str]) -> tuple[list[float], list[float]]:
    """Support scores of the supported and of the unsupported (answer, passage) pairs."""
    located: list[tuple[LabelledQuestion, str, int, str]] = []
    for q in dataset.answerable:
        if not q.evidence or not q.answer.strip():
            continue
        found = evidence_passage(texts, q.evidence[0])
        if found is not None:
            located.append((q, *found))
    pos: list[float] = []
    neg: list[float] = []
    n = len(located)
    for i, (q, source, at, passage) in enumerate(located):
        pos.append(support(q.answer, passage))
        holds = [normalize_text(e) for e in q.evidence]
        others = [(abs(o_at - at), o_passage) for j, (_, o_source, o_at, o_passage) in enumerate(located)
                  if j != i and o_source == source and not any(e in o_passage for e in holds)]
        if others:
            neg.append(support(q.answer, min(others, key=lambda x: x[0])[1]))
        far = located[(i + n // 2) % n][3]
        if n > 1 and not any(e in far for e in holds):
            neg.append(support(q.answer, far))
    return pos, neg


def calibrate(questions: Path, corpus: Path) -> Calibration:
    dataset = load_jsonl(questions, corpus)
    texts = read_corpus_dir(corpus)
    pos, neg = pairs(dataset, texts)
    threshold, accuracy = calibrate_threshold(pos, neg)
    shipped = (sum(s >= SUPPORT_THRESHOLD for s in pos) / len(pos)
               + sum(s < SUPPORT_THRESHOLD for s in neg) / len(neg)) / 2
    return Calibration(threshold, accuracy, round(shipped, 4), tuple(pos), tuple(neg))


def main(argv: Sequence[str] | None = None) -> int:
    root = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(prog="python -m eval.citation_calibration", description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=Path, default=root / "data" / "questions.jsonl")
    p.add_argument("--corpus", type=Path, default=root / "data" / "notes")
    args = p.parse_args(argv)
    try:
        c = calibrate(args.questions, args.corpus)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"pairs: {len(c.supported)} supported, {len(c.unsupported)} unsupported")
    print(f"best threshold {c.threshold:.4f}: balanced accuracy {c.balanced_accuracy:.4f}")
    print(f"shipped SUPPORT_THRESHOLD {SUPPORT_THRESHOLD}: balanced accuracy {c.shipped_accuracy:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
