"""The packaged cross-encoder: loads offline, ranks, refuses a damaged model by name, and is
shared by concurrent requests through its encoder threads."""

from __future__ import annotations

import re
import shutil
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from index.models.reranker import (
    PACKAGED_NAME,
    PACKAGED_SHA256,
    BatchingReranker,
    OnnxCrossEncoder,
    RerankerError,
    get_reranker,
    packaged_dir,
    sigmoid,
)


def test_ranks_the_relevant_passage_first(reranker: OnnxCrossEncoder) -> None:
    q = "Which GAN metric is lower-is-better?"
    passages = ["Shared memory does not overflow silently; an overflow will raise errors.",
                "FID (Fréchet Inception Distance): measures distribution similarity between "
                "generated images and real images. Lower is better."]
    scores = reranker.score(q, passages)
    assert scores.shape == (2,)
    assert scores[1] > scores[0] + 3  # logits: far apart, not a coin toss
    assert 0.0 < float(sigmoid(scores[0])) < float(sigmoid(scores[1])) < 1.0
    assert reranker.score(q, []).shape == (0,)
    # the same pair alone: int8 dynamic quantisation sets its activation scales per run, so
    # each pair runs alone (DEFAULT_CHUNK) and its logit does not depend on its company
    alone = reranker.score(q, passages[1:])
    assert float(alone[0]) == pytest.approx(float(scores[1]), abs=1e-5)
    assert float(alone[0]) > float(reranker.score(q, passages[:1])[0]) + 3


def test_settings_names(reranker: OnnxCrossEncoder) -> None:
    assert get_reranker("none") is None
    auto = get_reranker("auto")
    assert auto is not None and auto.name == PACKAGED_NAME
    folder = get_reranker(str(packaged_dir()))
    assert folder is not None and folder.name == PACKAGED_NAME  # the same folder: checked too
    with pytest.raises(ValueError, match="reranker must be auto, none"):
        get_reranker(" ")


def _copy(tmp_path: Path) -> Path:
    src = packaged_dir()
    assert src is not None
    dst = tmp_path / "reranker"
    shutil.copytree(src, dst)
    return dst


