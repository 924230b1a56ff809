"""answer_accuracy: whether an answer states one of its question's evidence strings, by hand."""

from __future__ import annotations

import pytest

from eval.gate import FLOORS, failures
from eval.metrics import answer_accuracy, states_evidence

FID = "FID (Fréchet Inception Distance): measures distribution similarity. Lower is better."


def test_the_evidence_inside_the_answer_after_folding() -> None:
    answer = "FID  (Fréchet Inception\nDistance): measures distribution similarity. [1] Lower is better. [2]"
    assert states_evidence(answer, FID)  # white space folded, [n] markers dropped
    assert states_evidence(answer.upper(), FID)  # case folded
    assert not states_evidence("PSNR focuses on pixel-level difference.", FID)


def test_sixty_percent_of_the_distinct_words() -> None:
    evidence = "one two three four five"  # 5 distinct words: 3 are 60%
    assert states_evidence("three, two and one", evidence)
    assert not states_evidence("one and two", evidence)  # 40%
    assert states_evidence("one one one two", "one one two")  # distinct: 2 of 2
    assert states_evidence("a b", "a b c d e", share=0.4) and not states_evidence("a", "a b c", share=0.5)
    with pytest.raises(ValueError, match="evidence must not be empty"):
        states_evidence("x", " [3] ")
    with pytest.raises(ValueError, match=r"share must be in \(0, 1\], got 1.5"):
        states_evidence("x", "x", share=1.5)


def test_answer_accuracy_by_hand() -> None:
    pairs = [
        (FID + " [1]", ["no such words here at all", FID]),  # the second string: states it
        ("", [FID]),  # abstained: states nothing
        ("Higher is better.", [FID]),  # 2 of 10 distinct words
        ("Use dropout [1]", ["Use dropout"]),
    ]
    assert answer_accuracy(pairs) == pytest.approx(2 / 4)
    assert answer_accuracy([]) is None


def test_the_gate_covers_answer_accuracy() -> None:
    assert "answer_accuracy" in FLOORS
    assert failures({**dict.fromkeys(FLOORS, 1.0), "answer_accuracy": 0.5}) == [
        f"answer_accuracy: 0.500 < floor {FLOORS['answer_accuracy']}"]
