"""Run a labelled question set through retrieval and answering, and score each configuration.

A configuration (`RunSpec`) is a retrieval mode, auto-merge on or off, chunk sizes and a
merge threshold. `evaluate` asks a `Backend` for each question's ranking and answer, then
scores them with `eval.metrics` (ranx for the ranking metrics) and, when given, a
`RagasScorer`. Two backends: `LocalBackend` builds (or reuses) one index per chunk-size
configuration in-process; `HttpBackend` asks a running service over HTTP.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from eval.datasets import Dataset, LabelledQuestion, read_corpus_mapping, write_corpus
from eval.metrics import (
    abstains,
    answer_accuracy,
    best_abstain_threshold,
    document_judgements,
    evidence_judgements,
    exact_match,
    noanswer_scores,
    ranking_metrics,
    token_f1,
)

DEFAULT_MODES = ("dense", "bm25", "hybrid", "hybrid+merge")
DEFAULT_CHUNK_SIZES = (2048, 512, 128)
DEFAULT_MERGE_THRESHOLD = 0.5
DEFAULT_ANSWER_K = 5  # passages the answerer reads, as the service's default top_k

_MARKER = re.compile(r"\s*\[\d+\]")


class EvalError(ValueError):
    """Bad arguments or input for an evaluation; the message says what and where."""


class ServiceError(RuntimeError):
    """The service scored with `--url` failed or answered in an unexpected shape."""


def strip_markers(text: str) -> str:
    """An answer without its [n] citation markers."""
    return _MARKER.sub("", text).strip()


# --- configurations --------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """One configuration to score."""

    name: str
    mode: str  # dense | bm25 | hybrid
    merge: bool
    chunk_sizes: tuple[int, ...] = DEFAULT_CHUNK_SIZES
    merge_threshold: float = DEFAULT_MERGE_THRESHOLD
    answerer: str = "extractive"  # or "llm"

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "merge": self.merge,
                               "chunk_sizes": list(self.chunk_sizes)}
        if self.answerer != "extractive":
            out["answerer"] = self.answerer
        if self.merge:
            out["merge_threshold"] = self.merge_threshold
        return out


_RETRIEVAL_MODES = ("dense", "bm25", "hybrid")


def parse_mode(name: str) -> tuple[str, bool]:
    """'hybrid+merge' -> ('hybrid', True); 'bm25' -> ('bm25', False)."""
    base, plus, rest = name.strip().partition("+")
    if base not in _RETRIEVAL_MODES or (plus and rest != "merge"):
        allowed = ", ".join([*_RETRIEVAL_MODES, *(f"{m}+merge" for m in _RETRIEVAL_MODES)])
        raise EvalError(f"mode must be one of {allowed}, got {name.strip()!r}")
    return base, bool(plus)


def parse_modes(text: str) -> list[str]:
    """Comma-separated mode names, checked, duplicates dropped."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise EvalError("--modes is empty")
    for n in names:
        parse_mode(n)
    return list(dict.fromkeys(names))


def parse_chunk_sizes(text: str) -> list[tuple[int, ...]]:
    """'2048,512,128;512,128' -> [(2048, 512, 128), (512, 128)], each largest first."""
    out: list[tuple[int, ...]] = []
    for group in re.split(r"[;/ ]+", text.strip()):
        if not group:
            continue
        try:
            sizes = tuple(int(s) for s in group.split(",") if s.strip())
        except ValueError:
            raise EvalError(f"chunk sizes must be integers, got {group!r}") from None
        if not sizes:
            raise EvalError(f"empty chunk-size group in {text!r}")
        if any(s < 16 for s in sizes) or any(a <= b for a, b in itertools.pairwise(sizes)):
            raise EvalError(
                f"chunk sizes must be at least 16 and strictly decreasing, got {list(sizes)}"
            )
        out.append(sizes)
    if not out:
        raise EvalError("--chunk-sizes is empty")
    return list(dict.fromkeys(out))


def parse_thresholds(text: str) -> list[float]:
    """'0.5,0.3' -> [0.5, 0.3], each in (0, 1]."""
    out: list[float] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise EvalError(f"merge threshold must be a number, got {part!r}") from None
        if not 0.0 < value <= 1.0:
            raise EvalError(f"merge threshold must be in (0, 1], got {value}")
        out.append(value)
    if not out:
        raise EvalError("--merge-threshold is empty")
    return list(dict.fromkeys(out))


