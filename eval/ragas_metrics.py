"""ragas metrics for one run: the non-LLM ones always, the LLM-judged ones when an LLM is set.

Non-LLM (no network, ever):

- `context_precision`, `context_recall`: ragas's `NonLLMContextPrecisionWithReference` and
  `NonLLMContextRecall` on the contexts the answerer saw against the reference contexts
  (the evidence strings, or the relevant documents' texts). Their default measure,
  Levenshtein similarity over whole strings, scores a 500-character chunk against a
  60-character evidence string near 0 whatever it holds, so both are given
  `ContainmentSimilarity`: 1.0 when one text contains the other (whitespace collapsed,
  case folded), the design's relevance rule.
- `rouge_l`: ragas's `RougeScore` (ROUGE-L F-measure), answer against reference answer.
- `semantic_similarity`: ragas's `SemanticSimilarity` with our sentence-transformers
  embedder wrapped as a ragas embedding (`LocalRagasEmbedding`).

LLM-judged, only when `NOTESRAG_LLM_BASE_URL` names an OpenAI-compatible server:
`faithfulness` and `answer_relevancy` (ragas 0.4 collections, through `llm_factory`).
"""

from __future__ import annotations

import asyncio
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eval.metrics import normalize_text

# ragas posts usage analytics to its vendor unless told not to; an evaluation must make no
# network call it was not asked for. Set before ragas is imported: it caches the flag.
os.environ["RAGAS_DO_NOT_TRACK"] = "true"

NON_LLM_METRICS = ("context_precision", "context_recall", "rouge_l", "semantic_similarity")
LLM_METRICS = ("faithfulness", "answer_relevancy")


@dataclass(frozen=True)
class RagasSample:
    """What ragas needs of one question: inputs, the system's output and the references."""

    question: str
    response: str  # the answer without [n] markers; "" when the system abstained
    contexts: Sequence[str]  # the contexts the answerer was given
    reference: str = ""  # the reference answer ("" when there is none)
    reference_contexts: Sequence[str] = ()  # evidence strings or relevant documents' texts


@dataclass(frozen=True)
class LLMConfig:
    """An OpenAI-compatible chat server for the LLM-judged metrics."""

    base_url: str
    model: str = "default"
    api_key: str | None = None
    timeout_s: float = 60.0

    @classmethod
    def from_env(cls) -> LLMConfig | None:
        """From NOTESRAG_LLM_BASE_URL, _MODEL, _API_KEY, _TIMEOUT_S; None when no URL is set."""
        url = os.environ.get("NOTESRAG_LLM_BASE_URL", "").strip()
        if not url:
            return None
        return cls(
            base_url=url,
            model=os.environ.get("NOTESRAG_LLM_MODEL", "default"),
            api_key=os.environ.get("NOTESRAG_LLM_API_KEY") or None,
            timeout_s=float(os.environ.get("NOTESRAG_LLM_TIMEOUT_S", "60")),
        )


def _ragas() -> dict[str, Any]:
    # ragas and langchain take seconds to import: only when ragas metrics are asked for.
    with warnings.catch_warnings():
        # "Importing NonLLMContextRecall from 'ragas.metrics' is deprecated": 0.4.3 has no
        # replacement in ragas.metrics.collections yet.
        warnings.simplefilter("ignore")
        from ragas.dataset_schema import SingleTurnSample
        from ragas.embeddings.base import BaseRagasEmbedding
        from ragas.metrics import NonLLMContextPrecisionWithReference, NonLLMContextRecall
        from ragas.metrics.base import MetricType, SingleTurnMetric
        from ragas.metrics.collections import RougeScore, SemanticSimilarity
    return {
        "SingleTurnSample": SingleTurnSample,
        "BaseRagasEmbedding": BaseRagasEmbedding,
        "NonLLMContextPrecisionWithReference": NonLLMContextPrecisionWithReference,
        "NonLLMContextRecall": NonLLMContextRecall,
        "MetricType": MetricType,
        "SingleTurnMetric": SingleTurnMetric,
        "RougeScore": RougeScore,
        "SemanticSimilarity": SemanticSimilarity,
    }


