"""int8 against fp32 question vectors on a labelled set, against one snapshot's passage vectors.

Both encoders are `OnnxQuestionEmbedder` (the service's CPU question encoder): the fp32
export, and its dynamically quantised int8 copy. Each question is encoded alone, as a
request at low load is. The same snapshot (made by `notesrag ingest` or `notesrag eval`;
its passages fp32 by torch, or int8 as `EMBED_BACKEND=auto` embeds them now) is searched with each set of vectors, and the eval's own scoring ranks the first 10
distinct documents of a BEIR set. int8 becomes the CPU default only within 0.005 nDCG@10.

    python -m bench.int8_questions --beir ../shared/datasets/scifact --index-dir DIR \\
        [--cache-root DIR] [--modes dense,hybrid]

`--cache-root` is where `notesrag eval` keeps the BEIR corpus it wrote (`corpus-<hash>/`),
so documents map back to their ids; nothing is written there.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class OneAtATime:
    """An embedder that encodes each text in its own call (no batch shares a quantisation scale)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.model_name, self.dim, self.device = inner, inner.model_name, inner.dim, "cpu"
        self.seconds = 0.0

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        t = time.perf_counter()
        out = np.vstack([self.inner.encode_queries([x]) for x in texts])
        self.seconds += time.perf_counter() - t
        return out


def main(beir: Path, index_dir: Path, cache_root: Path, modes: list[str]) -> list[str]:
    from eval.datasets import load_beir
    from eval.runner import IndexCache, LocalBackend, build_specs, evaluate
    from index import load_snapshot
    from index.models.embedder import model_location
    from index.models.onnx import OnnxQuestionEmbedder

    dataset = load_beir(beir)
    snapshot = load_snapshot(index_dir)
    location, label = model_location(snapshot.manifest.model)
    specs = build_specs(modes, chunk_sizes=(tuple(snapshot.manifest.chunk_sizes),))
    rows: dict[str, dict[str, Any]] = {}
    for name, quantize in (("fp32", False), ("int8", True)):
        enc = OneAtATime(OnnxQuestionEmbedder(location, label, None, few=1, quantize=quantize))
        backend = LocalBackend(dataset, IndexCache(cache_root), enc, reranker="none",
                               snapshots={specs[0].chunk_sizes: snapshot})
        evaluation = evaluate(dataset, specs, backend, k=10, progress=False)
        n = len(dataset.questions)
        rows[name] = {"ms": enc.seconds * 1e3 / n,
                      **{r.spec.name: r.metrics for r in evaluation.runs}}
    lines = [f"{dataset.name}: {len(dataset.questions)} questions, {snapshot.manifest.leaves} leaves; "
             f"passages {snapshot.manifest.embedder_backend or 'torch'}, questions encoded one at a time",
             "| questions | mode | nDCG@10 | MRR@10 | Recall@10 | encode ms/question |", "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        for spec in specs:
            m = row[spec.name]
            lines.append(f"| {name} | {spec.name} | {m['ndcg@10']:.4f} | {m['mrr@10']:.4f} | "
                         f"{m['recall@10']:.4f} | {row['ms']:.2f} |")
    for spec in specs:
        d = rows["int8"][spec.name]["ndcg@10"] - rows["fp32"][spec.name]["ndcg@10"]
        lines.append(f"{spec.name}: int8 - fp32 nDCG@10 = {d:+.4f} ({'within' if abs(d) <= 0.005 else 'outside'} 0.005)")
    return lines


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--beir", type=Path, required=True)
    ap.add_argument("--index-dir", type=Path, required=True, help="a snapshot of the set's corpus (fp32 or int8 passages)")
    ap.add_argument("--cache-root", type=Path, default=Path("var/eval-cache"))
    ap.add_argument("--modes", default="dense,hybrid")
    a = ap.parse_args()
    print("\n".join(main(a.beir, a.index_dir, a.cache_root, a.modes.split(","))))
