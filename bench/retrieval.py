"""Retrieval constants swept side by side on labelled sets: fusion k and dense weight, merge
threshold, rerank depth and the reranker's share of the score (`mix_rerank`).

Every configuration ranks with the real `Retriever` on one cached snapshot per set (the eval
cache: `--index-dir`, as `notesrag eval` builds it), scored as `notesrag eval` scores it
(evidence strings for our JSONL set; the first k distinct documents for a BEIR folder). The
cross-encoder scores each (question, leaf) pair once; every configuration reuses the score, so
a sweep costs one cross-encoder pass at the deepest depth. Plain document-level baselines
(BM25 without stemming over whole documents, and, with `--baselines dense`, MiniLM over whole
documents and RRF k=60 of both) are scored in the same run.

    python -m bench.retrieval --set data/questions.jsonl --set ../shared/datasets/scifact \
        --index-dir /work/evcache --sentence-vectors pooled --depths 0,20,30,50 --weights 1,0.7,0.5
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class CachedReranker:
    """A reranker that scores each (question, passage) pair once."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name = inner, inner.name
        self.cache: dict[tuple[str, str], float] = {}
        self.pairs_scored = 0
        self.seconds = 0.0

    def load(self, path: Path) -> None:
        import json

        saved = json.loads(path.read_text())
        if saved["model"] == self.name:
            self.cache.update({(q, p): s for q, p, s in saved["pairs"]})

    def save(self, path: Path) -> None:
        import json

        path.write_text(json.dumps({"model": self.name,
                                    "pairs": [[q, p, s] for (q, p), s in self.cache.items()]}))

    def score(self, question: str, passages: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(p for p in passages if (question, p) not in self.cache))
        if missing:
            t = time.perf_counter()
            for p, s in zip(missing, self.inner.score(question, missing), strict=True):
                self.cache[(question, p)] = float(s)
            self.seconds += time.perf_counter() - t
            self.pairs_scored += len(missing)
        return np.array([self.cache[(question, p)] for p in passages], dtype=np.float32)


def load_set(path: Path) -> Any:
    from eval.datasets import load_beir, load_jsonl

    if path.is_dir():
        return load_beir(path)
    return load_jsonl(path, path.parent / "notes")


def score_config(dataset: Any, snapshot: Any, doc_of: dict[str, str], vectors: dict[str, np.ndarray],
                 retriever: Any, mode: str, merge: bool, k: int = 10) -> dict[str, float]:
    """MRR@k, nDCG@k, Recall@k of one retriever configuration, as `notesrag eval` scores it."""
    from eval.metrics import ranking_metrics
    from eval.runner import Ranked, _doc_id, fill_documents, judge

    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    documents = dataset.relevance == "document"
    for q in dataset.answerable:
        def search(depth: int, q: Any = q) -> list[Ranked]:
            return [Ranked(h.node_id, h.text, h.source) for h in retriever.search(
                q.question, k=depth, mode=mode, merge=merge, query_vector=vectors[q.question])]

        ranked = (fill_documents(search, k, lambda r: _doc_id(r.source, doc_of)) if documents
                  else search(k))
        qrels[q.id], run[q.id] = judge(dataset, q, ranked, doc_of)
    return _short(ranking_metrics(qrels, run, k), k)