def contains_either(a: str, b: str) -> bool:
    """Whether one text contains the other, whitespace collapsed and case folded."""
    na, nb = normalize_text(a), normalize_text(b)
    if not na or not nb:
        return False
    return nb in na or na in nb


def containment_similarity_metric() -> Any:
    """A ragas non-LLM `SingleTurnMetric`: 1.0 when reference and response contain one another."""
    r = _ragas()
    single_turn_sample = r["SingleTurnSample"]
    metric_type = r["MetricType"]
    base: Any = r["SingleTurnMetric"]

    @dataclass
    class ContainmentSimilarity(base):
        name: str = "containment_similarity"
        _required_columns: dict[Any, set[str]] = field(
            default_factory=lambda: {metric_type.SINGLE_TURN: {"reference", "response"}}
        )

        def init(self, run_config: Any) -> None:
            pass

        async def _single_turn_ascore(self, sample: Any, callbacks: Any) -> float:
            return float(contains_either(sample.reference or "", sample.response or ""))

        async def _ascore(self, row: dict[str, Any], callbacks: Any) -> float:
            return await self._single_turn_ascore(single_turn_sample(**row), callbacks)

    return ContainmentSimilarity()


def local_ragas_embedding(encode: Callable[[list[str]], np.ndarray]) -> Any:
    """Our embedder as a ragas `BaseRagasEmbedding`, with a cache filled in batches.

    ragas asks for one text at a time; `prefetch` embeds many in one encoder call first.
    """
    base = _ragas()["BaseRagasEmbedding"]

    class LocalRagasEmbedding(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self._cache: dict[str, list[float]] = {}

        def prefetch(self, texts: Sequence[str]) -> None:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                for text, vec in zip(missing, encode(missing), strict=True):
                    self._cache[text] = [float(x) for x in vec]

        def embed_text(self, text: str, **kwargs: Any) -> list[float]:
            self.prefetch([text])
            return self._cache[text]

        async def aembed_text(self, text: str, **kwargs: Any) -> list[float]:
            return self.embed_text(text)

        def embed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
            self.prefetch(texts)
            return [self._cache[t] for t in texts]

        async def aembed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
            return self.embed_texts(texts)

    return LocalRagasEmbedding()


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None


class RagasScorer:
    """Scores runs with ragas; build once per evaluation (it holds the metric objects)."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray], llm: LLMConfig | None = None) -> None:
        r = _ragas()
        self._sample = r["SingleTurnSample"]
        measure = containment_similarity_metric()
        self._precision = r["NonLLMContextPrecisionWithReference"](distance_measure=measure)
        self._recall = r["NonLLMContextRecall"]()
        # NonLLMContextRecall's setter only takes a DistanceMeasure enum; the field takes any
        # non-LLM single-turn metric, as the precision metric's constructor does.
        self._recall._distance_measure = measure
        self._rouge = r["RougeScore"](rouge_type="rougeL", mode="fmeasure")
        self.embeddings = local_ragas_embedding(encode)
        self._similarity = r["SemanticSimilarity"](embeddings=self.embeddings)
        self.llm = llm
        self._llm_metrics: dict[str, Any] | None = None
        self.llm_failures: dict[str, str] = {}  # metric -> the last error, for the notes

    def notes(self) -> list[str]:
        """What a reader of the report needs to know about these numbers."""
        out = [
            "context_precision / context_recall: ragas NonLLMContextPrecisionWithReference and "
            "NonLLMContextRecall on the answerer's contexts against the evidence strings (or the "
            "relevant documents), with containment as the similarity measure: ragas's default "
            "Levenshtein similarity compares whole strings and scores any chunk against a short "
            "evidence string near 0.",
            "rouge_l, semantic_similarity: ragas RougeScore (ROUGE-L F) and SemanticSimilarity "
            "(the local embedder) against the reference answers; an abstention scores as an "
            "empty answer.",
        ]
        if self.llm is None:
            out.append("faithfulness, answer_relevancy: not computed, they need an LLM judge "
                       "(set NOTESRAG_LLM_BASE_URL to an OpenAI-compatible server).")
        else:
            out.append(f"faithfulness, answer_relevancy: judged by {self.llm.model} at "
                       f"{self.llm.base_url}.")
            out += [f"{name}: some samples failed and were left out ({error})"
                    for name, error in sorted(self.llm_failures.items())]
        return out

    def score(self, samples: Sequence[RagasSample]) -> dict[str, float | None]:
        """Means over the samples that have what each metric needs (None when none has)."""
        return asyncio.run(self.ascore(samples))

    async def ascore(self, samples: Sequence[RagasSample]) -> dict[str, float | None]:
        with_contexts = [s for s in samples if s.reference_contexts and s.contexts]
        precision, recall = [], []
        for s in with_contexts:
            sample = self._sample(retrieved_contexts=list(s.contexts),
                                  reference_contexts=list(s.reference_contexts))
            precision.append(float(await self._precision.single_turn_ascore(sample)))
            recall.append(float(await self._recall.single_turn_ascore(sample)))

        with_reference = [s for s in samples if s.reference]
        self.embeddings.prefetch([s.reference for s in with_reference]
                                 + [s.response for s in with_reference if s.response])
        rouge, similarity = [], []
        for s in with_reference:
            rouge.append((await self._rouge.ascore(reference=s.reference, response=s.response)).value)
            if not s.response:
                # An abstention says nothing: 0, as ROUGE gives it (ragas would embed " ").
                similarity.append(0.0)
                continue
            similarity.append(
                (await self._similarity.ascore(reference=s.reference, response=s.response)).value
            )
        out: dict[str, float | None] = {
            "context_precision": _mean(precision),
            "context_recall": _mean(recall),
            "rouge_l": _mean(rouge),
            "semantic_similarity": _mean(similarity),
        }
        if self.llm is not None:
            out |= await self._llm_scores(samples)
        return out

    def _llm(self) -> dict[str, Any]:
        if self._llm_metrics is None:
            assert self.llm is not None
            from openai import AsyncOpenAI
            from ragas.llms import llm_factory
            from ragas.metrics.collections import AnswerRelevancy, Faithfulness

            client = AsyncOpenAI(base_url=self.llm.base_url, api_key=self.llm.api_key or "none",
                                 timeout=self.llm.timeout_s, max_retries=1)
            llm = llm_factory(self.llm.model, client=client)
            self._llm_metrics = {
                "faithfulness": Faithfulness(llm=llm),
                "answer_relevancy": AnswerRelevancy(llm=llm, embeddings=self.embeddings),
            }
        return self._llm_metrics

    async def _llm_scores(self, samples: Sequence[RagasSample]) -> dict[str, float | None]:
        metrics = self._llm()
        answered = [s for s in samples if s.response and s.contexts]
        values: dict[str, list[float]] = {name: [] for name in LLM_METRICS}
        for s in answered:
            calls = {
                "faithfulness": lambda s=s: metrics["faithfulness"].ascore(
                    user_input=s.question, response=s.response,
                    retrieved_contexts=list(s.contexts)),
                "answer_relevancy": lambda s=s: metrics["answer_relevancy"].ascore(
                    user_input=s.question, response=s.response),
            }
            for name, call in calls.items():
                try:
                    values[name].append(float((await call()).value))
                except Exception as e:  # a judge that times out or answers badly
                    self.llm_failures[name] = f"{type(e).__name__}: {str(e)[:120]}"
        return {name: _mean(v) for name, v in values.items()}
