"""Signals that might tell an unanswerable question from an answerable one, dumped once, fitted on halves.

`dump` runs the served pipeline (hybrid+merge, the packaged cross-encoder, `extract_answer` with
its defaults) once over data/questions.jsonl and writes, per question, what an abstention rule
could read: the confidence, the cross-encoder's best logit, the best sentence cosine, the top
dense and BM25 scores and their margins over the second, the fused margin of hit 1 over hit 2,
the IDF-weighted share of the question's words (over the index's leaves) in the answer, in its
section and in the top 5 hits, the words no leaf holds, the quantity and unknown-name checks,
whether the answer states the evidence (answer_accuracy's rule) and whether the question is
answerable. `fit` reads that file (no model runs) and, for each signal on each half
(int(sha256(id), 16) % 2), prints its AUC and what it adds to the confidence's log-odds with one
weight fitted on one half and scored on the other: the weight (of the sign that its AUC on the
fitting half gives, 0 to 10 in steps of 0.25) and threshold that withhold the most unanswerable
questions and no answerable one there.

    python -m bench.abstention dump --out /tmp/signals.json [--index-dir DIR]
    python -m bench.abstention fit /tmp/signals.json

`probe` answers a file of questions that are not in the labelled set (bench/probes/quantity.jsonl:
near-topic quantity questions the notes do not answer, and ones they do) as the service would and
prints, for each, whether it was withheld, flagged or answered and whether the answer states its
evidence: a check that the rules fitted on data/questions.jsonl are not fitted to it alone.

    python -m bench.abstention probe bench/probes/quantity.jsonl [--index-dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
SIGNALS = ("best_logit", "max_cos", "cov_answer", "cov_section", "cov_hits", "oov", "dense_top", "dense_gap",
           "bm25_top", "bm25_gap", "fused_gap")
ANSWER_K = 5  # the service's default top_k


def half(qid: str) -> int:
    return int(hashlib.sha256(qid.encode()).hexdigest(), 16) % 2


def _served(index_dir: Path | None) -> tuple[Any, Any, Any, Any, Any]:
    """data/questions.jsonl and what the service answers it with: (dataset, embedder, snapshot
    of data/notes from the eval's cache, the packaged cross-encoder, a Retriever with it)."""
    from eval.datasets import load_jsonl
    from eval.runner import IndexCache
    from index import Retriever, get_embedder
    from index.models.reranker import get_reranker

    dataset = load_jsonl(ROOT / "data" / "questions.jsonl", ROOT / "data" / "notes")
    cache = IndexCache(index_dir)
    embedder = get_embedder()
    snapshot = cache.snapshot(cache.corpus_for(dataset)[0], (2048, 512, 128), embedder)
    reranker = get_reranker("auto")
    if reranker is None:
        raise SystemExit("the packaged cross-encoder is not installed")
    return dataset, embedder, snapshot, reranker, Retriever(snapshot, embedder, reranker=reranker)


def dump(out: Path, index_dir: Path | None) -> None:
    from eval.metrics import states_evidence
    from index.answer import extractive as ex
    from index.answer.units import asks_for_quantity, unknown_names
    from index.models.embedder import encode_queries
    from index.store.lexical import tokenize

    dataset, embedder, snapshot, reranker, retriever = _served(index_dir)
    tree = snapshot.tree
    df: Counter[str] = Counter()
    leaves = tree.leaves()
    for n in leaves:
        df.update(set(tokenize(" ".join([*tree[n].heading_path, tree[n].text]))))

    def share(words: set[str], text: str) -> float:
        """The IDF-weighted share of `words` (those some leaf holds) inside `text`."""
        idf = {w: math.log(1 + (len(leaves) - df[w] + 0.5) / (df[w] + 0.5)) for w in words if df[w]}
        held = set(tokenize(text))
        total = sum(idf.values())
        return sum(v for w, v in idf.items() if w in held) / total if total else 1.0

    def gap(scores: list[float]) -> float:
        return scores[0] - scores[1] if len(scores) > 1 else 0.0

    vocab = ex._vocabulary(snapshot)
    questions = list(dataset.questions)
    rows = []
    for q, v in zip(questions, encode_queries(embedder, [q.question for q in questions]), strict=True):
        scores, _ = snapshot.vectors.search(v.reshape(1, -1), 2)
        lexical = [s for _, s in snapshot.lexical.search(q.question, 2)]
        hits = retriever.search(q.question, k=10, query_vector=v)[:ANSWER_K]
        a = ex.extract_answer(q.question, v, hits, snapshot, threshold=-math.inf, reranker=reranker)
        # the units the served answer chose, as it chose them
        cands, ranked, chosen = ex._select(q.question, v, hits, snapshot, max_sentences=2, max_hits=3,
                                           reranker=reranker, units_scored=ex.DEFAULT_UNITS_SCORED, margin=None)
        sections = {c.section for c in chosen}
        stretches, _ = ex._stretches(hits, tree, 3)
        section_text = " ".join(
            " ".join((*sec.heading, *(u.unit.text for u in sec.units)))
            for i, sec in enumerate(ex._work(snapshot).section(lv) for lv, _ in stretches) if i in sections)
        words = set(tokenize(q.question))
        rows.append({
            "id": q.id, "half": half(q.id), "question": q.question, "answerable": q.answerable,
            "correct": bool(a.answerable and any(states_evidence(a.plain, e) for e in q.evidence)),
            "answer": a.plain, "confidence": a.confidence, "low_confidence": a.low_confidence,
            # the logit the confidence reads (without the term bonus that chooses the answer)
            "best_logit": max((c.score - c.bonus for c in ranked), default=-20.0),
            "max_cos": max((c.cosine for c in cands), default=0.0),
            "cov_answer": share(words, " ".join(t for c in chosen for t in (*c.heading, c.unit.text))),
            "cov_section": share(words, section_text),
            "cov_hits": share(words, " ".join(" ".join((*h.heading_path, h.text)) for h in hits)),
            "oov": sum(1 for w in words if not df[w]),
            "dense_top": float(scores[0][0]), "dense_gap": gap([float(s) for s in scores[0]]),
            "bm25_top": lexical[0] if lexical else 0.0, "bm25_gap": gap(lexical),
            "fused_gap": gap([h.score for h in hits]),
            "quantity": asks_for_quantity(q.question),
            "unknown": unknown_names(q.question, vocab),
        })
    out.write_text(json.dumps(rows, indent=0))
    print(f"wrote {out}: {len(rows)} questions")


def probe(path: Path, index_dir: Path | None) -> list[str]:
    from eval.metrics import states_evidence
    from index.answer import extractive as ex
    from index.models.embedder import encode_queries

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    _, embedder, snapshot, reranker, retriever = _served(index_dir)
    out = ["| id | question | answer | confidence | states evidence |", "| --- | --- | --- | --- | --- |"]
    tally: Counter[str] = Counter()
    for r, v in zip(rows, encode_queries(embedder, [r["question"] for r in rows]), strict=True):
        hits = retriever.search(r["question"], k=10, query_vector=v)[:ANSWER_K]
        a = ex.extract_answer(r["question"], v, hits, snapshot, reranker=reranker)
        given = "withheld" if not a.answerable else "flagged" if a.low_confidence else "answered"
        right = a.answerable and any(states_evidence(a.plain, e) for e in r["evidence"])
        tally[f"{'answerable' if r['answerable'] else 'unanswerable'} {given}{' right' if right else ''}"] += 1
        out.append(f"| {r['id']} | {r['question']} | {given}: {a.plain[:70]} | {a.confidence:.2f} | {right} |")
    out.append("")
    out.extend(f"{k}: {n}" for k, n in sorted(tally.items()))
    return out


def _logodds(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return math.log(p / (1 - p))


def _withheld(rows: list[dict[str, Any]], score: Any, t: float) -> tuple[float, float, int]:
    """Precision and recall of "not covered" (score under t), and the answerable withheld."""
    out = [r for r in rows if score(r) < t]
    tp = sum(not r["answerable"] for r in out)
    unanswerable = sum(not r["answerable"] for r in rows)
    return (tp / len(out) if out else 1.0), tp / unanswerable, len(out) - tp


def _auc(rows: list[dict[str, Any]], key: str) -> float:
    """P(an answerable question's signal > an unanswerable one's), ties half."""
    a = [r[key] for r in rows if r["answerable"]]
    u = [r[key] for r in rows if not r["answerable"]]
    return sum((x > y) + 0.5 * (x == y) for x in a for y in u) / (len(a) * len(u))


def fit(path: Path) -> list[str]:
    rows = json.loads(path.read_text())
    for r in rows:
        r["logodds"] = _logodds(r["confidence"])
    halves = [[r for r in rows if r["half"] == h] for h in (0, 1)]
    out = ["| signal | AUC, halves | fitted on 0: weight, recall there -> P / R / withheld on 1 "
           "| fitted on 1 -> on 0 | P / R on the other half at a threshold for R 0.8 (0 -> 1, 1 -> 0) |",
           "| --- | --- | --- | --- | --- |"]
    for key in ("logodds", *SIGNALS):
        cells = [f"{_auc(halves[0], key):.2f} / {_auc(halves[1], key):.2f}"]
        at_recall = []
        for a, b in ((0, 1), (1, 0)):
            # monotone: the weight has the sign that makes a higher score more likely answerable
            # on the fitting half
            sign = 1 if _auc(halves[a], key) >= 0.5 else -1
            weights = [0.0] if key == "logodds" else [sign * w / 4 for w in range(41)]
            best: tuple[float, float, float] | None = None
            for w in weights:
                def score(r: dict[str, Any], w: float = w, key: str = key) -> float:
                    return r["logodds"] + (0.0 if key == "logodds" else w * r[key])
                # the most recall with no answerable question withheld on the fitting half
                t = min(score(r) for r in halves[a] if r["answerable"])
                recall = _withheld(halves[a], score, t)[1]
                if best is None or recall > best[0] + 1e-9:
                    best = (recall, w, t)
            assert best is not None
            recall, w, t = best

            def fitted(r: dict[str, Any], w: float = w, key: str = key) -> float:
                return r["logodds"] + (0.0 if key == "logodds" else w * r[key])
            p, rc, fp = _withheld(halves[b], fitted, t)
            cells.append(f"{w:+.2f}, {recall:.2f} -> {p:.2f} / {rc:.2f} / {fp}")
            unanswerable = sorted(fitted(r) for r in halves[a] if not r["answerable"])
            t8 = unanswerable[math.ceil(0.8 * len(unanswerable)) - 1] + 1e-9
            p8, r8, _ = _withheld(halves[b], fitted, t8)
            at_recall.append(f"{p8:.2f} / {r8:.2f}")
        out.append(f"| {key} | " + " | ".join(cells) + " | " + ", ".join(at_recall) + " |")
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump", help="run the pipeline once and write the signals")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--index-dir", type=Path, default=None, help="the eval's index cache (default: a temporary one)")
    f = sub.add_parser("fit", help="fit each signal on one half, score it on the other")
    f.add_argument("signals", type=Path)
    pr = sub.add_parser("probe", help="answer questions outside the labelled set and tally what was given")
    pr.add_argument("questions", type=Path)
    pr.add_argument("--index-dir", type=Path, default=None, help="the eval's index cache (default: a temporary one)")
    args = ap.parse_args()
    if args.command == "dump":
        dump(args.out, args.index_dir)
    elif args.command == "probe":
        print("\n".join(probe(args.questions, args.index_dir)))
    else:
        print("\n".join(fit(args.signals)))