def plain_baselines(dataset: Any, snapshot: Any, embedder: Any, with_dense: bool,
                    k: int = 10) -> dict[str, dict[str, float]]:
    """Plain baselines: BM25 (bm25s, lower-cased words, no stemming, no stop words dropped),
    MiniLM dense, RRF k=60 of both. For a BEIR set over whole documents (title and text, the
    model's window), scored by document; for our notes over the snapshot's leaves (their
    MiniLM vectors), scored by evidence as the eval scores nodes."""
    import bm25s

    from eval.metrics import document_judgements, evidence_judgements, ranking_metrics
    from index.models.embedder import encode_queries
    from index.search.fusion import rrf

    documents = dataset.relevance == "document"
    if documents:
        ids = sorted(dataset.documents)
        texts = [f"{dataset.documents[i].title}\n{dataset.documents[i].text}".strip() for i in ids]
    else:
        ids = list(snapshot.tree.leaves())
        texts = [snapshot.tree[i].text for i in ids]
    bm25 = bm25s.BM25()
    bm25.index(bm25s.tokenize(texts, stopwords=None, show_progress=False), show_progress=False)
    doc_vecs = None
    if with_dense:
        if documents:
            doc_vecs = embedder.encode(texts)
        else:
            from index.store.tree import vector_id

            stored_ids, stored = snapshot.vectors.export()
            row = {int(v): r for r, v in enumerate(stored_ids)}
            doc_vecs = stored[[row[vector_id(i)] for i in ids]]
    questions = list(dataset.answerable)
    qvecs = encode_queries(embedder, [q.question for q in questions]) if doc_vecs is not None else None
    runs: dict[str, dict[str, dict[str, float]]] = {}
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for qi, q in enumerate(questions):
        found, _ = bm25.retrieve(bm25s.tokenize([q.question], stopwords=None, show_progress=False),
                                 k=min(100, len(ids)), show_progress=False)
        lexical = [ids[int(d)] for d in found[0]]
        rankings = {"BM25 (plain)": lexical}
        if doc_vecs is not None and qvecs is not None:
            dense = [ids[int(d)] for d in np.argsort(-(doc_vecs @ qvecs[qi]))[:100]]
            rankings["MiniLM dense (plain)"] = dense
            rankings["RRF k=60 (plain)"] = [d for d, _ in rrf([dense, lexical], k=60)]
        for name, ranking in rankings.items():
            if documents:
                judged = document_judgements(ranking[:k], q.relevant_docs, dict(q.doc_grades))
            else:
                text_of = dict(zip(ids, texts, strict=True))
                judged = evidence_judgements([(i, text_of[i]) for i in ranking[:k]], q.evidence)
            qrels.setdefault(name, {})[q.id], runs.setdefault(name, {})[q.id] = judged
    return {name: _short(ranking_metrics(qrels[name], run, k), k) for name, run in runs.items()}


def _short(m: dict[str, float], k: int) -> dict[str, float]:
    return {"MRR": m[f"mrr@{k}"], "nDCG": m[f"ndcg@{k}"], "Recall": m[f"recall@{k}"]}


