"""Citation checks for generated answers: each sentence must cite a passage that supports it.

A sentence is supported when it carries at least one `[n]` naming a given passage and its
lexical support in one of the passages it names reaches a threshold. Support is the share of
the sentence's content words (lower-cased, stop words dropped, stemmed: BM25's tokens) that
occur in the passage: a sentence that only restates a passage scores 1, one that brings
words the passage never uses scores low. It is a cheap, explainable filter, not an entailment
check: a sentence that recombines the passage's own words into a false claim passes.

`SUPPORT_THRESHOLD` is calibrated on the labelled set (`python -m eval.citation_calibration`):
each reference answer against the passage holding its evidence (supported) and against the
evidence passages of other questions (not supported); the threshold with the best balanced
accuracy.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from index.store.lexical import tokenize
from index.store.sentences import split_sentences

# Calibrated by `python -m eval.citation_calibration` on data/questions.jsonl (see eval/README.md).
SUPPORT_THRESHOLD = 0.87

_MARKER = re.compile(r"\[(\d{1,3})\]")
_MARKERS_AROUND = re.compile(r"\s*(?:\[\d{1,3}\]\s*)+")
_LEADING_MARKERS = re.compile(r"(?:\[\d{1,3}\]\s*)+")


def support(sentence: str, passage: str) -> float:
    """Share of the sentence's content words that occur in the passage, in [0, 1]; 0 when the
    sentence has none (it states nothing checkable)."""
    words = set(tokenize(_MARKERS_AROUND.sub(" ", sentence)))
    if not words:
        return 0.0
    return len(words & set(tokenize(passage))) / len(words)


@dataclass(frozen=True, slots=True)
class SentenceCheck:
    """One sentence of an answer: where it is, what it cites and how well that supports it."""

    text: str
    start: int
    end: int
    cited: tuple[int, ...]  # passage numbers (1-based) that exist among the passages
    support: float  # the best support among the cited passages; 0 when none is cited
    supported: bool

    @property
    def reason(self) -> str:
        if self.supported:
            return "supported"
        if not self.cited:
            return "cites no passage"
        return f"support {self.support:.2f} in [{']['.join(map(str, self.cited))}]"


def answer_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans of an answer, each with the [n] markers written after its full stop."""
    spans = split_sentences(text)
    out: list[tuple[int, int]] = []
    for a, b in spans:
        lead = _LEADING_MARKERS.match(text, a)
        if lead and out:  # "... loss. [1] The next ..." : [1] belongs to the sentence before
            out[-1] = (out[-1][0], a + len(lead.group(0).rstrip()))
            a = lead.end()
        if b > a and any(ch.isalnum() for ch in _MARKERS_AROUND.sub("", text[a:b])):
            out.append((a, b))
    return out


def check_sentences(text: str, passages: Sequence[str],
                    threshold: float = SUPPORT_THRESHOLD) -> list[SentenceCheck]:
    """Each sentence of `text` checked against the passages its markers name ([1] = passages[0])."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    checks = []
    for a, b in answer_sentences(text):
        sentence = text[a:b]
        cited = tuple(dict.fromkeys(int(m) for m in _MARKER.findall(sentence)
                                    if 1 <= int(m) <= len(passages)))
        best = max((support(sentence, passages[n - 1]) for n in cited), default=0.0)
        checks.append(SentenceCheck(sentence, a, b, cited, round(best, 4),
                                    bool(cited) and best >= threshold))
    return checks


def citation_support(checks: Sequence[SentenceCheck]) -> float | None:
    """Share of the sentences that are supported; None for an answer with no sentence."""
    if not checks:
        return None
    return sum(c.supported for c in checks) / len(checks)


def supported_text(text: str, checks: Sequence[SentenceCheck]) -> str:
    """`text` with its unsupported sentences cut out."""
    kept = [text[c.start:c.end] for c in checks if c.supported]
    return " ".join(kept)


def calibrate_threshold(supported: Sequence[float], unsupported: Sequence[float]) -> tuple[float, float]:
    """(threshold, balanced accuracy): the cut between support scores of supported and
    unsupported pairs that classifies them best, halfway between two neighbouring scores."""
    if not supported or not unsupported:
        raise ValueError("calibration needs both supported and unsupported examples")
    values = sorted(set(supported) | set(unsupported))
    cuts = [values[0]] + [(x + y) / 2 for x, y in itertools.pairwise(values)] + [values[-1] + 1e-9]
    best = (0.0, -1.0)
    for t in cuts:
        tpr = sum(s >= t for s in supported) / len(supported)
        tnr = sum(s < t for s in unsupported) / len(unsupported)
        acc = (tpr + tnr) / 2
        if acc > best[1] + 1e-12:
            best = (min(1.0, t), acc)
    return round(best[0], 4), round(best[1], 4)
