"""The packaged cross-encoder: loads offline, ranks, and refuses a damaged model by name."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from index.models.reranker import (
    PACKAGED_NAME,
    PACKAGED_SHA256,
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
    # the same pair alone: int8 dynamic quantisation sets its activation scales per batch, so
    # a batch moves a logit a little, never across the gap between these two
    alone = reranker.score(q, passages[1:])
    assert abs(float(alone[0]) - float(scores[1])) < 1.0
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