def main(argv: Sequence[str] | None = None) -> None:
    from eval.runner import IndexCache
    from index import Retriever, get_embedder
    from index.models.embedder import encode_queries
    from index.models.reranker import get_reranker

    ap = argparse.ArgumentParser(prog="python -m bench.retrieval")
    ap.add_argument("--set", action="append", type=Path, required=True,
                    help="a JSONL question set (its corpus: notes/ beside it) or a BEIR folder; repeatable")
    ap.add_argument("--index-dir", type=Path, default=Path("var/eval-cache"), help="eval cache of BEIR sets")
    ap.add_argument("--notes-index-dir", type=Path, default=Path("var/eval-cache"),
                    help="eval cache of JSONL sets")
    ap.add_argument("--sentence-vectors", default="pooled", choices=("pooled", "separate"),
                    help="the cache key's sentence vectors (pick the one the cache was built with)")
    ap.add_argument("--modes", default="hybrid+merge", help="comma-separated, as notesrag eval takes them")
    ap.add_argument("--fusion", default="rrf", help="comma-separated: rrf, zscore (index.search.fusion)")
    ap.add_argument("--rrf-k", default="5", help="RRF k (rrf fusion only)")
    ap.add_argument("--dense-weight", default="1.5")
    ap.add_argument("--merge-threshold", default="0.5")
    ap.add_argument("--depths", default="0,20,30,50")
    ap.add_argument("--weights", default="1", help="the reranker's share of the score, comma-separated")
    ap.add_argument("--baselines", default="bm25", help="bm25, bm25,dense or none")
    ap.add_argument("--limit", type=int, help="the first N questions of each set")
    ap.add_argument("--snapshot", action="append", type=Path, default=[], metavar="DIR",
                    help="an index directory to load as it is for the --set of the same place "
                         "(nothing ingested; its manifest names the corpus files); repeatable")
    ap.add_argument("--reranker-cache", type=Path, metavar="FILE",
                    help="keep the cross-encoder's scores in FILE (JSON) between runs")
    ap.add_argument("--reranker-threads", type=int, default=1)
    ap.add_argument("--out", type=Path, metavar="FILE", help="also write the table to FILE")
    ap.add_argument("--model", help="embedding model, as NOTESRAG_MODEL names it (a --snapshot must be of it) "
                                    "[default: the default model]")
    a = ap.parse_args(argv)

    embedder = get_embedder(a.model)
    inner = get_reranker("auto", threads=a.reranker_threads)
    if inner is None:
        raise SystemExit("the packaged cross-encoder is not installed (make install does)")
    reranker = CachedReranker(inner)
    if a.reranker_cache is not None and a.reranker_cache.exists():
        reranker.load(a.reranker_cache)
    floats = lambda s: [float(x) for x in s.split(",")]  # noqa: E731
    grid = list(itertools.product(a.fusion.split(","), [int(x) for x in a.rrf_k.split(",")], floats(a.dense_weight),
                                  floats(a.merge_threshold), [int(x) for x in a.depths.split(",")],
                                  floats(a.weights)))
    lines = ["| set | mode | fusion | rrf k | dense weight | merge threshold | rerank depth | rerank weight "
             "| MRR@10 | nDCG@10 | Recall@10 | ms/question |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in a.set:
        dataset = load_set(path)
        if a.limit:
            from dataclasses import replace

            dataset = replace(dataset, questions=dataset.questions[:a.limit])
        cache = IndexCache(a.index_dir if path.is_dir() else a.notes_index_dir, a.sentence_vectors)
        corpus, doc_of = cache.corpus_for(dataset)
        given = a.snapshot[a.set.index(path)] if a.set.index(path) < len(a.snapshot) else None
        if given is not None and str(given) != "-":
            from index import load_snapshot

            snapshot = load_snapshot(given)
            snapshot.check_embedder(embedder.model_name, embedder.dim)
        else:
            snapshot = cache.snapshot(corpus, (2048, 512, 128), embedder)
        questions = [q.question for q in dataset.answerable]
        vectors = dict(zip(questions, encode_queries(embedder, questions), strict=True))
        name = path.name
        if a.baselines != "none":
            for base, m in plain_baselines(dataset, snapshot, embedder, "dense" in a.baselines).items():
                lines.append(f"| {name} | {base} | | | | | | | {m['MRR']:.3f} | {m['nDCG']:.3f} "
                             f"| {m['Recall']:.3f} | |")
                print(lines[-1], flush=True)
        for mode_name in a.modes.split(","):
            mode, _, tail = mode_name.partition("+")
            merge = tail == "merge"
            for fusion, rk, dw, mt, depth, w in grid:
                if (depth == 0 and w != floats(a.weights)[0]) or (mode != "hybrid" and (fusion, rk, dw) != grid[0][:3]):
                    continue  # the weight means nothing without reranking, nor k and weight without fusion
                if fusion != "rrf" and rk != grid[0][1]:
                    continue  # k is RRF's alone
                if not merge and mt != grid[0][3]:
                    continue
                retriever = Retriever(snapshot, embedder, rrf_k=rk, dense_weight=dw, merge_threshold=mt,
                                      reranker=reranker if depth else None, rerank_depth=depth,
                                      rerank_weight=w, fusion=fusion)
                t = time.perf_counter()
                m = score_config(dataset, snapshot, doc_of, vectors, retriever, mode, merge)
                ms = (time.perf_counter() - t) / max(len(questions), 1) * 1000
                lines.append(f"| {name} | {mode_name} | {fusion} | {rk if fusion == 'rrf' else '-'} | {dw} | {mt} | {depth} | {w if depth else '-'} "
                             f"| {m['MRR']:.3f} | {m['nDCG']:.3f} | {m['Recall']:.3f} | {ms:.0f} |")
                print(lines[-1], flush=True)
            if a.reranker_cache is not None:
                reranker.save(a.reranker_cache)
    print(f"\ncross-encoder: {reranker.pairs_scored} pairs in {reranker.seconds:.0f} s; "
          f"ms/question includes the pairs first scored in that row; load average {os.getloadavg()[0]:.1f}")
    print("\n".join(lines))
    if a.out is not None:
        a.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
