"""ragas metrics on hand-made samples: values worked out by hand, and no network without an LLM."""

from __future__ import annotations

import hashlib
import socket

import numpy as np
import pytest

from eval.ragas_metrics import LLMConfig, RagasSample, RagasScorer, contains_either


def _encode(texts: list[str]) -> np.ndarray:
    """Hashed bag of words, L2-normalised: equal texts get equal vectors, others differ."""
    out = np.zeros((len(texts), 64), np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().split():
            out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1.0
        out[row] /= max(float(np.linalg.norm(out[row])), 1e-9)
    return out


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network call attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_contains_either() -> None:
    assert contains_either("A  long\nChunk of text", "chunk OF")
    assert contains_either("bar", "foo bar baz")
    assert not contains_either("foo", "bar")
    assert not contains_either("", "bar")


def test_non_llm_metrics_by_hand(no_network: None) -> None:
    scorer = RagasScorer(_encode)
    scores = scorer.score([
        # retrieved: relevant, not, relevant -> average precision (1/1 + 2/3) / 2;
        # references: "bar" found, "zzz" not -> recall 1/2
        RagasSample("q?", "the cat sat", ["foo bar baz", "nothing", "xx BAR yy"],
                    reference="the cat sat", reference_contexts=["bar", "zzz"]),
        # an abstention: ROUGE 0; no reference contexts, so no context metrics
        RagasSample("q2?", "", ["foo"], reference="a dog ran"),
        # unanswerable: no reference, counted in nothing here
        RagasSample("q3?", "something", ["foo"]),
    ])
    assert scores["context_precision"] == pytest.approx((1 + 2 / 3) / 2)
    assert scores["context_recall"] == pytest.approx(0.5)
    assert scores["rouge_l"] == pytest.approx((1.0 + 0.0) / 2)
    # identical texts have cosine 1; "" vs "a dog ran" share no word: cosine 0
    assert scores["semantic_similarity"] == pytest.approx(0.5, abs=1e-6)
    assert "faithfulness" not in scores and "answer_relevancy" not in scores
    assert any("need an LLM judge" in note for note in scorer.notes())


def test_rouge_l_partial_overlap(no_network: None) -> None:
    # LCS of "the cat sat on the mat" and "the cat lay on the mat" is 5 tokens: P = R = 5/6
    scores = RagasScorer(_encode).score(
        [RagasSample("q", "the cat lay on the mat", [], reference="the cat sat on the mat")])
    assert scores["rouge_l"] == pytest.approx(5 / 6)
    assert scores["context_precision"] is None  # nothing to judge


def test_llm_config_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTESRAG_LLM_BASE_URL", raising=False)
    assert LLMConfig.from_env() is None
    monkeypatch.setenv("NOTESRAG_LLM_BASE_URL", "http://127.0.0.1:8001/v1")
    monkeypatch.setenv("NOTESRAG_LLM_MODEL", "judge")
    cfg = LLMConfig.from_env()
    assert cfg is not None and (cfg.base_url, cfg.model, cfg.api_key) == (
        "http://127.0.0.1:8001/v1", "judge", None)


def test_llm_metrics_report_an_unreachable_judge() -> None:
    # Port 9 (discard) on loopback refuses the connection: the scorer records the failure
    # and leaves the LLM metrics empty instead of stopping the evaluation.
    scorer = RagasScorer(_encode, LLMConfig("http://127.0.0.1:9/v1", timeout_s=2.0))
    scores = scorer.score([RagasSample("What is X?", "X is a thing.", ["X is a thing."],
                                       reference="a thing", reference_contexts=["X is a thing"])])
    assert scores["faithfulness"] is None and scores["answer_relevancy"] is None
    assert scores["context_recall"] == 1.0
    assert set(scorer.llm_failures) == {"faithfulness", "answer_relevancy"}
    assert any("some samples failed" in note for note in scorer.notes())
