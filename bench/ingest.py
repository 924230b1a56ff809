"""Ingestion benchmark: our pipeline against raw encoder throughput and a plain llama-index build.

Each contender runs in its own process (so peak RSS is its own) on the same
corpus, built from text that ships with Python, with the same model and the
same leaf chunks; model loading is not timed. Run: `python -m bench.ingest`.

The Ray engine (`notesrag ingest --engine ray`) runs twice: starting its own local
Ray instance as the CLI does (Ray's start and stop timed), and joining one already
running (as on a cluster). Both include the start of the actor pool, whose actors
each load the model; its peak RSS is the driver's, the actors' own memory is not
counted. A second table splits the Ray runs into their sequential phases.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from index.ingestion.pipeline import IngestReport

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _leaf_texts(corpus: Path, with_sentences: bool = False) -> list[str]:
    from index.ingestion.chunking import Chunker
    from index.ingestion.documents import discover, read_source, sections
    from index.ingestion.pipeline import embed_text
    from index.store.tree import NodeTree

    chunker, tree = Chunker(), NodeTree()
    for p in discover([corpus]):
        src = read_source(p, 1 << 30)
        tree.add(chunker.chunk(src, sections(src)))
    texts = [embed_text(tree[i]) for i in tree.leaves()]
    if with_sentences:
        from index.store.sentences import split_sentences

        for i in tree.leaves():
            t = tree[i].text
            texts.extend(t[a:b] for a, b in split_sentences(t))
    return texts


def worker(kind: str, corpus: Path, model: str | None = None) -> dict[str, float]:
    from index import get_embedder

    emb = get_embedder(model)
    emb.encode(["warm up"])
    out: dict[str, float] = {}
    if kind in ("ours", "ours-pooled"):
        from index import IndexConfig, ingest_sync

        config = IndexConfig(sentence_vectors="pooled" if kind == "ours-pooled" else "separate")
        with tempfile.TemporaryDirectory() as idx:
            t = time.perf_counter()
            r = ingest_sync([corpus], idx, config, embedder=emb)
            out["seconds"] = time.perf_counter() - t
            out["chunks"] = r.leaves_embedded
            out["sentences"] = r.sentences_embedded
    elif kind in ("raw", "raw+sentences"):
        texts = _leaf_texts(corpus)
        out["chunks"] = len(texts)
        out["tokens"] = sum(emb.token_count(x) for x in texts)
        if kind == "raw+sentences":
            texts = _leaf_texts(corpus, with_sentences=True)
        t = time.perf_counter()
        emb.encode(texts)
        out["seconds"] = time.perf_counter() - t
    elif kind in ("ray", "ray-joined"):
        import logging

        import ray.data  # before quieting its logger: importing it configures the logger

        from index.ingestion.ray_engine import ingest_ray_sync

        if kind == "ray-joined":
            ray.init(address="local", num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False,
                     logging_level=logging.ERROR)
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        marks: dict[str, float] = {}

        def mark(report: IngestReport) -> None:
            if report.leaves_embedded and "first vectors back" not in marks:
                marks["first vectors back"] = time.perf_counter()
            marks.setdefault(report.stage, time.perf_counter())

        with tempfile.TemporaryDirectory() as idx:
            t = time.perf_counter()
            r = ingest_ray_sync([corpus], idx, embedder=emb, on_progress=mark)
            out["seconds"] = time.perf_counter() - t
            out["chunks"] = r.leaves_embedded
            out["sentences"] = r.sentences_embedded
        out.update({f"at {k}": v - t for k, v in marks.items()})
    elif kind == "llamaindex":
        from llama_index.core import Document, VectorStoreIndex
        from llama_index.core.node_parser import HierarchicalNodeParser, get_leaf_nodes

        from bench.llama_adapter import adapter

        docs = [Document(text=p.read_text(encoding="utf-8"), metadata={"file": p.name})
                for p in sorted(corpus.iterdir())]
        t = time.perf_counter()
        nodes = HierarchicalNodeParser.from_defaults(chunk_sizes=[2048, 512, 128]).get_nodes_from_documents(docs)
        leaves = get_leaf_nodes(nodes)
        VectorStoreIndex(leaves, embed_model=adapter(emb))
        out["seconds"] = time.perf_counter() - t
        out["chunks"] = len(leaves)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _run(kind: str, corpus: Path, model: str | None = None) -> dict[str, float]:
    r = subprocess.run([sys.executable, "-m", "bench.ingest", "--worker", kind, "--corpus", str(corpus),
                        *(["--model", model] if model else [])],
                       capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(r.stdout.strip().splitlines()[-1])


CONTENDERS = (("raw", "raw SentenceTransformer.encode, leaves"),
              ("raw+sentences", "raw encode, leaves + their sentences (what ingest embeds)"),
              ("ours", "notesrag ingest, end to end, sentences embedded apart"),
              ("ours-pooled", "notesrag ingest, end to end, sentence vectors pooled from the leaf pass"),
              ("ray", "notesrag ingest --engine ray, local Ray started by the run, {actors}"),
              ("ray-joined", "notesrag ingest --engine ray, joining a running Ray, {actors}"),
              ("llamaindex", "llama-index VectorStoreIndex"))
# The Ray runs' sequential phases: each runs from its mark (seconds into the run) to the next's.
PHASES = (("start", "set-up: chunker, discovery"), ("ingesting", "read + chunk"),
          ("starting ray", "start or join Ray, put the leaves"),
          ("embedding on ray", "actor pool start (model loads) to first vectors back"),
          ("first vectors back", "embed the rest"), ("writing snapshot", "FAISS, BM25, snapshot write"),
          ("done", "stop Ray, return"))


def _ratio(rate: float, rates: dict[str, float], to: str) -> str:
    return f"{rate / rates[to]:.2f}" if to in rates else "-"


def _first_files(src: Path, dst: Path, count: int | None) -> tuple[int, int]:
    """Copy the first `count` files of `src` (sorted by name; all when None) into `dst`."""
    import shutil

    from index.ingestion.documents import discover

    files = sorted(discover([src]))[:count]  # the files ingestion would read, not a cache's own
    for p in files:
        shutil.copyfile(p, dst / p.name)
    return len(files), sum(p.stat().st_size for p in files)


def main(sizes: list[float], contenders: list[str] | None = None, rounds: int = 1,
         corpus: Path | None = None, files: int | None = None, models: Sequence[str | None] = (None,),
         ) -> list[str]:
    """The tables. `contenders`: a subset of CONTENDERS' keys; `rounds`: runs of each, taken in
    turn (on a shared machine, load then falls on every contender alike), the median reported.
    `corpus`: a folder of files (say the SciFact abstracts `notesrag eval --beir` writes to its
    cache) instead of the built corpora, its first `files` files when given. `models`: each
    contender once per embedding model (None: the default), on the same files."""
    from bench.corpus import build

    kinds = [k for k, _ in CONTENDERS if contenders is None or k in contenders]
    lines = ["| corpus | contender | leaf chunks | s | leaf chunks/s | leaf tokens/s | peak RSS MB "
             "| ratio to raw encode of leaves | ratio to raw encode of leaves + sentences "
             "| ratio to notesrag ingest |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    phases = ["", "| corpus | Ray run | " + " | ".join(f"{label} s" for _, label in PHASES) + " |",
              "|---|---|" + "---|" * len(PHASES)]
    actors = f"{len(os.sched_getaffinity(0))} CPU actors"
    for mb in ([0.0] if corpus is not None else sizes):
        with tempfile.TemporaryDirectory() as d:
            if corpus is not None:
                nfiles, nbytes = _first_files(corpus, Path(d), files)
            else:
                nfiles, nbytes = build(Path(d), int(mb * 1_000_000))
            for model in models:
                lines.extend(_rows(Path(d), kinds, rounds, model, corpus, nfiles, nbytes, actors, phases))
    if rounds > 1:
        lines.append(f"\nmedians of {rounds} rounds (the lower middle one for an even count), contenders taken in "
                     "turn; peak RSS: the highest")
    return lines + (phases if len(phases) > 3 else [])


def _rows(d: Path, kinds: list[str], rounds: int, model: str | None, corpus: Path | None, nfiles: int,
          nbytes: int, actors: str, phases: list[str]) -> list[str]:
    """One model's rows of the table (and its Ray phases, appended to `phases`)."""
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    for _ in range(rounds):
        for k in kinds:
            runs[k].append(_run(k, d, model))
    res = {k: sorted(v, key=lambda r: r["seconds"])[(len(v) - 1) // 2] for k, v in runs.items()}
    rates = {k: r["chunks"] / r["seconds"] for k, r in res.items()}
    tok_per_chunk = res["raw"]["tokens"] / res["raw"]["chunks"] if "raw" in res else None
    label_of = f"{corpus.name}, " if corpus is not None else ""
    name = f"{label_of}{nbytes / 1e6:.2f} MB, {nfiles} files" + (f", {model}" if model else "")
    lines: list[str] = []
    for k, label in CONTENDERS:
        if k not in res:
            continue
        r, rate = res[k], rates[k]
        tokens = f"{rate * tok_per_chunk:.0f}" if tok_per_chunk else "-"
        lines.append(f"| {name} | {label.format(actors=actors)} | {r['chunks']:.0f} | "
                     f"{r['seconds']:.1f} | {rate:.1f} | {tokens} | "
                     f"{max(x['peak_rss_mb'] for x in runs[k]):.0f} | {_ratio(rate, rates, 'raw')} | "
                     f"{_ratio(rate, rates, 'raw+sentences')} | {_ratio(rate, rates, 'ours')} |")
    for k in ("ray", "ray-joined"):
        if k in res:
            at = [res[k].get(f"at {stage}", 0.0) for stage, _ in PHASES] + [res[k]["seconds"]]
            phases.append(f"| {name} | {k} | "
                          + " | ".join(f"{b - a:.1f}" for a, b in itertools.pairwise(at)) + " |")
    return lines


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker")
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--sizes", default="0.25,1")
    ap.add_argument("--contenders", help=f"comma-separated, of {','.join(k for k, _ in CONTENDERS)}")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each contender, in turn; medians")
    ap.add_argument("--from", dest="source", type=Path, metavar="DIR",
                    help="ingest the files of DIR instead of the built corpora (--sizes is ignored)")
    ap.add_argument("--files", type=int, metavar="N", help="with --from: its first N files by name")
    ap.add_argument("--models", help="comma-separated embedding models, each contender once per model "
                                     "(e.g. all-MiniLM-L6-v2,bge-small) [default: the default model]")
    ap.add_argument("--model", help=argparse.SUPPRESS)  # a worker's model
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.corpus, a.model)))
    else:
        print("\n".join(main([float(s) for s in a.sizes.split(",")],
                             a.contenders.split(",") if a.contenders else None, a.rounds,
                             a.source, a.files, a.models.split(",") if a.models else (None,))))