ANSWERERS = ("extractive", "llm")


def parse_answerers(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in ANSWERERS]
    if not names or bad:
        raise EvalError(f"--answerer takes {' and/or '.join(ANSWERERS)}, comma-separated; got {text!r}")
    return list(dict.fromkeys(names))


def with_answerers(specs: Sequence[RunSpec], answerers: Sequence[str]) -> list[RunSpec]:
    """Each spec once per answerer; names get "/llm" for the LLM answerer's runs."""
    from dataclasses import replace

    return [replace(s, name=s.name if a == "extractive" else f"{s.name}/{a}", answerer=a)
            for s in specs for a in answerers]


def build_specs(modes: Sequence[str], chunk_sizes: Sequence[tuple[int, ...]] = (DEFAULT_CHUNK_SIZES,),
                merge_thresholds: Sequence[float] = (DEFAULT_MERGE_THRESHOLD,)) -> list[RunSpec]:
    """Every mode for every chunk-size set; merging modes also for every merge threshold.

    Names are the mode name, with the chunk sizes and threshold appended only when more
    than one is being compared (so a default run is named 'hybrid+merge').
    """
    specs: list[RunSpec] = []
    for sizes in chunk_sizes:
        for name in modes:
            mode, merge = parse_mode(name)
            for threshold in merge_thresholds if merge else merge_thresholds[:1]:
                label = name
                if len(chunk_sizes) > 1:
                    label += f" c={','.join(map(str, sizes))}"
                if merge and len(merge_thresholds) > 1:
                    label += f" t={threshold:g}"
                specs.append(RunSpec(label, mode, merge, tuple(sizes), threshold))
    return specs


# --- what a backend returns ------------------------------------------------------------


@dataclass(frozen=True)
class Ranked:
    node_id: str
    text: str
    source: str


@dataclass
class Outcome:
    """What the system did with one question in one configuration."""

    qid: str
    ranked: list[Ranked]  # best first, up to k
    contexts: list[str]  # what the answerer read
    answer: str  # without [n] markers; "" when it abstained
    answerable: bool  # whether it answered
    confidence: float | None
    # The answer it gives whenever the threshold lets it answer: "" when it has nothing it
    # could cite at any threshold, None when unknown (a service that abstained).
    candidate: str | None
    latency_s: float
    context_tokens: int | None = None
    citation_support: float | None = None  # share of the answer's sentences their citation supports
    warnings: list[str] = field(default_factory=list)
    low_confidence: bool = False  # answered with the low-confidence flag set


class Backend(Protocol):
    """Answers questions for one configuration at a time."""

    description: str

    def prepare(self, specs: Sequence[RunSpec], questions: Sequence[LabelledQuestion]) -> None:
        """Everything slow before the first question: indexes, query embeddings."""
        ...

    def run(self, spec: RunSpec, questions: Sequence[LabelledQuestion], k: int,
            tick: Callable[[], None]) -> list[Outcome]: ...

    def close(self) -> None: ...


# --- the in-process backend ------------------------------------------------------------


# The stages whose code decides what a snapshot holds; search and answer code reads a snapshot
# and changing it must not re-ingest a corpus (SciFact takes many minutes).
_SNAPSHOT_STAGES = ("ingestion", "store", "models")


