"""The CUDA path, checked and measured: run by bench/gpu_check.sh (see there).

Correctness (exit status 1 on any mismatch, after the table is printed):
- embeddings on the device (CUDA: fp16, as the service runs them) against the CPU's fp32
  ones, for leaf chunks and the labelled questions: every cosine >= 1 - 1e-2;
- `index.store.vectors.FaissIndex` (exact) searching on the GPU against a CPU `IndexFlatIP` on
  the same vectors: the index must be on the GPU, top-10 ids the same sets (recall 1.0
  allowing for swaps among tied scores) and scores within 1e-3.
Speed: leaf chunks/s embedded (128-token leaves) at batch sizes 64-1024, and FAISS search
at 1M vectors: one query at a time (p50 / p99) and 1,000 queries in one call, on the GPU
against CPU exact search on every core.

`--device cpu` runs the same code on the CPU with small sizes: a dry run of this script
where there is no GPU (the comparisons are then trivially equal).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
COSINE_TOLERANCE = 1e-2
SCORE_TOLERANCE = 1e-3


def leaf_windows(tokenizer: Any, n: int, tokens: int = 128) -> list[str]:
    """`n` texts of `tokens` tokens each (special tokens included), cut from pydoc's topics.

    Windows of the model's own tokens rather than the llama-index chunker's leaves: the same
    length for the encoder without installing the ingestion stack on the GPU host.
    """
    from pydoc_data.topics import topics

    body = tokens - 2  # [CLS] and [SEP]
    out: list[str] = []
    for key in sorted(topics):
        ids = tokenizer(topics[key], add_special_tokens=False)["input_ids"]
        out += [tokenizer.decode(ids[a:a + body]) for a in range(0, len(ids) - body + 1, body)]
        if len(out) >= n:
            break
    if not out:
        raise RuntimeError("no text to embed")
    return [out[i % len(out)] for i in range(n)]


def questions() -> list[str]:
    lines = (ROOT / "data" / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["question"] for line in lines if line.strip()]


class Report:
    def __init__(self) -> None:
        self.checks: list[tuple[str, bool, str]] = []
        self.rows: list[tuple[str, str, str]] = []

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))
        print(f"{'PASS' if ok else 'FAIL'}: {name}: {detail}", file=sys.stderr, flush=True)

    def row(self, what: str, setting: str, value: str) -> None:
        self.rows.append((what, setting, value))
        print(f"{what} [{setting}]: {value}", file=sys.stderr, flush=True)

    @property
    def failed(self) -> list[str]:
        return [name for name, ok, _ in self.checks if not ok]

    def markdown(self, header: list[str]) -> str:
        lines = [*header, "", "| check | result | detail |", "|---|---|---|"]
        lines += [f"| {n} | {'pass' if ok else '**FAIL**'} | {d} |" for n, ok, d in self.checks]
        lines += ["", "| measured | setting | result |", "|---|---|---|"]
        lines += [f"| {w} | {s} | {v} |" for w, s, v in self.rows]
        return "\n".join(lines)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def check_embeddings(rep: Report, device: str, n_check: int, n_bench: int,
                     batch_sizes: list[int], model: str | None = None) -> None:
    import torch

    from index.models.embedder import SentenceTransformerEmbedder

    cpu = SentenceTransformerEmbedder(model, device="cpu")
    dev = SentenceTransformerEmbedder(model, device=device)
    dtype = next(dev._model.parameters()).dtype
    if device.startswith("cuda"):
        rep.check("embedder runs in fp16 on CUDA", dtype == torch.float16, f"weights {dtype}")
    texts = leaf_windows(dev._model.tokenizer, max(n_check, n_bench))
    sample = texts[:n_check] + questions()
    a = cpu.encode(sample)
    b = dev.encode(sample)
    cos = (a * b).sum(axis=1)
    worst = int(np.argmin(cos))
    rep.check(f"embeddings {device} vs CPU fp32, {len(sample)} texts", bool(cos.min() >= 1 - COSINE_TOLERANCE),
              f"cosine min {cos.min():.5f} (text {worst}), mean {cos.mean():.5f}; "
              f"tolerance 1 - {COSINE_TOLERANCE}")
    lens = [len(dev._model.tokenizer(t)["input_ids"]) for t in texts[:64]]
    rep.row("leaf length", "tokens, special ones included", f"{statistics.median(lens):.0f} (median of 64)")
    dev.encode(texts[: max(batch_sizes)], batch_size=max(batch_sizes))  # warm-up: kernels, allocator
    for bs in batch_sizes:
        _sync(device)
        t = time.perf_counter()
        dev.encode(texts[:n_bench], batch_size=bs)
        _sync(device)
        s = time.perf_counter() - t
        rep.row("embed leaf chunks", f"batch {bs}, {n_bench} leaves, {'fp16' if dtype == torch.float16 else 'fp32'}",
                f"{n_bench / s:,.0f} chunks/s")
    del dev
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def check_faiss(rep: Report, device: str, n: int, queries: int) -> None:
    import faiss

    from bench.faiss_scale import Mixture, recall_at
    from index.store.vectors import FaissIndex

    t = time.perf_counter()
    data = Mixture().sample(n)
    qs = Mixture().sample(queries, stream=1)
    rep.row("FAISS data", f"{n:,} x {data.shape[1]} clustered unit vectors", f"generated in {time.perf_counter() - t:.1f} s")

    cpu = faiss.IndexFlatIP(data.shape[1])
    cpu.add(data)
    t = time.perf_counter()
    cpu_scores, cpu_ids = cpu.search(qs, 10)
    cpu_batch_s = time.perf_counter() - t

    idx = FaissIndex(data.shape[1], "flat", hnsw_threshold=n + 1)
    idx.add(np.arange(n, dtype=np.int64), data)
    t = time.perf_counter()
    idx.search(qs[:1], 10)  # moves the index to the GPU where there is one
    move_s = time.perf_counter() - t
    if device.startswith("cuda"):
        rep.check("FAISS index searched on the GPU", idx.on_gpu,
                  f"faiss {faiss.__version__}, {faiss.get_num_gpus()} GPU(s) seen, on_gpu={idx.on_gpu}")
    t = time.perf_counter()
    scores, ids = idx.search(qs, 10)
    batch_s = time.perf_counter() - t
    recall = recall_at(ids, cpu_ids)
    diff = float(np.abs(scores - cpu_scores).max())
    # Ids may differ only where scores tie at the 10th place: compare scores, and ids by set.
    rep.check(f"FAISS {'GPU' if idx.on_gpu else 'CPU'} search vs CPU exact, {queries} queries, k=10",
              recall >= 0.999 and diff <= SCORE_TOLERANCE,
              f"recall@10 {recall:.4f}, max score difference {diff:.2e} (tolerance {SCORE_TOLERANCE})")
    where = "GPU" if idx.on_gpu else "CPU"
    rep.row(f"FAISS exact search ({where})", f"{n:,} vectors, {queries} queries in one call",
            f"{queries / batch_s:,.0f} queries/s (index moved in {move_s:.2f} s)")
    rep.row("FAISS exact search (CPU, every core)", f"{n:,} vectors, {queries} queries in one call",
            f"{queries / cpu_batch_s:,.0f} queries/s ({os.cpu_count()} cores); {where}/CPU "
            f"{cpu_batch_s / batch_s:.1f}x")
    times = []
    for q in qs[: min(queries, 500)]:
        t = time.perf_counter_ns()
        idx.search(q[None, :], 10)
        times.append((time.perf_counter_ns() - t) / 1e6)
    times.sort()
    rep.row(f"FAISS exact search ({where})", f"{n:,} vectors, one query at a time, k=10",
            f"p50 {statistics.median(times):.3f} ms, p99 {times[int(len(times) * 0.99) - 1]:.3f} ms")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu for a dry run")
    ap.add_argument("--leaves", type=int, help="leaf chunks per throughput run")
    ap.add_argument("--batch-sizes", help="comma-separated")
    ap.add_argument("--vectors", type=int, help="FAISS index size")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--out", type=Path, help="also write the table here")
    ap.add_argument("--model", help="a sentence-transformers folder (default: the packaged MiniLM)")
    a = ap.parse_args(argv)
    gpu = a.device.startswith("cuda")
    leaves = a.leaves or (20_000 if gpu else 256)
    batch_sizes = [int(x) for x in (a.batch_sizes or ("64,128,256,512,1024" if gpu else "64,128")).split(",")]
    vectors = a.vectors or (1_000_000 if gpu else 100_000)

    import faiss
    import torch

    rep = Report()
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    header = [f"# notesrag GPU check ({a.device})", "",
              f"- device: {name}; torch {torch.__version__} (CUDA {torch.version.cuda}); "
              f"faiss {faiss.__version__}, {faiss.get_num_gpus()} GPU(s) seen by FAISS; "
              f"{os.cpu_count()} CPU cores; model {a.model or 'all-MiniLM-L6-v2 (packaged)'}",
              f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"]
    if gpu:
        rep.check("torch sees a CUDA device", torch.cuda.is_available(), name)
        rep.check("FAISS sees a GPU", faiss.get_num_gpus() > 0,
                  f"faiss.get_num_gpus() = {faiss.get_num_gpus()} (install faiss-gpu-cu12, not faiss-cpu)")
        if rep.failed:
            print(rep.markdown(header))
            return 1
    t0 = time.perf_counter()
    check_embeddings(rep, a.device, 512, leaves, batch_sizes, a.model)
    check_faiss(rep, a.device, vectors, a.queries)
    rep.row("whole check", "", f"{time.perf_counter() - t0:.0f} s")
    table = rep.markdown(header)
    print(table)
    if a.out:
        a.out.write_text(table + "\n")
    if rep.failed:
        print(f"FAILED: {', '.join(rep.failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
