"""NOTESRAG_LOW_CONFIDENCE: parsed from the environment, checked at start, and handed to the answerer."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from index.answer.extractive import DEFAULT_LOW_CONFIDENCE
from service.answerers import ExtractiveAnswerer
from service.app import build_answerers
from service.settings import Settings, SettingsError, describe, get_settings


def from_env(monkeypatch: pytest.MonkeyPatch, value: str | None) -> Settings:
    if value is None:
        monkeypatch.delenv("NOTESRAG_LOW_CONFIDENCE", raising=False)
    else:
        monkeypatch.setenv("NOTESRAG_LOW_CONFIDENCE", value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_the_default_is_the_answer_code_s_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    assert from_env(monkeypatch, None).low_confidence == DEFAULT_LOW_CONFIDENCE == 0.5


@pytest.mark.parametrize(("value", "expected"), [("0", 0.0), ("0.99", 0.99), ("1", 1.0), (" 0.3 ", 0.3)])
def test_values_in_the_unit_interval_are_read(monkeypatch: pytest.MonkeyPatch, value: str, expected: float) -> None:
    assert from_env(monkeypatch, value).low_confidence == pytest.approx(expected)


@pytest.mark.parametrize(("value", "message"), [
    ("1.5", "Input should be less than or equal to 1"),
    ("-0.1", "Input should be greater than or equal to 0"),
    ("nan", "Input should be less than or equal to 1"),  # NaN is refused too
    ("high", "Input should be a valid number"),
])
def test_a_bad_value_stops_the_start_naming_the_setting(monkeypatch: pytest.MonkeyPatch, value: str,
                                                        message: str) -> None:
    with pytest.raises(ValidationError) as e:
        from_env(monkeypatch, value)
    line = describe(e.value)
    assert line.startswith(f"error: invalid setting NOTESRAG_LOW_CONFIDENCE: {message}"), line
    assert value.strip() not in line.removeprefix("error: invalid setting NOTESRAG_LOW_CONFIDENCE")  # never the value
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsError, match=r"^error: invalid setting NOTESRAG_LOW_CONFIDENCE: "):
            get_settings()
    finally:
        get_settings.cache_clear()


class _Named:
    name = "a-cross-encoder"

    def score(self, question: str, passages: list[str]) -> list[float]:
        raise AssertionError("not called here")


def test_the_threshold_reaches_the_answerer_and_the_llm_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTESRAG_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    settings = from_env(monkeypatch, "0.8")
    answerers, default = build_answerers(settings, reranker=_Named())  # type: ignore[arg-type]
    extractive = answerers["extractive"]
    assert isinstance(extractive, ExtractiveAnswerer) and default == "llm"
    assert extractive.low_confidence_threshold == 0.8
    assert answerers["llm"].fallback is extractive  # type: ignore[attr-defined]  # the LLM's gate
    # without a cross-encoder the confidence is a cosine: nothing is flagged, and /readyz says so
    answerers, _ = build_answerers(settings, reranker=None)
    assert answerers["extractive"].low_confidence_threshold is None  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"low_confidence must be in \[0, 1\], got 1.2"):
        ExtractiveAnswerer(low_confidence=1.2)


def test_fusion_is_read_checked_and_reaches_the_retriever(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from index.search.retriever import DEFAULT_FUSION
    from service.app import build_engine
    from service.metrics import Metrics

    monkeypatch.delenv("NOTESRAG_FUSION", raising=False)
    assert Settings(_env_file=None).fusion == DEFAULT_FUSION == "zscore"  # type: ignore[call-arg]
    monkeypatch.setenv("NOTESRAG_FUSION", "rrf")
    settings = Settings(_env_file=None, index_dir=tmp_path, reranker="none")  # type: ignore[call-arg]
    assert settings.fusion == "rrf"
    assert build_engine(settings, Metrics()).fusion == "rrf"  # what _load gives each snapshot's Retriever
    monkeypatch.setenv("NOTESRAG_FUSION", "borda")
    with pytest.raises(ValidationError) as e:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert describe(e.value).startswith("error: invalid setting NOTESRAG_FUSION: Input should be 'rrf' or 'zscore'")
