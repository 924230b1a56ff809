"""The QA engine: the served snapshot, query embedding micro-batches, the answer cache.

A request takes the current `Served` (snapshot + retriever) once and uses it
to the end, so a snapshot swap never changes an answer half-way; the old
snapshot is freed when its last request finishes. The engine swaps when the
index directory's CURRENT names a new snapshot (checked every
`reload_interval_s`) or when an ingest job of this process finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from index import Embedder, Hit, Retriever, Snapshot, SnapshotError, current_path, load_snapshot
from index.config import IndexConfig
from index.models.embedder import encode_queries
from index.models.reranker import Reranker
from index.search.retriever import DEFAULT_FUSION, DEFAULT_RERANK_WEIGHT
from index.store.snapshot import SnapshotUnavailable, manifest_dict
from service import logs
from service.answerers import (
    Answerer,
    AnswerRequest,
    AnswerResult,
    Cited,
    StreamItem,
    SyncAnswerer,
    Turn,
    pieces,
)
from service.links import Linker, hide_paths
from service.metrics import Metrics

T = TypeVar("T")


class NotReady(Exception):
    """No index is loaded yet (or the embedder is still loading)."""


@dataclass(frozen=True, slots=True)
class Served:
    snapshot: Snapshot
    retriever: Retriever
    size_bytes: int = 0

    @property
    def version(self) -> str:
        return self.snapshot.version


@dataclass(slots=True)
class Timings:
    embed_ms: float = 0.0
    retrieval_ms: float = 0.0
    answer_ms: float = 0.0
    total_ms: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(getattr(self, k), 3) for k in ("embed_ms", "retrieval_ms", "answer_ms", "total_ms")}


@dataclass(slots=True)
class QAResult:
    answer: AnswerResult
    hits: list[Hit]
    snapshot: str
    timings: Timings
    cached: bool = False
    retrieval_query: str = ""


@dataclass(slots=True)
class Query:
    question: str
    top_k: int = 5
    mode: str = "hybrid"
    history: Sequence[Turn] = ()  # earlier turns of a chat, oldest first
    use_cache: bool = True
    answerer: str | None = None  # None: the engine's default answerer

    def cache_key(self, version: str, answerer: str) -> Hashable:
        history = tuple((t.role, t.content) for t in self.history)
        return (version, " ".join(self.question.split()).lower(), history, self.top_k, self.mode, answerer)


class LRUCache:
    """A bounded mapping that forgets the least recently used entry; size 0 keeps nothing."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"cache size must be >= 0, got {size}")
        self.size = size
        self._data: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable) -> Any | None:
        try:
            self._data.move_to_end(key)
        except KeyError:
            return None
        return self._data[key]

    def put(self, key: Hashable, value: Any) -> None:
        if self.size == 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class MicroBatcher:
    """Collects questions from concurrent requests into one encoder call.

    The encoder runs in its own thread, one call at a time, and a batch holds at
    most `max_batch` texts. Questions that arrive while it runs form the next
    batch. Under concurrent load (the last batch held more than one question)
    the first question of a batch also waits up to `window_s` for company; a
    lone question at low load is encoded at once, so it pays no window.
    """

    def __init__(self, embedder: Embedder, window_s: float = 0.002, max_batch: int = 32,
                 metrics: Metrics | None = None, thread_init: Callable[[], None] | None = None) -> None:
        if window_s < 0:
            raise ValueError(f"window_s must be >= 0, got {window_s}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.embedder = embedder
        self.window_s = window_s
        self.max_batch = max_batch
        self.metrics = metrics
        self.batches = 0
        self._last_size = 0
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[np.ndarray]]] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="notesrag-encode", initializer=thread_init)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="notesrag-microbatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def embed(self, text: str) -> np.ndarray:
        """The normalised vector of `text`, computed in a batch with whatever else is waiting."""
        if self._task is None:
            raise RuntimeError("the micro-batcher is not started")
        fut: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((text, fut))
        return await fut

    async def embed_many(self, texts: Sequence[str]) -> list[np.ndarray]:
        return list(await asyncio.gather(*(self.embed(t) for t in texts)))

    async def _gather(self) -> list[tuple[str, asyncio.Future[np.ndarray]]]:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        window = self.window_s if self._last_size > 1 or not self._queue.empty() else 0.0
        deadline = loop.time() + window
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                async with asyncio.timeout(left):
                    batch.append(await self._queue.get())
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [(t, f) for t, f in await self._gather() if not f.done()]  # drop cancelled requests
            if not batch:
                continue
            texts = list(dict.fromkeys(t for t, _ in batch))
            self._last_size = len(batch)
            try:
                vecs = await loop.run_in_executor(self._executor, encode_queries, self.embedder, texts)
            except Exception as e:  # every waiting request gets the error, the loop goes on
                for _, f in batch:
                    if not f.done():
                        f.set_exception(e)
                continue
            self.batches += 1
            if self.metrics is not None:
                self.metrics.embed_batch_size.observe(len(texts))
            row = {t: i for i, t in enumerate(texts)}
            for t, f in batch:
                if not f.done():
                    f.set_result(vecs[row[t]])


