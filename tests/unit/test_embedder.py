"""Embedding backends: the ONNX question encoder gives torch's vectors; int8 passages run each
alone, close to torch's; "auto" never fails a start."""

from __future__ import annotations

import numpy as np
import pytest

from index.models.embedder import FEW_TEXTS, SentenceTransformerEmbedder

QUESTIONS = ["What is Huber loss?", "how do I tune num_leaves in LightGBM", "x" * 3000, "?"]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch) -> None:
    monkeypatch_module.setenv("NOTESRAG_ONNX_CACHE", str(tmp_path_factory.mktemp("onnx")))


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def torch_embedder() -> SentenceTransformerEmbedder:
    from index import get_embedder

    e = get_embedder(None, "cpu", "torch")
    assert isinstance(e, SentenceTransformerEmbedder) and e.backend == "torch"
    return e


@pytest.fixture(scope="module")
def onnx_embedder(onnx_cache: None) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(device="cpu", backend="auto")


def test_auto_on_the_cpu_is_onnx(onnx_embedder: SentenceTransformerEmbedder) -> None:
    assert onnx_embedder.backend == "onnx"


def test_onnx_questions_equal_torch(onnx_embedder: SentenceTransformerEmbedder, torch_embedder) -> None:
    got = onnx_embedder.encode(QUESTIONS)
    want = torch_embedder.encode(QUESTIONS)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_onnx_batches_go_through_torch(onnx_embedder: SentenceTransformerEmbedder, torch_embedder,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [f"note {i}: gradient boosting with {i} leaves" for i in range(FEW_TEXTS + 1)]
    calls: list[int] = []
    assert onnx_embedder._onnx is not None
    real = onnx_embedder._onnx.encode
    monkeypatch.setattr(onnx_embedder._onnx, "encode", lambda t, b=32: calls.append(len(t)) or real(t, b))
    np.testing.assert_allclose(onnx_embedder.encode(texts), torch_embedder.encode(texts), atol=1e-5)
    assert calls == []  # a batch: torch
    onnx_embedder.encode(texts[:FEW_TEXTS])
    assert calls == [FEW_TEXTS]  # a few texts: onnxruntime


def test_int8_stays_close(onnx_cache: None, torch_embedder) -> None:
    int8 = SentenceTransformerEmbedder(device="cpu", backend="onnx-int8")
    assert int8.backend == "onnx-int8"
    cos = (int8.encode(QUESTIONS) * torch_embedder.encode(QUESTIONS)).sum(axis=1)
    assert cos.min() > 0.97


def test_auto_falls_back_to_torch_when_the_export_fails(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                        torch_embedder) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("NOTESRAG_ONNX_CACHE", str(blocker))
    e = SentenceTransformerEmbedder(device="cpu", backend="auto")
    assert e.backend == "torch" and e._onnx is None
    np.testing.assert_allclose(e.encode(QUESTIONS[:2]), torch_embedder.encode(QUESTIONS[:2]), atol=1e-6)


def test_onnx_asked_for_by_name_fails_loudly(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("NOTESRAG_ONNX_CACHE", str(blocker))
    with pytest.raises(OSError):
        SentenceTransformerEmbedder(device="cpu", backend="onnx")


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="backend must be one of auto, torch, onnx, onnx-int8"):
        SentenceTransformerEmbedder(device="cpu", backend="tensorrt")


def test_the_service_encoder_runs_without_torch(tmp_path, torch_embedder) -> None:
    """The question encoder the service loads on a CPU host imports neither torch nor
    sentence-transformers, exports the model in a child process the first time, and gives
    vectors close to torch's; a batch (an ingestion job) runs in int8 too, each text alone, and
    loads no torch; the fp32 encoder's batch loads torch and gives its vectors."""
    import json
    import os
    import subprocess
    import sys

    script = """
import json, sys
from index.models.embedder import get_query_embedder
qs = json.loads(sys.argv[1])
e = get_query_embedder(device="cpu", few=4)
fp32 = get_query_embedder(device="cpu", backend="onnx", few=4)
out = {"backend": e.query_backend, "dim": e.dim, "model": e.model_name,
       "q": e.encode_queries(qs).tolist(), "alone": [e.encode_queries([q])[0].tolist() for q in qs],
       "workers": e.workers, "one_worker": get_query_embedder(device="cpu", few=4, workers=1).encode_queries(qs).tolist(),
       "fp32_backend": fp32.query_backend, "fp32": fp32.encode_queries(qs).tolist(),
       "passages": e.encode(qs).tolist(),
       "torch_before_batch": "torch" in sys.modules or "sentence_transformers" in sys.modules}
batch = [f"note {i}" for i in range(5)]
out["batch"] = e.encode(batch).tolist()
out["batch_alone"] = [e.encode([t])[0].tolist() for t in batch]
out["torch_after_batch"] = "torch" in sys.modules
out["fp32_batch"] = fp32.encode(batch).tolist()
out["torch_after_fp32_batch"] = "torch" in sys.modules
print(json.dumps(out))
"""
    env = {**os.environ, "NOTESRAG_ONNX_CACHE": str(tmp_path / "onnx"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script, json.dumps(QUESTIONS)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # the default on a CPU host: int8 questions (QUESTIONS_INT8), each the same alone as with company
    assert out["backend"] == "onnx-int8" and out["dim"] == 384 and out["model"] == "all-MiniLM-L6-v2"
    assert out["fp32_backend"] == "onnx"
    assert out["torch_before_batch"] is False and out["torch_after_batch"] is False
    assert out["torch_after_fp32_batch"] is True
    assert list((tmp_path / "onnx").rglob("model.onnx"))  # exported by the child process
    assert list((tmp_path / "onnx").rglob("model-int8.onnx"))  # and quantised without torch
    reference = torch_embedder.encode(QUESTIONS)
    np.testing.assert_allclose(np.array(out["fp32"], dtype=np.float32), reference, atol=1e-5)
    # passages (an ingest job's leaves) are int8 too (PASSAGES_INT8): the questions' vectors
    np.testing.assert_allclose(np.array(out["passages"], dtype=np.float32), np.array(out["q"], dtype=np.float32),
                               atol=1e-6)
    q8 = np.array(out["q"], dtype=np.float32)
    # a call's questions run on one thread a core, each alone: the vectors one thread gives
    assert out["workers"] == len(os.sched_getaffinity(0))
    np.testing.assert_allclose(q8, np.array(out["alone"], dtype=np.float32), atol=1e-6)
    np.testing.assert_allclose(q8, np.array(out["one_worker"], dtype=np.float32), atol=1e-6)
    cosines = (q8 * reference).sum(axis=1)
    assert cosines.min() > 0.97 and not np.allclose(q8, reference, atol=1e-5), cosines  # int8, and close
    batch = [f"note {i}" for i in range(5)]
    b8 = np.array(out["batch"], dtype=np.float32)
    np.testing.assert_allclose(b8, np.array(out["batch_alone"], dtype=np.float32), atol=1e-6)
    want = torch_embedder.encode(batch)
    assert (b8 * want).sum(axis=1).min() > 0.97
    np.testing.assert_allclose(np.array(out["fp32_batch"], dtype=np.float32), want, atol=1e-5)


def test_the_cpu_default_embeds_passages_in_int8_each_alone(embedder, torch_embedder, notes_snapshot) -> None:
    """What ingestion gets on a CPU host (`get_embedder`'s "auto"): the int8 export, each text
    alone (its vector does not depend on the rest of the batch), close to torch's; its
    sentence vectors pooled from the leaf's pass, and its token counts torch's tokenizer's."""
    from index.models.onnx import OnnxQuestionEmbedder

    assert isinstance(embedder, OnnxQuestionEmbedder) and embedder.backend == "onnx-int8" and embedder.pools_spans
    tree = notes_snapshot.tree
    leaves = [tree[i].text for i in tree.leaves()][:24]
    got = embedder.encode(leaves)
    np.testing.assert_allclose(got[:5], np.stack([embedder.encode([t])[0] for t in leaves[:5]]), atol=1e-6)
    np.testing.assert_allclose(got[:5], embedder.encode(leaves[:5][::-1])[::-1], atol=1e-6)
    want = torch_embedder.encode(leaves)
    cos = (got * want).sum(axis=1)
    assert cos.min() > 0.96 and cos.mean() > 0.985 and not np.allclose(got, want, atol=1e-4), cos
    assert [embedder.token_count(t) for t in leaves] == [torch_embedder.token_count(t) for t in leaves]
    long = "gradient " * 600  # past the model's window: the second span has no token in it
    texts = [*leaves[:3], long]
    spans = [[(0, 30), (len(t) // 2, len(t))] for t in texts]
    vectors, pooled = embedder.encode_spans(texts, spans)
    np.testing.assert_allclose(vectors[:3], got[:3], atol=1e-6)
    _, pooled_torch = torch_embedder.encode_spans(texts[:3], spans[:3])
    span_cos = np.concatenate([(a * b).sum(axis=1) for a, b in zip(pooled[:3], pooled_torch, strict=True)])
    assert span_cos.min() > 0.97, span_cos
    assert not np.isnan(pooled[3][0]).any() and np.isnan(pooled[3][1]).all()
