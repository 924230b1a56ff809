"""A sentence-transformers model run by onnxruntime: exported locally, optionally int8.

sentence-transformers' own `backend="onnx"` needs optimum-onnx, whose only release
(0.1.0) requires transformers < 4.58 while sentence-transformers 6 requires
transformers >= 5: the two cannot be installed together. So the model's transformer
is exported here with `torch.onnx.export`, from the folder already on disk (nothing is
downloaded), and the pooling and normalisation that follow it in the sentence-transformers
pipeline are done in numpy. The export is cached under `$NOTESRAG_ONNX_CACHE` (default
`~/.cache/notesrag/onnx`), keyed by the model's files and the torch version.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from index.models.pooling import pool_encoding_spans
from index.models.threads import RoundRobin

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def cache_dir() -> Path:
    return Path(os.environ.get("NOTESRAG_ONNX_CACHE", Path.home() / ".cache" / "notesrag" / "onnx"))


def _model_key(location: str) -> str:
    # torch's version without importing torch: a question encoder that finds its export here
    # never loads torch (see OnnxQuestionEmbedder)
    from importlib.metadata import version

    h = hashlib.sha256(version("torch").encode())
    root = Path(location)
    if root.is_dir():
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.suffix in (".json", ".safetensors", ".bin", ".txt"):
                st = p.stat()
                h.update(f"{p.relative_to(root)}:{st.st_size}:{int(st.st_mtime)}".encode())
    else:
        h.update(location.encode())
    return h.hexdigest()[:16]


def _pooling(st_model: Any) -> tuple[str, bool]:
    """(pooling mode, normalise) of a Transformer -> Pooling [-> Normalize] pipeline."""
    names = [type(m).__name__ for m in st_model]
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise ValueError(f"the onnx backend needs a Transformer -> Pooling [-> Normalize] model, got {names}")
    mode = getattr(st_model[1], "pooling_mode", None)
    if mode not in ("mean", "cls", "max"):
        raise ValueError(f"the onnx backend pools by mean, cls or max, got {mode!r}")
    return str(mode), len(names) == 3


def export(st_model: Any, path: Path) -> Path:
    """Write the model's transformer as ONNX (dynamic batch and sequence axes) to `path`."""
    import torch

    hf = st_model[0].auto_model.eval()
    enc = st_model.tokenizer(["an example", "a slightly longer example sentence"], padding=True,
                             return_tensors="pt")
    names = [n for n in _INPUTS if n in enc]

    class _Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = hf

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, args, strict=True))).last_hidden_state

    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter: it needs no onnxscript and handles BERT-style models;
            # its tracer warnings are about shapes the dynamic axes already cover.
            warnings.simplefilter("ignore")
            torch.onnx.export(_Wrapped(), tuple(enc[n] for n in names), tmp, input_names=names,
                              output_names=["last_hidden_state"], dynamic_axes=axes,
                              opset_version=17, dynamo=False)
        os.replace(tmp, path)  # atomic: a concurrent loader sees the whole file or none
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantisation of the weights (activations stay float)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=dst.parent)
    os.close(fd)
    try:
        # Per-channel scales: cosine to the fp32 vectors at least 0.989 on leaf chunks here,
        # against 0.93 with one scale per tensor. Its logger's advice to pre-process is noise.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quantize_dynamic(str(src), tmp, weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.setLevel(level)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst


class OnnxEncoder:
    """Encodes like `SentenceTransformer.encode(normalize_embeddings=True)`, through onnxruntime."""

    def __init__(self, st_model: Any, location: str, *, quantize: bool = False,
                 threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError("the onnx backends need onnxruntime and onnx: "
                              "pip install onnxruntime onnx") from None
        import torch

        self.pooling, self.normalize = _pooling(st_model)
        self.tokenizer = st_model.tokenizer
        self.max_length = int(st_model.max_seq_length or 512)
        folder = cache_dir() / _model_key(location)
        fp32 = folder / "model.onnx"
        if not fp32.exists():
            export(st_model, fp32)
        self.path = fp32
        if quantize:
            self.path = folder / "model-int8.onnx"
            if not self.path.exists():
                quantize_int8(fp32, self.path)
        options = ort.SessionOptions()
        # As many threads as torch would use, so the backends are compared on equal terms.
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # No busy-waiting between operators: in a server the encoder shares the cores with the
        # event loop and FAISS, and on this 2-core machine spinning threads slowed both.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        # Sorted by length, as sentence-transformers does, so a batch pads little.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out: np.ndarray | None = None
        for a in range(0, len(texts), batch_size):
            idx = order[a:a + batch_size]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="np")
            feeds = {n: np.asarray(enc[n], dtype=np.int64) for n in self.inputs}
            hidden = self.session.run(None, feeds)[0]
            vecs = self._pool(hidden, feeds["attention_mask"])
            if out is None:
                out = np.empty((len(texts), vecs.shape[1]), np.float32)
            out[idx] = vecs
        assert out is not None
        return out

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return _pool(hidden, mask, self.pooling, self.normalize)


