"""Ingestion benchmark: our pipeline against raw encoder throughput and a plain llama-index build.

Each contender runs in its own process (so peak RSS is its own) on the same
corpus, built from text that ships with Python, with the same model and the
same leaf chunks; model loading is not timed. Run: `python -m bench.ingest`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _leaf_texts(corpus: Path, with_sentences: bool = False) -> list[str]:
    from index.chunking import Chunker
    from index.documents import discover, read_source, sections
    from index.pipeline import embed_text
    from index.tree import NodeTree

    chunker, tree = Chunker(), NodeTree()
    for p in discover([corpus]):
        src = read_source(p, 1 << 30)
        tree.add(chunker.chunk(src, sections(src)))
    texts = [embed_text(tree[i]) for i in tree.leaves()]
    if with_sentences:
        from index.sentences import split_sentences

        for i in tree.leaves():
            t = tree[i].text
            texts.extend(t[a:b] for a, b in split_sentences(t))
    return texts


def worker(kind: str, corpus: Path) -> dict[str, float]:
    from index import get_embedder

    emb = get_embedder()
    emb.encode(["warm up"])
    out: dict[str, float] = {}
    if kind == "ours":
        from index import ingest_sync

        with tempfile.TemporaryDirectory() as idx:
            t = time.perf_counter()
            r = ingest_sync([corpus], idx, embedder=emb)
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


def _run(kind: str, corpus: Path) -> dict[str, float]:
    r = subprocess.run([sys.executable, "-m", "bench.ingest", "--worker", kind, "--corpus", str(corpus)],
                       capture_output=True, text=True, check=True, timeout=1200)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(sizes: list[float]) -> list[str]:
    from bench.corpus import build

    lines = ["| corpus | contender | leaf chunks | s | leaf chunks/s | leaf tokens/s | peak RSS MB "
             "| ratio to raw encode of leaves | ratio to raw encode of leaves + sentences |",
             "|---|---|---|---|---|---|---|---|---|"]
    for mb in sizes:
        with tempfile.TemporaryDirectory() as d:
            files, nbytes = build(Path(d), int(mb * 1_000_000))
            res = {k: _run(k, Path(d)) for k in ("raw", "raw+sentences", "ours", "llamaindex")}
            raw_rate = res["raw"]["chunks"] / res["raw"]["seconds"]
            same_rate = res["raw+sentences"]["chunks"] / res["raw+sentences"]["seconds"]
            tok_per_chunk = res["raw"]["tokens"] / res["raw"]["chunks"]
            for k, label in (("raw", "raw SentenceTransformer.encode, leaves"),
                             ("raw+sentences", "raw encode, leaves + their sentences (what ingest embeds)"),
                             ("ours", "notesrag ingest, end to end"),
                             ("llamaindex", "llama-index VectorStoreIndex")):
                r = res[k]
                rate = r["chunks"] / r["seconds"]
                lines.append(f"| {nbytes / 1e6:.2f} MB, {files} files | {label} | {r['chunks']:.0f} | "
                             f"{r['seconds']:.1f} | {rate:.1f} | {rate * tok_per_chunk:.0f} | "
                             f"{r['peak_rss_mb']:.0f} | {rate / raw_rate:.2f} | {rate / same_rate:.2f} |")
    return lines


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker")
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--sizes", default="0.25,1")
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.corpus)))
    else:
        print("\n".join(main([float(s) for s in a.sizes.split(",")])))