def test_a_damaged_model_fails_naming_the_file(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    model = folder / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    model.write_bytes(bytes(data))
    with pytest.raises(RerankerError, match=f"damaged: {re.escape(str(model))} has sha256"):
        OnnxCrossEncoder(folder, sha256=PACKAGED_SHA256)
    model.write_bytes(b"not an onnx model")  # and without a checksum, onnxruntime's refusal
    with pytest.raises(RerankerError, match=f"unreadable: {re.escape(str(model))}"):
        OnnxCrossEncoder(folder)


def test_a_missing_file_fails_naming_it(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(RerankerError, match=f"missing: {re.escape(str(folder / 'tokenizer.json'))}"):
        OnnxCrossEncoder(folder, sha256=PACKAGED_SHA256)


QUESTIONS = [("Which GAN metric is lower-is-better?",
              ["FID (Fréchet Inception Distance): lower is better.", "Shared memory overflows raise errors."]),
             ("What does asyncio.gather return?",
              ["asyncio.gather returns the results of the awaitables in order.", "FID compares images."]),
             ("What is a warp in CUDA?", ["A warp is 32 threads that execute in lockstep."]),
             ("How does BM25 saturate term frequency?",
              ["BM25: term frequency saturates through k1; long documents are damped by b.",
               "Mean pooling averages token vectors.", "Dropout zeroes activations at random."]),
             ("What is dropout?", ["Dropout zeroes activations at random during training."])]


class Gated:
    """The real cross-encoder, whose first call waits for `release`: requests queue behind it."""

    def __init__(self, inner: OnnxCrossEncoder) -> None:
        self.inner, self.name = inner, inner.name
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls: list[int] = []

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        self.calls.append(len(pairs))
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(30)
        return self.inner.score_pairs(pairs)


def _in_threads(batcher: BatchingReranker, items: list[tuple[str, list[str]]]) -> tuple[list[threading.Thread], dict[int, np.ndarray]]:
    got: dict[int, np.ndarray] = {}

    def call(i: int, q: str, ps: list[str]) -> None:
        got[i] = batcher.score(q, ps)

    threads = [threading.Thread(target=call, args=(i, q, ps)) for i, (q, ps) in enumerate(items)]
    for t in threads:
        t.start()
    return threads, got


def test_concurrent_requests_share_one_call_and_get_their_scores_alone(reranker: OnnxCrossEncoder) -> None:
    gated = Gated(reranker)
    batcher = BatchingReranker(gated, window_s=0.002, max_requests=32)
    try:
        first, got_first = _in_threads(batcher, QUESTIONS[:1])
        assert gated.entered.wait(30)  # the encoder thread is busy with the first request
        rest, got = _in_threads(batcher, QUESTIONS[1:])
        for _ in range(3000):  # until all four wait in the queue (bounded; no timing asserted)
            if batcher._queue.qsize() == len(QUESTIONS) - 1:
                break
            threading.Event().wait(0.01)
        gated.release.set()
        for t in first + rest:
            t.join(30)
        assert batcher.sizes == Counter({1: 1, 4: 1})  # the four waiting ones: one batch
        assert gated.calls == [2, sum(len(ps) for _, ps in QUESTIONS[1:])]
        for i, (q, ps) in enumerate(QUESTIONS[1:]):
            assert got[i] == pytest.approx(reranker.score(q, ps), abs=1e-5)
        assert got_first[0] == pytest.approx(reranker.score(*QUESTIONS[0]), abs=1e-5)
    finally:
        batcher.close()


def test_a_lone_request_is_scored_at_once(reranker: OnnxCrossEncoder) -> None:
    batcher = BatchingReranker(reranker, window_s=60.0)  # a lone request that waited would hang here
    try:
        for n in (1, 2):
            threads, got = _in_threads(batcher, QUESTIONS[:1])
            threads[0].join(30)
            assert not threads[0].is_alive()
            assert batcher.sizes == Counter({1: n})
        assert batcher.score("anything", []).shape == (0,)
        assert got[0] == pytest.approx(reranker.score(*QUESTIONS[0]), abs=1e-5)
    finally:
        batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.score(*QUESTIONS[0])


def test_an_error_reaches_its_callers_and_the_thread_goes_on(reranker: OnnxCrossEncoder) -> None:
    class Flaky:
        name = "flaky"
        calls = 0

        def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise ValueError("model failed")
            return reranker.score_pairs(pairs)

    batcher = BatchingReranker(Flaky(), window_s=0.0)
    try:
        with pytest.raises(ValueError, match="model failed"):
            batcher.score(*QUESTIONS[0])
        assert batcher.score(*QUESTIONS[0]) == pytest.approx(reranker.score(*QUESTIONS[0]), abs=1e-5)
    finally:
        batcher.close()
    with pytest.raises(ValueError, match="window_s must be >= 0"):
        BatchingReranker(reranker, window_s=-1)
    with pytest.raises(ValueError, match="max_requests must be >= 1"):
        BatchingReranker(reranker, max_requests=0)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        BatchingReranker(reranker, workers=0)
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        OnnxCrossEncoder(Path("unused"), chunk=0)


def test_pairs_of_several_questions_in_one_call_score_as_alone(reranker: OnnxCrossEncoder) -> None:
    pairs = [(q, p) for q, ps in QUESTIONS for p in ps]
    together = reranker.score_pairs(pairs)
    alone = np.concatenate([reranker.score(q, ps) for q, ps in QUESTIONS])
    assert together == pytest.approx(alone, abs=1e-5)  # sorted by length inside, in order outside
    assert together[0] > together[1] + 3


class Recording:
    """The real cross-encoder, one pair a run (as the packaged one), noting each run's pairs and
    thread; its first `together` runs wait until that many run at once (a barrier)."""

    chunk = 1

    def __init__(self, inner: OnnxCrossEncoder, together: int = 0, fail_on: str | None = None) -> None:
        self.inner, self.name = inner, inner.name
        self.runs: list[tuple[str, list[tuple[str, str]]]] = []
        self.together = together
        self.barrier = threading.Barrier(max(together, 1), timeout=30)
        self.fail_on = fail_on
        self._lock = threading.Lock()

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        with self._lock:
            self.runs.append((threading.current_thread().name, list(pairs)))
            first = len(self.runs) <= self.together
        if first:
            self.barrier.wait()  # BrokenBarrierError, the request's error, unless enough run at once
        if self.fail_on is not None and any(p == self.fail_on for _, p in pairs):
            raise ValueError(f"cannot score {self.fail_on!r}")
        return self.inner.score_pairs(pairs)


def test_a_lone_requests_pairs_run_on_two_workers_at_once(reranker: OnnxCrossEncoder) -> None:
    q, ps = QUESTIONS[3]  # three passages
    rec = Recording(reranker, together=2)  # the first two runs pass only if both run at once
    batcher = BatchingReranker(rec, window_s=60.0, workers=2)  # a lone request: no window
    try:
        got = batcher.score(q, ps)
        assert got == pytest.approx(reranker.score(q, ps), abs=1e-5)  # in the order asked
        assert [len(pairs) for _, pairs in rec.runs] == [1, 1, 1]  # one pair a run
        assert len({name for name, _ in rec.runs}) == 2
        assert batcher.sizes == Counter({1: 1})
    finally:
        batcher.close()
    assert not any(t.is_alive() for t in batcher._threads)  # the dispatcher and both workers stopped


def test_pairs_run_longest_first_and_score_as_alone_on_two_workers(reranker: OnnxCrossEncoder) -> None:
    rec = Recording(reranker)
    one = BatchingReranker(rec, window_s=0.0)
    try:
        q, ps = QUESTIONS[3]
        one.score(q, ps)
        lengths = [len(pairs[0][1]) for _, pairs in rec.runs]
        assert lengths == sorted((len(p) for p in ps), reverse=True)  # the long ones start first
    finally:
        one.close()
    two = BatchingReranker(reranker, window_s=0.002, workers=2)
    try:
        threads, got = _in_threads(two, QUESTIONS * 4)  # 20 requests at once, whatever their company
        for t in threads:
            t.join(60)
        for i, (q, ps) in enumerate(QUESTIONS * 4):
            assert got[i] == pytest.approx(reranker.score(q, ps), abs=1e-5)
        assert sum(n * k for n, k in two.sizes.items()) == 20
    finally:
        two.close()


def test_a_failing_run_fails_its_request_only_and_the_workers_go_on(reranker: OnnxCrossEncoder) -> None:
    q, ps = QUESTIONS[3]
    batcher = BatchingReranker(Recording(reranker, fail_on=ps[1]), window_s=0.0, workers=2)
    try:
        with pytest.raises(ValueError, match="cannot score"):
            batcher.score(q, ps)
        assert batcher.score(*QUESTIONS[0]) == pytest.approx(reranker.score(*QUESTIONS[0]), abs=1e-5)
    finally:
        batcher.close()