def _index_code_hash() -> str:
    # A snapshot cached under an older chunker or index format would silently score old
    # code: the cache key includes the source of index/'s top level and of the stages above.
    import index

    root = Path(index.__file__).parent
    files = [*root.glob("*.py"), *(p for stage in _SNAPSHOT_STAGES for p in (root / stage).rglob("*.py"))]
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def corpus_hash(directory: Path) -> str:
    """A hash of every file under `directory`: names and contents."""
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(path.relative_to(directory).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


class IndexCache:
    """Snapshots per (corpus, chunk sizes, model and its backend, index code), reused between runs.

    With `root=None` everything lives in a temporary directory removed by `close`.
    """

    def __init__(self, root: Path | None, sentence_vectors: str = "pooled") -> None:
        self.sentence_vectors = sentence_vectors
        self._tmp = None if root is not None else tempfile.mkdtemp(prefix="notesrag-eval-")
        self.root = Path(root) if root is not None else Path(self._tmp)  # type: ignore[arg-type]
        self.root.mkdir(parents=True, exist_ok=True)
        self._code = _index_code_hash()

    def corpus_for(self, dataset: Dataset) -> tuple[Path, dict[str, str]]:
        """The corpus directory to ingest and a map from resolved file path to document id.

        Our JSONL sets name their corpus directory; BEIR and SQuAD sets are written out
        once per content under the cache.
        """
        if dataset.corpus_dir is not None:
            return dataset.corpus_dir.resolve(), {}
        h = hashlib.sha256()
        for doc_id in sorted(dataset.documents):
            d = dataset.documents[doc_id]
            h.update(json.dumps([doc_id, d.title, d.text]).encode())
        directory = self.root / f"corpus-{h.hexdigest()[:16]}"
        if not (directory / ".complete").exists():
            if directory.exists():
                shutil.rmtree(directory)
            mapping = write_corpus(dataset, directory)
            (directory / ".complete").write_text("")
        else:
            mapping = read_corpus_mapping(directory)
        return directory.resolve(), {str(p.resolve()): d for p, d in mapping.items()}

    def snapshot(self, corpus: Path, chunk_sizes: tuple[int, ...], embedder: Any,
                 progress: bool = False) -> Any:
        """The snapshot of `corpus` chunked at `chunk_sizes`, built when not cached."""
        from index import IndexConfig, IngestError, SnapshotError, ingest_sync, load_snapshot

        key = hashlib.sha256(json.dumps(
            [str(corpus), corpus_hash(corpus), list(chunk_sizes), embedder.model_name,
             embedder.dim, getattr(embedder, "backend", ""), self._code,
             self.sentence_vectors]).encode()).hexdigest()[:16]
        index_dir = self.root / f"index-{'-'.join(map(str, chunk_sizes))}-{key}"
        config = IndexConfig(chunk_sizes=chunk_sizes, sentence_vectors=self.sentence_vectors)
        # Ingestion is incremental: on a cached index it checks hashes and embeds nothing.
        try:
            report = ingest_sync([corpus], index_dir, config, embedder=embedder,
                                 progress=progress)
        except (IngestError, SnapshotError) as e:
            raise EvalError(f"cannot build the index of {corpus}: {e}") from None
        if report.skipped:
            skipped = ", ".join(f"{p}: {r}" for p, r in list(report.skipped.items())[:3])
            raise EvalError(f"corpus files could not be ingested ({skipped})")
        return load_snapshot(index_dir)

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


class LocalBackend:
    """Retrieval and extractive answers in this process, one index per chunk-size set."""

    description = "in-process"

    def __init__(self, dataset: Dataset, cache: IndexCache, embedder: Any = None, *,
                 answer_k: int = DEFAULT_ANSWER_K, abstain_threshold: float | None = None,
                 low_confidence: float | None = None,
                 max_sentences: int = 2, snapshots: Mapping[tuple[int, ...], Any] | None = None,
                 progress: bool = False, reranker: Any = "auto", rerank_depth: int = 0,
                 rerank_weight: float | None = None, fusion: str | None = None,
                 llm: LLMEndpoint | None = None) -> None:
        from index import get_embedder
        from index.models.reranker import get_reranker

        self.llm = llm

        self.dataset = dataset
        self.cache = cache
        self.embedder = embedder if embedder is not None else get_embedder()
        self.answer_k = answer_k
        self.abstain_threshold = abstain_threshold
        self.low_confidence = low_confidence  # None: extract_answer's default
        self.max_sentences = max_sentences
        self.progress = progress
        # the service's default: the packaged cross-encoder when installed ("auto"), a name,
        # "none", or a Reranker object
        self.reranker = get_reranker(reranker) if isinstance(reranker, str) else reranker
        self.rerank_depth = rerank_depth  # fused leaves the cross-encoder reranks before merge
        if rerank_weight is None:
            from index.search.retriever import DEFAULT_RERANK_WEIGHT

            rerank_weight = DEFAULT_RERANK_WEIGHT
        self.rerank_weight = rerank_weight
        if fusion is None:
            from index.search.retriever import DEFAULT_FUSION

            fusion = DEFAULT_FUSION
        self.fusion = fusion
        if self.reranker is not None and rerank_depth:
            self.description = f"in-process, top {rerank_depth} fused leaves reranked (weight {rerank_weight})"
        self._snapshots: dict[tuple[int, ...], Any] = dict(snapshots or {})
        self._vectors: dict[str, Any] = {}
        self.embed_s_per_question = 0.0
        self.corpus, self.doc_of = cache.corpus_for(dataset)

    def snapshot(self, chunk_sizes: tuple[int, ...]) -> Any:
        if chunk_sizes not in self._snapshots:
            self._snapshots[chunk_sizes] = self.cache.snapshot(
                self.corpus, chunk_sizes, self.embedder, self.progress)
        return self._snapshots[chunk_sizes]

    def prepare(self, specs: Sequence[RunSpec], questions: Sequence[LabelledQuestion]) -> None:
        for spec in specs:
            self.snapshot(spec.chunk_sizes)
        self._query_vectors(questions)

    def _query_vectors(self, questions: Sequence[LabelledQuestion]) -> None:
        missing = [q.question for q in questions if q.question not in self._vectors]
        if missing:
            from index.models.embedder import encode_queries

            start = time.perf_counter()
            vectors = encode_queries(self.embedder, missing)
            self.embed_s_per_question = (time.perf_counter() - start) / len(missing)
            self._vectors.update(zip(missing, vectors, strict=True))

    def threshold(self) -> float:
        import index.answer.extractive

        # Read at call time, so a calibration script can patch the module's default.
        if self.abstain_threshold is not None:
            return self.abstain_threshold
        if self.reranker is not None:
            return index.answer.extractive.DEFAULT_RERANK_THRESHOLD
        return index.answer.extractive.DEFAULT_THRESHOLD

    def run(self, spec: RunSpec, questions: Sequence[LabelledQuestion], k: int,
            tick: Callable[[], None]) -> list[Outcome]:
        from index import Retriever
        from index.answer.extractive import extract_answer

        snapshot = self.snapshot(spec.chunk_sizes)
        retriever = Retriever(snapshot, self.embedder, merge_threshold=spec.merge_threshold,
                              reranker=self.reranker, rerank_depth=self.rerank_depth,
                              rerank_weight=self.rerank_weight, fusion=self.fusion)
        self._query_vectors(questions)
        threshold = self.threshold()
        count = getattr(self.embedder, "token_count", None)
        out: list[Outcome] = []
        documents = self.dataset.relevance == "document"
        for q in questions:
            vector = self._vectors[q.question]
            start = time.perf_counter()
            hits = retriever.search(q.question, k=max(k, self.answer_k), mode=spec.mode,
                                    merge=spec.merge, query_vector=vector)
            passages = hits[: self.answer_k]
            latency = time.perf_counter() - start
            ranked = [Ranked(h.node_id, h.text, h.source) for h in hits[:k]]
            if documents:  # rank k distinct documents: retrieve deeper where chunks repeat one
                def deeper(depth: int, q: LabelledQuestion = q, vector: Any = vector) -> list[Ranked]:
                    return [Ranked(h.node_id, h.text, h.source) for h in retriever.search(
                        q.question, k=depth, mode=spec.mode, merge=spec.merge, query_vector=vector)]

                ranked = fill_documents(deeper, k, lambda r: _doc_id(r.source, self.doc_of),
                                        start=max(k, self.answer_k))
            start = time.perf_counter()
            # Answer at no threshold, then apply it here: the same decision extract_answer
            # makes, and the would-be answer is known for the threshold sweep.
            # max_hits stays the answerer's default, as the service calls it.
            raw = extract_answer(q.question, vector, passages, snapshot,
                                 max_sentences=self.max_sentences, threshold=-math.inf,
                                 reranker=self.reranker, low_confidence=self.low_confidence)
            candidate = raw.plain if raw.answerable else None
            answered = candidate is not None and not abstains(raw.confidence, threshold)
            support = extractive_support(raw, snapshot) if raw.answerable else None
            warnings: list[str] = []
            if spec.answerer == "llm" and answered:  # the extractive answer gates and falls back
                if self.llm is None:
                    raise EvalError("the llm answerer needs a model: --llm-url or --llm-gguf")
                llm_text, llm_support, warnings = self.llm.answer(q.question, passages)
                if llm_text is not None:
                    candidate, support, answered = llm_text, llm_support, bool(llm_text)
            latency += time.perf_counter() - start + self.embed_s_per_question
            contexts = [h.text for h in passages]
            out.append(Outcome(
                qid=q.id,
                ranked=ranked,
                contexts=contexts,
                answer=candidate if answered and candidate is not None else "",
                answerable=answered,
                confidence=raw.confidence,
                candidate=candidate if candidate is not None else "",
                latency_s=latency,
                context_tokens=sum(count(c) if count else len(c.split()) for c in contexts),
                citation_support=support if answered else None,
                warnings=warnings,
                low_confidence=answered and raw.low_confidence,
            ))
            tick()
        return out

    def close(self) -> None:
        self.cache.close()
        if self.llm is not None:
            self.llm.close()


def extractive_support(answer: Any, snapshot: Any) -> float | None:
    """Citation support of an extractive answer: each sentence against the node its [n] cites."""
    from index.answer.citations import check_sentences, citation_support

    by_n = {c.n: snapshot.tree[c.node_id].text for c in answer.citations}
    passages = [by_n.get(n, "") for n in range(1, max(by_n, default=0) + 1)]
    return citation_support(check_sentences(answer.text, passages))


class LLMEndpoint:
    """The LLM answerer for the evaluation: the service's prompt, grammar and citation check
    (`index.answer.llm`) against an OpenAI-compatible server, one blocking request a question."""

    def __init__(self, base_url: str, model: str = "default", *, api_key: str | None = None,
                 max_tokens: int = 256, timeout_s: float = 120.0, grammar: bool = False) -> None:
        import httpx

        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.max_tokens, self.grammar, self.timeout_s = model, max_tokens, grammar, timeout_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout_s, headers=headers)

    def answer(self, question: str, hits: Sequence[Any]) -> tuple[str | None, float | None, list[str]]:
        """(answer without markers, citation support, warnings); None as the answer when the
        server failed or no sentence held up (the caller keeps the extractive answer)."""
        import httpx

        from index.answer.llm import build_messages, check_answer, cite_grammar

        payload: dict[str, Any] = {"model": self.model, "messages": build_messages(question, hits),
                                   "temperature": 0.0, "max_tokens": self.max_tokens}
        if self.grammar and hits:
            payload["grammar"] = cite_grammar(len(hits))
        try:
            r = self._client.post(self.url, json=payload)
            r.raise_for_status()
            text = r.json()["choices"][0]["message"]["content"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as e:
            return None, None, [f"LLM answerer failed ({e}); the extractive answer was scored"]
        checked = check_answer(str(text), hits)
        if not checked.answerable:
            return "", None, ["the LLM said NOT_FOUND"]
        if not checked.supported:
            return None, None, [*checked.warnings, "LLM answer rejected; the extractive answer was scored"]
        return strip_markers(checked.text), checked.citation_support, checked.warnings

    def close(self) -> None:
        self._client.close()


# --- the HTTP backend ------------------------------------------------------------------


class HttpBackend:
    """Scores a running service: GET /v1/search for rankings, POST /v1/ask for answers."""

    def __init__(self, url: str, *, api_key: str | None = None, answer_k: int = DEFAULT_ANSWER_K,
                 timeout_s: float = 60.0, client: Any = None,
                 token_count: Callable[[str], int] | None = None,
                 dataset: Dataset | None = None, max_search_k: int = 50) -> None:
        import httpx

        if not url.startswith(("http://", "https://")):
            raise EvalError(f"--url must start with http:// or https://, got {url!r}")
        headers = {"Cache-Control": "no-cache"}  # score the system, not its answer cache
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.description = url
        self.answer_k = answer_k
        self.token_count = token_count
        # Document-level sets rank k distinct documents: /v1/search is asked deeper, up to the
        # service's largest k (its max_top_k setting, 50 by default).
        self.dataset_relevance = dataset.relevance if dataset is not None else "evidence"
        self.doc_of = _doc_map_for_http(dataset) if dataset is not None else {}
        self.max_search_k = max_search_k
        self._client = client or httpx.Client(base_url=url.rstrip("/"), headers=headers,
                                              timeout=timeout_s)

    def _get_json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        import httpx

        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise ServiceError(f"{method} {self.description}{path}: {e}") from None
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise ServiceError(f"{method} {path} returned {response.status_code}: {message}")
        try:
            body = response.json()
        except ValueError:
            raise ServiceError(f"{method} {path} did not return JSON") from None
        if not isinstance(body, dict):
            raise ServiceError(f"{method} {path} returned {type(body).__name__}, expected an object")
        return body

    def prepare(self, specs: Sequence[RunSpec], questions: Sequence[LabelledQuestion]) -> None:
        pass

    def run(self, spec: RunSpec, questions: Sequence[LabelledQuestion], k: int,
            tick: Callable[[], None]) -> list[Outcome]:
        out: list[Outcome] = []
        documents = self.dataset_relevance == "document"
        for q in questions:
            def search(depth: int, q: LabelledQuestion = q) -> list[Ranked]:
                found = self._get_json("GET", "/v1/search", params={
                    "q": q.question, "k": depth, "mode": spec.mode, "merge": str(spec.merge).lower()})
                items = found.get("hits", found.get("results", []))
                return [Ranked(str(h.get("node_id", i)), str(h.get("text", "")),
                               str(h.get("source", ""))) for i, h in enumerate(items)]

            ranked = (fill_documents(search, k, lambda r: _doc_id(r.source, self.doc_of),
                                     limit=self.max_search_k)
                      if documents else search(k))
            start = time.perf_counter()
            ask: dict[str, Any] = {"question": q.question, "top_k": self.answer_k, "mode": spec.mode}
            if spec.answerer != "extractive":
                ask["answerer"] = spec.answerer
            asked = self._get_json("POST", "/v1/ask", json=ask)
            ask_s = time.perf_counter() - start
            answered = bool(asked.get("answerable", False))
            answer = strip_markers(str(asked.get("answer", ""))) if answered else ""
            contexts = [str(c.get("text", "")) for c in asked.get("contexts", [])]
            confidence = asked.get("confidence")
            out.append(Outcome(
                qid=q.id,
                ranked=ranked,
                contexts=contexts,
                answer=answer,
                answerable=answered,
                confidence=float(confidence) if isinstance(confidence, int | float) else None,
                # An abstaining service does not say what it would have answered.
                candidate=answer if answered else None,
                # /v1/ask alone is what a user waits for; /v1/search is only for the metrics.
                latency_s=ask_s,
                context_tokens=sum(self.token_count(c) if self.token_count else len(c.split())
                                   for c in contexts),
                citation_support=asked.get("citation_support") if answered else None,
                warnings=[str(w) for w in asked.get("warnings", [])],
                low_confidence=answered and bool(asked.get("low_confidence", False)),
            ))
            tick()
        return out

    def close(self) -> None:
        self._client.close()


# --- scoring ---------------------------------------------------------------------------


def _doc_id(source: str, doc_of: Mapping[str, str]) -> str:
    if source in doc_of:
        return doc_of[source]
    return doc_of.get(Path(source).name, f"source:{source}")


def judge(dataset: Dataset, question: LabelledQuestion, ranked: Sequence[Ranked],
          doc_of: Mapping[str, str]) -> tuple[dict[str, int], dict[str, float]]:
    """(qrels, run) for one answerable question under the dataset's relevance rule."""
    if dataset.relevance == "evidence":
        return evidence_judgements([(r.node_id, r.text) for r in ranked], question.evidence)
    return document_judgements([_doc_id(r.source, doc_of) for r in ranked], question.relevant_docs,
                               dict(question.doc_grades))


def fill_documents(search: Callable[[int], Sequence[Ranked]], k: int, doc_key: Callable[[Ranked], str],
                   *, start: int | None = None, limit: int = 4096) -> list[Ranked]:
    """Nodes ranked deep enough to hold `k` distinct documents (standard BEIR scoring ranks the
    first k distinct documents, and k chunk hits hold fewer when documents have several chunks).

    `search(depth)` returns the top `depth` nodes. The depth starts at `start` (default k) and
    doubles until the nodes hold k documents, a deeper search returns no more nodes than the
    last (the retriever ran out; auto-merge can return fewer than asked before that) or
    `limit` nodes were asked for. Returns the nodes up to the one that brings the k-th
    document; the caller's document judgement counts each document once, at its first node.
    """
    depth = min(max(k, start or k), limit)
    found = -1
    while True:
        nodes = list(search(depth))
        seen: set[str] = set()
        for i, node in enumerate(nodes):
            seen.add(doc_key(node))
            if len(seen) == k:
                return nodes[: i + 1]
        if len(nodes) <= found or depth >= limit:
            return nodes
        found = len(nodes)
        depth = min(depth * 2, limit)


def reference_contexts(dataset: Dataset, question: LabelledQuestion) -> list[str]:
    """The evidence strings, or the relevant documents' texts."""
    if dataset.relevance == "evidence":
        return list(question.evidence)
    return [dataset.documents[d].text for d in sorted(question.relevant_docs)
            if d in dataset.documents]


def _percentile(values: Sequence[float], q: float) -> float:
    # Linear interpolation between closest ranks (numpy's default).
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _answer_scores(pairs: Sequence[tuple[str, str]]) -> dict[str, float | None]:
    if not pairs:
        return {"f1": None, "em": None}
    return {"f1": statistics.fmean(token_f1(p, r) for p, r in pairs),
            "em": statistics.fmean(exact_match(p, r) for p, r in pairs)}


def score_outcomes(dataset: Dataset, outcomes: Sequence[Outcome], k: int,
                   doc_of: Mapping[str, str] | None = None) -> dict[str, float | None]:
    """Every non-ragas metric of one run. None marks a metric the set cannot give."""
    doc_of = doc_of or {}
    by_id = {q.id: q for q in dataset.questions}
    questions = [by_id[o.qid] for o in outcomes]
    metrics: dict[str, float | None] = {}

    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for q, o in zip(questions, outcomes, strict=True):
        if q.answerable and (q.evidence or q.relevant_docs):
            qrels[q.id], run[q.id] = judge(dataset, q, o.ranked, doc_of)
    if qrels:
        metrics |= ranking_metrics(qrels, run, k)
    else:
        metrics |= dict.fromkeys([f"mrr@{k}", f"ndcg@{k}", f"recall@{k}", "hit@1", f"hit@{k}"])

    referenced = [(q, o) for q, o in zip(questions, outcomes, strict=True)
                  if q.answerable and q.answer]
    metrics |= _answer_scores([(o.answer, q.answer) for q, o in referenced])
    answered = [(o.answer, q.answer) for q, o in referenced if o.answerable]
    metrics["f1_answered"] = _answer_scores(answered)["f1"]
    metrics["answered_rate"] = statistics.fmean(o.answerable for o in outcomes)
    evidenced = [(q, o) for q, o in zip(questions, outcomes, strict=True) if q.answerable and q.evidence]
    metrics["answer_accuracy"] = answer_accuracy([(o.answer, q.evidence) for q, o in evidenced])
    # answerable questions answered "not covered": the failure a user trusts least
    metrics["answerable_abstained"] = (float(sum(not o.answerable for q, o in evidenced))
                                       if evidenced else None)

    golds = [q.answerable for q in questions]
    noanswer = noanswer_scores([o.answerable for o in outcomes], golds)
    metrics |= noanswer
    # the low-confidence flag as a softer abstention: "not covered" or flagged
    flagged = noanswer_scores([o.answerable and not o.low_confidence for o in outcomes], golds)
    metrics["flagged_noanswer_precision"] = flagged["noanswer_precision"]
    metrics["flagged_noanswer_recall"] = flagged["noanswer_recall"]
    metrics["low_confidence_rate"] = (statistics.fmean(o.low_confidence for q, o in evidenced)
                                      if evidenced else None)
    metrics |= _threshold_sweep(questions, outcomes, referenced)

    supports = [o.citation_support for o in outcomes if o.answerable and o.citation_support is not None]
    metrics["citation_support"] = statistics.fmean(supports) if supports else None
    tokens = [o.context_tokens for o in outcomes if o.context_tokens is not None]
    metrics["context_tokens"] = statistics.fmean(tokens) if tokens else None
    latencies = [o.latency_s * 1000 for o in outcomes]
    metrics["latency_p50_ms"] = _percentile(latencies, 0.5)
    metrics["latency_p95_ms"] = _percentile(latencies, 0.95)
    return metrics


def _threshold_sweep(questions: Sequence[LabelledQuestion], outcomes: Sequence[Outcome],
                     referenced: Sequence[tuple[LabelledQuestion, Outcome]]
                     ) -> dict[str, float | None]:
    names = ["abstain_threshold", "noanswer_precision_at_best", "noanswer_recall_at_best",
             "noanswer_f1_at_best", "f1_at_best", "em_at_best", "answer_accuracy_at_best"]
    out: dict[str, float | None] = dict.fromkeys(names)
    confidences = [o.confidence for o in outcomes]
    if all(q.answerable for q in questions) or any(c is None for c in confidences):
        return out  # nothing to abstain on, or no confidence to sweep
    scores = [float(c) for c in confidences if c is not None]
    golds = [q.answerable for q in questions]
    # An answer without a candidate (nothing citable) abstains at every threshold.
    cant = [o.candidate == "" for o in outcomes]
    best = best_abstain_threshold(scores, golds)
    preds = [not c and not abstains(s, best) for s, c in zip(scores, cant, strict=True)]
    sweep = noanswer_scores(preds, golds)
    out["abstain_threshold"] = best
    out["noanswer_precision_at_best"] = sweep["noanswer_precision"]
    out["noanswer_recall_at_best"] = sweep["noanswer_recall"]
    out["noanswer_f1_at_best"] = sweep["noanswer_f1"]
    answered_at = {o.qid: p for o, p in zip(outcomes, preds, strict=True)}
    pairs: list[tuple[str, str]] = []
    for q, o in referenced:
        if not answered_at[o.qid]:
            pairs.append(("", q.answer))
        elif o.candidate is None:
            return out  # a service abstained where this threshold answers: answer unknown
        else:
            pairs.append((o.candidate, q.answer))
    scores_at = _answer_scores(pairs)
    out["f1_at_best"], out["em_at_best"] = scores_at["f1"], scores_at["em"]
    out["answer_accuracy_at_best"] = answer_accuracy(
        [((o.candidate or "") if answered_at[o.qid] else "", q.evidence)
         for q, o in zip(questions, outcomes, strict=True) if q.answerable and q.evidence])
    return out


# --- the whole evaluation --------------------------------------------------------------


@dataclass
class RunResult:
    spec: RunSpec
    metrics: dict[str, float | None]
    outcomes: list[Outcome] = field(default_factory=list)


@dataclass
class Evaluation:
    dataset: Dataset
    k: int
    source: str
    runs: list[RunResult]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def evaluate(dataset: Dataset, specs: Sequence[RunSpec], backend: Backend, *, k: int = 10,
             ragas: Any = None, progress: bool = False,
             on_progress: Callable[[], None] | None = None) -> Evaluation:
    """Score every configuration in `specs` on `dataset`; `ragas` is a `RagasScorer` or None."""
    if k < 1:
        raise EvalError(f"k must be a positive integer, got {k}")
    if not dataset.questions:
        raise EvalError(f"dataset {dataset.name!r} has no questions")
    if not specs:
        raise EvalError("no configuration to run")
    started = time.perf_counter()
    questions = list(dataset.questions)
    backend.prepare(specs, questions)
    bar = _bar(len(questions) * len(specs), progress)
    doc_of = getattr(backend, "doc_of", None) or _doc_map_for_http(dataset)

    def tick() -> None:
        if bar is not None:
            bar.update(1)
        if on_progress is not None:
            on_progress()

    runs: list[RunResult] = []
    try:
        for spec in specs:
            if bar is not None:
                bar.set_description(spec.name)
            outcomes = backend.run(spec, questions, k, tick)
            metrics = score_outcomes(dataset, outcomes, k, doc_of)
            if isinstance(backend, LocalBackend):
                metrics["embed_ms_per_question"] = backend.embed_s_per_question * 1000
            if ragas is not None:
                metrics |= ragas.score(ragas_samples(dataset, questions, outcomes))
            runs.append(RunResult(spec, metrics, outcomes))
    finally:
        if bar is not None:
            bar.close()
    notes = list(ragas.notes()) if ragas is not None else []
    if isinstance(backend, HttpBackend):
        notes.append("--url: answers come from POST /v1/ask, which always auto-merges; the "
                     "ranking metrics come from GET /v1/search with the run's mode and merge.")
    return Evaluation(dataset, k, backend.description, runs, notes,
                      time.perf_counter() - started)


def ragas_samples(dataset: Dataset, questions: Iterable[LabelledQuestion],
                  outcomes: Sequence[Outcome]) -> list[Any]:
    from eval.ragas_metrics import RagasSample

    return [RagasSample(question=q.question, response=o.answer, contexts=o.contexts,
                        reference=q.answer if q.answerable else "",
                        reference_contexts=reference_contexts(dataset, q) if q.answerable else ())
            for q, o in zip(questions, outcomes, strict=True)]


def _doc_map_for_http(dataset: Dataset) -> dict[str, str]:
    # A service that ingested the corpus `write_corpus` writes names files the same way:
    # match a hit's source to a document by its file name.
    if dataset.relevance != "document" or not dataset.documents:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        return {p.name: d for p, d in write_corpus(dataset, Path(tmp)).items()}


def _bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="q", leave=False, dynamic_ncols=True)


def outcome_rows(evaluation: Evaluation) -> Iterable[dict[str, Any]]:
    """One JSON-ready row per question and run, for `per_question.jsonl` next to the report."""
    for run in evaluation.runs:
        for o in run.outcomes:
            row = asdict(o)
            row["ranked"] = [r["node_id"] for r in row["ranked"]]
            row.pop("contexts")
            yield {"run": run.spec.name, **row}
