"""Answerers: turn a question and its retrieved passages into a cited answer.

`ExtractiveAnswerer` (the default) quotes the best sentences of the passages
(`index.answer.extractive.extract_answer`). `LLMAnswerer` asks any OpenAI-compatible
chat-completions server, with the passages numbered and fenced as data; on a
timeout or an error it falls back to the extractive answer and says so in
`warnings`. Both abstain when the extractive score is under the threshold,
so the LLM is never asked about what retrieval did not find.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import httpx
import numpy as np

from index.answer import llm as llm_prompt
from index.answer.citations import SUPPORT_THRESHOLD
from index.answer.extractive import (
    DEFAULT_LOW_CONFIDENCE,
    DEFAULT_UNITS_SCORED,
    NOT_FOUND,
    Citation,
    extract_answer,
)
from index.answer.llm import LLM_NOT_FOUND, Unsupported, check_answer, cite_grammar
from index.models.reranker import Reranker
from index.search.retriever import Hit
from index.store.snapshot import Snapshot

_MARKER = re.compile(r"\[(\d{1,3})\]")


@dataclass(frozen=True, slots=True)
class Turn:
    role: str  # "user" or "assistant"
    content: str


@dataclass(slots=True)
class AnswerRequest:
    question: str
    question_vector: np.ndarray
    hits: list[Hit]
    snapshot: Snapshot
    history: Sequence[Turn] = ()


@dataclass(slots=True)
class AnswerResult:
    text: str
    answerable: bool
    citations: list[Citation]
    confidence: float
    answerer: str
    warnings: list[str] = field(default_factory=list)
    citation_support: float | None = None  # share of the sentences a cited passage supports
    reranker: str | None = None  # the cross-encoder that scored the answer, if one did
    low_confidence: bool = False  # answered under the low-confidence threshold (the extractive gate's)


@dataclass(frozen=True, slots=True)
class Cited:
    """Yielded by a stream once its citations are known, when that is before its end."""

    citations: list[Citation]


# What `stream` yields: answer text deltas, perhaps Cited first, and exactly one AnswerResult, last.
StreamItem = str | Cited | AnswerResult


class Answerer(Protocol):
    name: str

    async def answer(self, req: AnswerRequest) -> AnswerResult: ...

    def stream(self, req: AnswerRequest) -> AsyncIterator[StreamItem]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class SyncAnswerer(Protocol):
    """An answerer cheap enough to run inside the retrieval worker thread (no I/O)."""

    name: str

    def answer_sync(self, req: AnswerRequest) -> AnswerResult: ...


def pieces(text: str) -> list[str]:
    """An answer cut into deltas after its citation markers; joined, they give `text` back."""
    return [p for p in re.split(r"(?<=\])(?=\s)", text) if p]


class ExtractiveAnswerer:
    """The best sentences of the retrieved passages, cited; nothing but the embedder is needed."""

    name = "extractive"

    def __init__(self, threshold: float | None = None, max_sentences: int = 2, *,
                 reranker: Reranker | None = None, units_scored: int = DEFAULT_UNITS_SCORED,
                 low_confidence: float = DEFAULT_LOW_CONFIDENCE) -> None:
        if threshold is not None and not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [-1, 1], got {threshold}")
        if not 0.0 <= low_confidence <= 1.0:
            raise ValueError(f"low_confidence must be in [0, 1], got {low_confidence}")
        self.threshold = threshold
        self.max_sentences = max_sentences
        self.reranker = reranker
        self.units_scored = units_scored
        self.low_confidence = low_confidence

    @property
    def low_confidence_threshold(self) -> float | None:
        """The confidence under which an answer is flagged; None: none is (no cross-encoder, whose
        calibrated probability the threshold is about: without one the confidence is a cosine)."""
        return self.low_confidence if self.reranker is not None else None

    def answer_sync(self, req: AnswerRequest) -> AnswerResult:
        a = extract_answer(req.question, req.question_vector, req.hits, req.snapshot,
                           max_sentences=self.max_sentences, threshold=self.threshold,
                           reranker=self.reranker, units_scored=self.units_scored,
                           low_confidence=self.low_confidence_threshold)
        return AnswerResult(a.text, a.answerable, list(a.citations), float(a.confidence), self.name,
                            reranker=a.reranker, low_confidence=a.low_confidence)

    async def answer(self, req: AnswerRequest) -> AnswerResult:
        return await asyncio.to_thread(self.answer_sync, req)

    async def stream(self, req: AnswerRequest) -> AsyncIterator[StreamItem]:
        result = await self.answer(req)
        yield Cited(result.citations)
        for piece in pieces(result.text):
            yield piece
        yield result

    async def aclose(self) -> None:
        return None


def build_messages(req: AnswerRequest, fence: str | None = None) -> list[dict[str, str]]:
    """The chat messages for `req` (`index.answer.llm.build_messages`)."""
    return llm_prompt.build_messages(req.question, req.hits, [(t.role, t.content) for t in req.history], fence)


class LLMError(Exception):
    pass


class LLMAnswerer:
    """Chat completions from an OpenAI-compatible server; the extractive answer as gate and fallback."""

    name = "llm"

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout_s: float = 30.0,
                 max_tokens: int = 512, temperature: float = 0.0,
                 fallback: ExtractiveAnswerer | None = None, client: httpx.AsyncClient | None = None,
                 grammar: bool = False, support_threshold: float = SUPPORT_THRESHOLD,
                 unsupported: Unsupported = "drop") -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if not 0.0 <= support_threshold <= 1.0:
            raise ValueError(f"support_threshold must be in [0, 1], got {support_threshold}")
        self.grammar = grammar  # llama.cpp's GBNF field: every sentence ends with a [n]
        self.support_threshold = support_threshold
        self.unsupported = unsupported
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.fallback = fallback or ExtractiveAnswerer()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), headers=headers)

    def _payload(self, req: AnswerRequest, stream: bool) -> dict[str, Any]:
        payload = {"model": self.model, "messages": build_messages(req), "temperature": self.temperature,
                   "max_tokens": self.max_tokens, "stream": stream}
        if self.grammar and req.hits:
            payload["grammar"] = cite_grammar(len(req.hits))
        return payload

    def _result(self, text: str, req: AnswerRequest, extractive: AnswerResult) -> AnswerResult:
        """The answer after its citation check; the extractive one when no sentence holds up."""
        checked = check_answer(text, req.hits, threshold=self.support_threshold, unsupported=self.unsupported)
        if not checked.answerable:
            return AnswerResult(NOT_FOUND, False, [], extractive.confidence, self.name)
        if not checked.supported:
            why = "no sentence of its answer cites a passage that supports it"
            if not any(c.cited for c in checked.checks):
                why = "its answer cites no passage"
            extractive.warnings.append(f"LLM answer rejected ({why}); this is the extractive answer")
            return extractive
        return AnswerResult(checked.text, True, checked.citations, extractive.confidence, self.name,
                            checked.warnings, checked.citation_support, extractive.reranker,
                            extractive.low_confidence)

    @staticmethod
    def _fallen_back(extractive: AnswerResult, why: str) -> AnswerResult:
        extractive.warnings.append(f"LLM answerer failed ({why}); this is the extractive answer")
        return extractive

    async def answer(self, req: AnswerRequest) -> AnswerResult:
        extractive = await self.fallback.answer(req)
        if not extractive.answerable:
            return extractive
        try:
            async with asyncio.timeout(self.timeout_s):
                resp = await self._client.post(self.url, json=self._payload(req, False))
            if resp.status_code != 200:
                raise LLMError(f"HTTP {resp.status_code} from {self.url}")
            data = resp.json()
            text = data["choices"][0]["message"]["content"]
            if not isinstance(text, str):
                raise LLMError("the response has no message content")
        except TimeoutError:
            return self._fallen_back(extractive, f"no answer within {self.timeout_s:g}s")
        except (httpx.HTTPError, LLMError, ValueError, KeyError, IndexError, TypeError) as e:
            return self._fallen_back(extractive, _describe(e))
        return self._result(text, req, extractive)

    async def stream(self, req: AnswerRequest) -> AsyncIterator[StreamItem]:
        extractive = await self.fallback.answer(req)
        if not extractive.answerable:
            yield Cited([])
            for piece in pieces(extractive.text):
                yield piece
            yield extractive
            return
        sent: list[str] = []  # deltas already passed on
        held = ""  # the start of the answer, held back until it cannot be NOT_FOUND
        error: str | None = None
        try:
            async with self._client.stream("POST", self.url, json=self._payload(req, True)) as resp:
                if resp.status_code != 200:
                    raise LLMError(f"HTTP {resp.status_code} from {self.url}")
                async for delta in _sse_deltas(resp):
                    if not sent:
                        held += delta
                        if len(held.lstrip()) < len(LLM_NOT_FOUND) and LLM_NOT_FOUND.startswith(held.lstrip()):
                            continue
                        delta, held = held, ""
                        if delta.lstrip().startswith(LLM_NOT_FOUND):
                            held = delta
                            break
                    sent.append(delta)
                    yield delta
        except httpx.TimeoutException:
            error = f"no data within {self.timeout_s:g}s"
        except (httpx.HTTPError, LLMError, ValueError, KeyError, IndexError, TypeError) as e:
            error = _describe(e)
        if error is not None:
            result = self._fallen_back(extractive, error)
            lead = "\n\n" if sent else ""
            for i, piece in enumerate(pieces(result.text)):
                yield (lead + piece) if i == 0 else piece
            yield result
            return
        result = self._result("".join(sent) or held, req, extractive)
        if not sent:
            yield result.text
        elif result.answerer != self.name:  # rejected by the citation check: what replaces it
            for i, piece in enumerate(pieces(result.text)):
                yield ("\n\n" + piece) if i == 0 else piece
        yield result

    async def aclose(self) -> None:
        await self._client.aclose()


async def _sse_deltas(resp: httpx.Response) -> AsyncIterator[str]:
    """Content deltas of an OpenAI chat-completions stream, until `[DONE]`."""
    async for line in resp.aiter_lines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        chunk = json.loads(payload)
        if "error" in chunk:
            raise LLMError(f"the stream reported an error: {chunk['error']}")
        for choice in chunk.get("choices", []):
            content = (choice.get("delta") or {}).get("content")
            if content:
                yield content


def _describe(e: BaseException) -> str:
    if isinstance(e, httpx.TimeoutException):
        return "timed out"
    if isinstance(e, httpx.ConnectError):
        return "cannot connect"
    return str(e) or type(e).__name__