# A chat turn that leans on the one before: it starts like a continuation ("and ...", "what
# about ...") or points back (a pronoun, "the same", "the latter"). A turn with neither, of at
# least FOLLOW_UP_WORDS words, stands alone: a new topic is searched by itself, not pulled back to
# the earlier one's.
_LEANS_BACK = re.compile(
    r"^\W*(and|also|or|but|so|then|what about|how about|why|how come|same|versus|vs)\b"
    # "that" after a noun starts a clause ("a loss that is robust"); after a verb or a
    # preposition, or first, it points back ("does that apply", "what about that")
    r"|(^\W*|\b(is|are|was|were|does|do|did|can|could|will|would|about|of|for|with|on|in|like|than"
    r"|why|how|use|used)\s+)that\b"
    r"|\b(it|its|it's|itself|this|these|those|they|them|their|theirs|he|she|his|her|which one"
    r"|the same|the former|the latter|the above|the previous|the other|above|previous|former|latter)\b",
    re.IGNORECASE)
FOLLOW_UP_WORDS = 4


def is_follow_up(question: str) -> bool:
    """Whether a chat turn needs the earlier one to be understood: it refers back, or it is too
    short to stand alone ("Why?", "In PyTorch?")."""
    return len(question.split()) < FOLLOW_UP_WORDS or _LEANS_BACK.search(question) is not None


def retrieval_text(query: Query) -> str:
    """What retrieval searches for: the question, after the previous user turn for a follow-up
    (`is_follow_up`); a turn that stands alone is searched by itself."""
    earlier = [t.content for t in query.history if t.role == "user" and t.content.strip()]
    if not earlier or not is_follow_up(query.question):
        return query.question
    return f"{earlier[-1]}\n{query.question}"