def export_path(location: str) -> Path:
    """Where the fp32 export of the model at `location` is (or will be) cached."""
    return cache_dir() / _model_key(location) / "model.onnx"


def export_in_child(location: str, timeout_s: float = 600) -> Path:
    """Export the model in a child process, so that this one never imports torch."""
    import subprocess
    import sys

    path = export_path(location)
    if not path.exists():
        done = subprocess.run([sys.executable, "-m", "index.models.onnx", location],
                              capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0 or not path.exists():
            raise RuntimeError(f"the ONNX export of {location} failed: {done.stderr.strip()[-1000:]}")
    return path


def _read_json(path: Path) -> Any:
    import json

    return json.loads(path.read_text(encoding="utf-8"))


class OnnxQuestionEmbedder:
    """The `Embedder` the service runs on a CPU host: questions through the cached ONNX export,
    tokenised by `tokenizers`, with neither torch nor sentence-transformers in the process.

    That keeps the server's memory to what serving needs (torch and sentence-transformers
    are about 540 MB of RSS once imported). Without `int8_passages`, a call with more than
    `few` texts (an ingestion job in the service) loads the torch model on first use
    (`batch_embedder`); both give the same vectors. The model folder must be a
    sentence-transformers Transformer -> Pooling [-> Normalize] folder with a `tokenizer.json`.
    `quantize`: the export's int8 copy (`quantize_int8`, made here without torch) encodes the
    questions, which may be searched against fp32 passage vectors or int8 ones.

    `int8_passages` (needs `quantize`): passages go through the int8 copy too, each text
    alone, a batch's texts shared out to `workers` threads, with no torch ever loaded
    (`batch_embedder` is not called). Alone, a text's vector depends on the text only (int8
    activation scales are per call), and a mean-pooling model's sentence vectors can be
    pooled from their leaf's pass (`encode_spans`). This is what ingestion runs on a CPU
    host (`index.models.embedder.get_embedder`, backend "auto"): on SciFact about
    2-3x torch fp32's leaves a second, quality in bench/README.md (Ingestion).
    """

    def __init__(self, location: str, model_name: str, batch_embedder: Any, *, few: int = 16,
                 quantize: bool = False, workers: int = 1, int8_passages: bool = False) -> None:
        from tokenizers import Tokenizer

        if int8_passages and not quantize:
            raise ValueError("int8 passages need the int8 copy (quantize=True)")
        self._spread = RoundRobin(workers, "notesrag-encode-helper")  # refuses workers < 1 first
        self._passage_spread = RoundRobin(workers, "notesrag-passage")
        root = Path(location)
        listed = _read_json(root / "modules.json")
        modules = [m["type"].rsplit(".", 1)[-1] for m in listed]
        if modules not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            raise ValueError(f"the onnx backend needs a Transformer -> Pooling [-> Normalize] model, got {modules}")
        pooling_dir = listed[1]["path"]
        pooling = _read_json(root / pooling_dir / "config.json")
        modes = [m for m in ("cls", "mean", "max") if pooling.get(f"pooling_mode_{m}_token" if m == "cls"
                                                                   else f"pooling_mode_{m}_tokens")]
        if len(modes) != 1 or pooling.get("pooling_mode_mean_sqrt_len_tokens"):
            raise ValueError(f"the onnx backend pools by one of mean, cls or max, got {pooling}")
        self.pooling, self.normalize = modes[0], len(modules) == 3
        self.dim = int(pooling["word_embedding_dimension"])
        st_config = root / "sentence_bert_config.json"
        max_len = int(_read_json(st_config).get("max_seq_length") or 512) if st_config.exists() else 512
        tok_config = root / "tokenizer_config.json"
        if tok_config.exists():
            max_len = min(max_len, int(_read_json(tok_config).get("model_max_length") or max_len))
        self.tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_len)
        self._unpadded = Tokenizer.from_file(str(root / "tokenizer.json"))  # texts that run alone
        self._unpadded.enable_truncation(max_len)
        self._unpadded.no_padding()
        pad = self.tokenizer.padding or {}
        self.tokenizer.enable_padding(pad_id=pad.get("pad_id", 0), pad_token=pad.get("pad_token", "[PAD]"))
        self.path = export_in_child(location)
        # passages (`encode`): fp32, the vectors torch gives; or int8, each alone
        self.backend = "onnx-int8" if int8_passages else "onnx"
        self.int8_passages = int8_passages
        self.query_backend = "onnx-int8" if quantize else "onnx"  # questions (`encode_queries`)
        self.query_path = self.path
        if quantize:
            int8 = self.path.with_name("model-int8.onnx")
            self.query_path = int8 if int8.exists() else quantize_int8(self.path, int8)
        self._sessions: dict[Path, Any] = {}
        self.session = self._session(self.query_path)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.model_name, self.device, self.few = model_name, "cpu", few
        self._batch_embedder = batch_embedder
        self._lock = threading.Lock()
        self._passage_lock = threading.Lock()  # one passage batch at a time; questions run beside it
        # int8 questions run one a run; a micro-batch's runs are shared out to `workers` threads
        # (this one and workers - 1 more), calling the one session at once (its run releases
        # the GIL), so a batch of questions uses every core and each vector is still its own
        self.workers = workers

    def _session(self, path: Path) -> Any:
        """The onnxruntime session of `path`, made on first use (the fp32 one only when
        passages are encoded here, so an int8 question encoder does not hold both)."""
        if path not in self._sessions:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1  # one question at a time, as torch gets for a few texts
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._sessions[path] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return self._sessions[path]

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Questions: through the int8 copy when `quantize`, one question a run (int8
        activation scales are per tensor, so a question's vector would otherwise move with the
        rest of its micro-batch and their padding)."""
        if self.query_path == self.path:
            return self.encode(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.empty((len(texts), self.dim), dtype=np.float32)

        def each(_: int, items: range) -> None:
            for i in items:
                out[i] = self._run(self.session, [texts[i]])[0]

        with self._lock:
            self._spread.run(len(texts), each)
        return out

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """Passages: int8, each alone (`int8_passages`); else fp32, torch past `few` texts."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.int8_passages:
            return self._alone(texts, None)[0]
        if len(texts) > self.few:
            embedder = self._batch_embedder()  # torch, loaded on first use
            out: np.ndarray = embedder.encode(texts, batch_size)
            return out
        with self._lock:
            return self._run(self._session(self.path), texts)

    @property
    def pools_spans(self) -> bool:
        """Whether `encode_spans` can pool sentence vectors from a leaf's pass: int8 passages
        of a mean-pooling model."""
        return self.int8_passages and self.pooling == "mean"

    def encode_spans(self, texts: list[str], spans: Sequence[Sequence[tuple[int, int]]],
                     batch_size: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """One pass over `texts`: their vectors (as `encode` gives them) and, for each text, one
        vector per character span in `spans[i]`, pooled from the text's token vectors as the
        model pools a whole text (`index.models.pooling.pool_encoding_spans`; NaN rows for a span cut off
        by truncation)."""
        if not self.pools_spans:
            raise ValueError(f"{self.model_name}: spans are pooled from int8 passages of a mean-pooling model")
        return self._alone(texts, spans)

    def token_count(self, text: str) -> int:
        return len(self._unpadded.encode(text, add_special_tokens=False).ids)

    def _alone(self, texts: list[str], spans: Sequence[Sequence[tuple[int, int]]] | None,
               ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Passages through the int8 copy, each text in a run of its own, on `workers` threads."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        pooled: list[np.ndarray] = [np.zeros((0, self.dim), np.float32)] * len(texts)
        if not texts:
            return out, pooled
        encodings = self._unpadded.encode_batch(list(texts))

        def each(_: int, items: range) -> None:
            for i in items:
                e = encodings[i]
                ids = np.asarray([e.ids], dtype=np.int64)
                feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                         "token_type_ids": np.asarray([e.type_ids], dtype=np.int64)}
                hidden = self.session.run(None, {n: feeds[n] for n in self.inputs})[0]
                out[i] = _pool(hidden, feeds["attention_mask"], self.pooling, self.normalize)[0]
                if spans is not None:
                    pooled[i] = pool_encoding_spans(np.asarray(hidden[0], np.float32), e, spans[i])

        with self._passage_lock:
            self._passage_spread.run(len(texts), each)
        return out, pooled

    def _run(self, session: Any, texts: list[str]) -> np.ndarray:
        encs = self.tokenizer.encode_batch(texts)
        feeds = {"input_ids": np.array([e.ids for e in encs], dtype=np.int64),
                 "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
                 "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64)}
        feeds = {n: feeds[n] for n in self.inputs}
        hidden = session.run(None, feeds)[0]
        return _pool(hidden, feeds["attention_mask"], self.pooling, self.normalize)


def _pool(hidden: np.ndarray, mask: np.ndarray, pooling: str, normalize: bool) -> np.ndarray:
    if pooling == "cls":
        vecs = hidden[:, 0]
    elif pooling == "max":
        vecs = np.where(mask[..., None] > 0, hidden, -np.inf).max(axis=1)
    else:
        m = mask[..., None].astype(np.float32)
        vecs = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    if normalize:
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    return vecs


if __name__ == "__main__":  # python -m index.models.onnx MODEL_FOLDER: export it into the cache
    import sys

    from sentence_transformers import SentenceTransformer

    folder = sys.argv[1]
    target = export_path(folder)
    if not target.exists():
        export(SentenceTransformer(folder, device="cpu"), target)
    print(target)
