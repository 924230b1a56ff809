"""Which cross-encoder ran: /readyz and each answer say it; a damaged model stops the start."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest

from index.answer.extractive import DEFAULT_LOW_CONFIDENCE
from index.models.reranker import (
    PACKAGED_NAME,
    BatchingReranker,
    RerankerError,
    packaged_dir,
)
from index.models.threads import default_workers
from service.app import build_engine
from service.metrics import Metrics

from .conftest import make_settings


async def test_readyz_and_answers_name_the_reranker(api: httpx.AsyncClient) -> None:
    ready = (await api.get("/readyz")).json()
    assert ready["reranker"] == PACKAGED_NAME
    body = (await api.post("/v1/ask", json={"question": "Which GAN metric is lower-is-better?"})).json()
    assert body["reranker"] == PACKAGED_NAME
    assert body["answerable"] is True and 0.0 < body["confidence"] <= 1.0
    assert body["low_confidence"] is (body["confidence"] < DEFAULT_LOW_CONFIDENCE)
    assert body["answer"].startswith("FID (Fréchet Inception Distance)")
    # scored on the cross-encoder's shared encoder thread, which counts its batches
    metrics = (await api.get("/metrics")).text
    count = re.search(r"^notesrag_rerank_batch_size_count (\S+)$", metrics, re.M)
    assert count is not None and float(count.group(1)) >= 1, metrics[:2000]
    chat = (await api.post("/v1/chat/completions", json={
        "model": "notesrag", "messages": [{"role": "user", "content": "How do I boil an egg?"}]})).json()
    meta = chat["notesrag"]  # off the notes: "not covered", which is no flagged answer
    assert meta["answerable"] is False and meta["low_confidence"] is False and meta["confidence"] < 0.15


def test_a_damaged_reranker_fails_the_start_naming_its_file(tmp_path: Path) -> None:
    src = packaged_dir()
    assert src is not None
    folder = tmp_path / "reranker"
    shutil.copytree(src, folder)
    (folder / "model.onnx").write_bytes(b"\x00" * 64)
    settings = make_settings(tmp_path / "index", reranker=str(folder))
    with pytest.raises(RerankerError, match=re.escape(str(folder / "model.onnx"))):
        build_engine(settings, Metrics())
    assert build_engine(make_settings(tmp_path / "index", reranker="none"), Metrics()).reranker is None
    engine = build_engine(make_settings(tmp_path / "index"), Metrics())
    assert isinstance(engine.reranker, BatchingReranker)  # shared by the answerer and retrieval
    assert engine.answerers["extractive"].reranker is engine.reranker  # type: ignore[attr-defined]
    # one encoder thread a core, each pair alone on one onnxruntime thread
    assert engine.reranker.workers == default_workers() and engine.reranker.chunk == 1
    inner = engine.reranker.inner
    assert inner.session.get_session_options().intra_op_num_threads == 1  # type: ignore[attr-defined]
    one = build_engine(make_settings(tmp_path / "index", rerank_workers=1, rerank_threads=2), Metrics()).reranker
    assert isinstance(one, BatchingReranker) and one.workers == 1
    assert one.inner.session.get_session_options().intra_op_num_threads == 2  # type: ignore[attr-defined]