class QAEngine:
    """Answers questions from the snapshot it serves; swaps snapshots as they appear."""

    def __init__(self, index_dir: Path, embedder_factory: Callable[[], Embedder], answerers: dict[str, Answerer], *,
                 default_answerer: str = "extractive", merge_threshold: float = 0.5,
                 batch_window_s: float = 0.002, batch_max: int = 32, cache_size: int = 1024,
                 reload_interval_s: float = 1.0, query_threads: int = 2, metrics: Metrics | None = None,
                 thread_init: Callable[[], None] | None = None, index_config: IndexConfig | None = None,
                 reranker: Reranker | None = None, rerank_depth: int = 0,
                 rerank_weight: float = DEFAULT_RERANK_WEIGHT, fusion: str = DEFAULT_FUSION,
                 linker: Linker | None = None) -> None:
        if default_answerer not in answerers:
            raise ValueError(f"default answerer {default_answerer!r} is not one of {sorted(answerers)}")
        self.index_dir = Path(index_dir)
        self.index_config = index_config  # how to reach a Milvus snapshot's vectors (URI, token)
        self.embedder_factory = embedder_factory
        self.answerers = answerers
        self.default_answerer = default_answerer
        self.merge_threshold = merge_threshold
        self.reranker, self.rerank_depth = reranker, rerank_depth  # fused leaves reranked before merge
        self.rerank_weight = rerank_weight
        self.fusion = fusion  # how the dense and BM25 lists are fused
        # every source and citation the engine returns goes through it: relative paths and links
        self.linker = linker or Linker()
        self.batch_window_s = batch_window_s
        self.batch_max = batch_max
        self.reload_interval_s = reload_interval_s
        self.metrics = metrics or Metrics()
        self.cache = LRUCache(cache_size)
        self.embedder: Embedder | None = None
        self.batcher: MicroBatcher | None = None
        self.served: Served | None = None
        self.last_error: str | None = None
        self._reload_lock = asyncio.Lock()
        self._failed: str | None = None  # a snapshot that would not load: not retried until CURRENT moves
        self._watcher: asyncio.Task[None] | None = None
        # retrieval and cheap answers; few threads: more would only fight over the GIL
        # thread_init runs first in each worker thread: OpenMP thread counts are per thread
        self.thread_init = thread_init
        self._pool = ThreadPoolExecutor(query_threads, thread_name_prefix="notesrag-query", initializer=thread_init)

    # -- life cycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Load the embedder and the snapshot in the background; poll CURRENT from then on."""
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="notesrag-watcher")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        if self.batcher is not None:
            await self.batcher.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for a in self.answerers.values():
            await a.aclose()
        close = getattr(self.reranker, "close", None)  # the batching cross-encoder's thread
        if close is not None:
            await asyncio.to_thread(close)

    async def _load_embedder(self) -> None:
        try:
            embedder: Embedder = await asyncio.to_thread(self.embedder_factory)
            await asyncio.to_thread(encode_queries, embedder, ["warm-up"])  # the first pass is slow
        except Exception as e:
            self.last_error = f"cannot load the embedding model: {e}"
            logs.event("embedder_failed", 40, error=str(e))
            raise
        self.embedder = embedder
        self.batcher = MicroBatcher(embedder, self.batch_window_s, self.batch_max, self.metrics, self.thread_init)
        self.batcher.start()
        logs.event("embedder_loaded", model=embedder.model_name, dim=embedder.dim, device=embedder.device)

    async def _watch(self) -> None:
        while self.embedder is None:
            try:
                await self._load_embedder()
            except Exception:
                await asyncio.sleep(max(self.reload_interval_s, 5.0))
        while True:
            try:
                await self.reload()
            except Exception as e:  # keep serving the old snapshot; try again next tick
                logs.event("reload_failed", 40, error=str(e))
            await asyncio.sleep(self.reload_interval_s)

    async def reload(self, force: bool = False) -> bool:
        """Swap to the snapshot CURRENT names, if it is not the one served; True when swapped.

        A snapshot that failed to load is tried again only when `force` is set or CURRENT changes.
        """
        if self.embedder is None:
            return False
        async with self._reload_lock:
            try:
                path = await asyncio.to_thread(current_path, self.index_dir)
            except SnapshotError as e:
                self.last_error = str(e)
                return False
            if path is None:
                self.last_error = f"no index in {self.index_dir} yet"
                return False
            if self.served is not None and path.name == self.served.version:
                return False
            if path.name == self._failed and not force:
                return False
            try:
                served = await asyncio.to_thread(self._load, path)
            except SnapshotUnavailable as e:  # Milvus down or its Lite file held: try again next tick
                self.last_error = str(e)
                raise
            except (SnapshotError, OSError, ValueError) as e:
                self.last_error, self._failed = str(e), path.name
                raise
            old = self.served
            self.served = served  # one assignment: a request sees the old pair or the new one
            self.last_error = self._failed = None
            self.cache.clear()
            self._observe_index(served)
            logs.event("snapshot_swapped", version=served.version, previous=old.version if old else None,
                       nodes=served.snapshot.manifest.nodes, leaves=served.snapshot.manifest.leaves,
                       index_kind=served.snapshot.vectors.kind)
            return True

    def _load(self, path: Path) -> Served:
        assert self.embedder is not None
        snap = load_snapshot(self.index_dir, config=self.index_config)
        retriever = Retriever(snap, self.embedder, merge_threshold=self.merge_threshold,
                              reranker=self.reranker, rerank_depth=self.rerank_depth,
                              rerank_weight=self.rerank_weight, fusion=self.fusion)
        if snap.path.name != path.name:
            logs.event("snapshot_moved_on", wanted=path.name, loaded=snap.path.name)
        return Served(snap, retriever, _dir_size(snap.path))

    def _observe_index(self, served: Served) -> None:
        m, metrics = served.snapshot.manifest, self.metrics
        metrics.snapshot_swaps.inc()
        metrics.ready.set(1)
        metrics.index_files.set(len(m.files))
        metrics.index_nodes.set(m.nodes)
        metrics.index_leaves.set(m.leaves)
        metrics.index_sentences.set(m.sentences)
        metrics.index_bytes.set(served.size_bytes)

    # -- state ------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.served is not None and self.batcher is not None

    def current(self) -> Served:
        served = self.served
        if served is None or self.batcher is None:
            # callers are not told where the index or the model lie on this host (the log says)
            raise NotReady(hide_paths(self.last_error or "the index is loading"))
        return served

    def describe(self) -> dict[str, Any]:
        served = self.current()
        assert self.embedder is not None
        return {**manifest_dict(served.snapshot), "device": self.embedder.device,
                "encoder_backend": getattr(self.embedder, "query_backend", None)
                or getattr(self.embedder, "backend", "torch"),
                "answerer": self.default_answerer, "reranker": self.reranker_name,
                "low_confidence_threshold": getattr(self.answerers.get("extractive"),
                                                    "low_confidence_threshold", None)}

    @property
    def reranker_name(self) -> str | None:
        """The cross-encoder the extractive answers use (the LLM's gate too), if any."""
        reranker = getattr(self.answerers.get("extractive"), "reranker", None)
        return getattr(reranker, "name", None)

    def answerer(self, name: str | None) -> Answerer:
        name = name or self.default_answerer
        try:
            return self.answerers[name]
        except KeyError:
            raise ValueError(f"answerer must be one of {', '.join(sorted(self.answerers))}, "
                             f"got {name!r}") from None

    # -- queries ---------------------------------------------------------------------
    def _linked(self, answer: AnswerResult, served: Served) -> AnswerResult:
        """The answer with its citations as callers see them: relative source, lines, anchor, url (and a
        cross-encoder set by its folder named without the folder's place)."""
        return dataclasses.replace(answer, citations=self.linker.citations(answer.citations, served.snapshot),
                                   reranker=hide_paths(answer.reranker) if answer.reranker else answer.reranker)

    async def _vectors(self, query: Query) -> tuple[np.ndarray, np.ndarray, str]:
        """(retrieval vector, answer vector, retrieval text) for a question and its chat context."""
        assert self.batcher is not None
        text = retrieval_text(query)
        if text == query.question:
            v = await self.batcher.embed(text)
            return v, v, text
        q, ctx = await self.batcher.embed_many([query.question, text])
        # the question leads; the earlier turn only pulls retrieval towards its topic
        answer_vec = q + 0.5 * ctx
        answer_vec = answer_vec / max(float(np.linalg.norm(answer_vec)), 1e-12)
        return ctx, answer_vec.astype(np.float32), text

    async def _in_pool(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def search(self, query: Query, merge: bool = True) -> tuple[list[Hit], str, Timings]:
        served = self.current()
        t0 = time.perf_counter()
        if query.mode == "bm25":
            text, vec = retrieval_text(query), None
        else:
            vec, _, text = await self._vectors(query)
        t1 = time.perf_counter()
        hits = await self._in_pool(lambda: self.linker.hits(
            served.retriever.search(text, query.top_k, query.mode, merge, vec), served.snapshot))
        t2 = time.perf_counter()
        self.metrics.retrieval_seconds.labels(query.mode).observe(t2 - t1)
        self.metrics.embed_seconds.observe(t1 - t0)
        return hits, served.version, Timings((t1 - t0) * 1e3, (t2 - t1) * 1e3, 0.0, (t2 - t0) * 1e3)

    async def _prepare(self, query: Query, served: Served, answerer: Answerer | None = None,
                       ) -> tuple[AnswerRequest, AnswerResult | None, Timings, str, list[Hit]]:
        """Embed, retrieve, and when `answerer` can answer synchronously (cheap CPU work, like the
        extractive one), answer in the same worker-thread call: one hand-off instead of two. The
        answer (when there is one) and the hits come back linked (`_linked`), also off the event
        loop; the request keeps the hits as retrieved, for an answerer that runs later."""
        t0 = time.perf_counter()
        vec, answer_vec, text = await self._vectors(query)
        t1 = time.perf_counter()
        sync = answerer.answer_sync if isinstance(answerer, SyncAnswerer) else None

        def work() -> tuple[AnswerRequest, AnswerResult | None, float, float, list[Hit]]:
            a = time.perf_counter()
            hits = served.retriever.search(text, query.top_k, query.mode, True,
                                           None if query.mode == "bm25" else vec)
            req = AnswerRequest(query.question, answer_vec, hits, served.snapshot, tuple(query.history))
            b = time.perf_counter()
            answer = sync(req) if sync is not None else None
            answer_s = time.perf_counter() - b
            linked = self.linker.hits(hits, served.snapshot)
            return req, self._linked(answer, served) if answer is not None else None, b - a, answer_s, linked

        req, answer, retrieval_s, answer_s, hits = await self._in_pool(work)
        self.metrics.embed_seconds.observe(t1 - t0)
        self.metrics.retrieval_seconds.labels(query.mode).observe(retrieval_s)
        if answer is not None:
            self.metrics.answer_seconds.labels(answer.answerer).observe(answer_s)
        timings = Timings(embed_ms=(t1 - t0) * 1e3, retrieval_ms=retrieval_s * 1e3, answer_ms=answer_s * 1e3)
        return req, answer, timings, text, hits

    def _cached(self, query: Query, served: Served, answerer: Answerer) -> tuple[Hashable, QAResult | None]:
        key = query.cache_key(served.version, answerer.name)
        hit = self.cache.get(key) if query.use_cache else None
        self.metrics.cache.labels("hit" if hit is not None else "miss").inc()
        return key, hit

    async def ask(self, query: Query) -> QAResult:
        """Answer one question from the snapshot served when it arrived."""
        served = self.current()
        answerer = self.answerer(query.answerer)
        t0 = time.perf_counter()
        key, hit = self._cached(query, served, answerer)
        if hit is not None:
            return _from_cache(hit, t0)
        req, answer, timings, text, hits = await self._prepare(query, served, answerer)
        if answer is None:
            t1 = time.perf_counter()
            answer = await answerer.answer(req)
            timings.answer_ms = (time.perf_counter() - t1) * 1e3
            self.metrics.answer_seconds.labels(answer.answerer).observe(timings.answer_ms / 1e3)
            answer = self._linked(answer, served)
        timings.total_ms = (time.perf_counter() - t0) * 1e3
        result = QAResult(answer, hits, served.version, timings, retrieval_query=text)
        if not answer.warnings:  # a fallback is not worth remembering
            self.cache.put(key, result)
        return result

    async def ask_stream(self, query: Query) -> AsyncIterator[tuple[str, Any]]:
        """Events of one answer, in order: ("contexts", QAResult with an empty answer), then
        ("citations", list[Citation]) and ("delta", str) several times, citations first when the
        answerer knows them before it writes, and ("done", QAResult) last."""
        served = self.current()
        answerer = self.answerer(query.answerer)
        t0 = time.perf_counter()
        key, hit = self._cached(query, served, answerer)
        if hit is not None:
            result = _from_cache(hit, t0)
            yield "contexts", result
            yield "citations", result.answer.citations
            for piece in pieces(result.answer.text):
                yield "delta", piece
            yield "done", result
            return
        req, _, timings, text, hits = await self._prepare(query, served)
        pending = AnswerResult("", False, [], 0.0, answerer.name)
        result = QAResult(pending, hits, served.version, timings, retrieval_query=text)
        yield "contexts", result
        t1 = time.perf_counter()
        final: AnswerResult | None = None
        cited = False
        item: StreamItem
        async for item in answerer.stream(req):
            if isinstance(item, AnswerResult):
                final = item
            elif isinstance(item, Cited):
                cited = True
                yield "citations", self.linker.citations(item.citations, served.snapshot)
            else:
                yield "delta", item
        assert final is not None, "an answerer stream must end with its AnswerResult"
        final = self._linked(final, served)
        if not cited:
            yield "citations", final.citations
        t2 = time.perf_counter()
        self.metrics.answer_seconds.labels(final.answerer).observe(t2 - t1)
        timings.answer_ms, timings.total_ms = (t2 - t1) * 1e3, (t2 - t0) * 1e3
        result = QAResult(final, hits, served.version, timings, retrieval_query=text)
        if not final.warnings:
            self.cache.put(key, result)
        yield "done", result


def _from_cache(hit: QAResult, t0: float) -> QAResult:
    total = (time.perf_counter() - t0) * 1e3
    return QAResult(hit.answer, hit.hits, hit.snapshot, Timings(total_ms=total), cached=True,
                    retrieval_query=hit.retrieval_query)


def _dir_size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file():
                total += p.stat().st_size
    return total

