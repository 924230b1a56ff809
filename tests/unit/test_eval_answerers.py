"""`notesrag eval --answerer`: runs per answerer, and citation support in the metrics."""

from __future__ import annotations

import pytest

from eval.datasets import Dataset, LabelledQuestion
from eval.runner import (
    EvalError,
    Outcome,
    RunSpec,
    parse_answerers,
    score_outcomes,
    with_answerers,
)


def test_answerers_multiply_the_runs_and_name_the_llm_ones() -> None:
    specs = with_answerers([RunSpec("hybrid", "hybrid", False), RunSpec("bm25", "bm25", False)],
                           parse_answerers("extractive, llm"))
    assert [(s.name, s.answerer) for s in specs] == [
        ("hybrid", "extractive"), ("hybrid/llm", "llm"), ("bm25", "extractive"), ("bm25/llm", "llm")]
    assert specs[1].config()["answerer"] == "llm" and "answerer" not in specs[0].config()
    assert parse_answerers("llm,llm") == ["llm"]
    with pytest.raises(EvalError, match="--answerer takes extractive and/or llm"):
        parse_answerers("gpt")


def test_citation_support_is_the_mean_over_answered_questions() -> None:
    qs = tuple(LabelledQuestion(f"q{i}", f"question {i}?", "an answer", ("evidence",)) for i in range(3))
    dataset = Dataset("t", qs, "evidence")

    def outcome(qid: str, answered: bool, support: float | None) -> Outcome:
        return Outcome(qid, [], [], "an answer" if answered else "", answered, 0.5, "an answer",
                       0.01, citation_support=support)

    # q2 abstained: its support (none) does not count; (1.0 + 0.5) / 2
    metrics = score_outcomes(dataset, [outcome("q0", True, 1.0), outcome("q1", True, 0.5),
                                       outcome("q2", False, None)], k=5)
    assert metrics["citation_support"] == pytest.approx(0.75)
    assert score_outcomes(dataset, [outcome("q0", False, None)], k=5)["citation_support"] is None
