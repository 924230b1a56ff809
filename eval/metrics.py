"""Evaluation metrics as pure functions: ranking, answer overlap, abstention.

Ranking metrics come from ranx (`ranking_metrics`); the small pure-Python functions
below (`reciprocal_rank`, `ndcg_at_k`, ...) are an independent second computation the
tests cross-check ranx against, and they score one ranking without building a run.
"""

from __future__ import annotations

import math
import re
import string
import threading
import unicodedata
import warnings
from collections import Counter
from collections.abc import Collection, Mapping, Sequence

_RANX_LOCK = threading.Lock()

Qrels = Mapping[str, Mapping[str, int]]
RunScores = Mapping[str, Mapping[str, float]]

# Filler id for a query the run does not mention: ranx needs at least one document per
# query, and a document that is never relevant scores 0 on every metric.
_MISSING_DOC = "\x00no-result"
# the width of the document ids ranx sees (_same_width_ids): 16**8 distinct ids per evaluation
# before a wider (still correct) name appears
_ID_WIDTH = 8


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def metric_names(k: int) -> list[str]:
    """The ranking metric names `ranking_metrics` returns for cut-off `k`."""
    _check_k(k)
    return [f"mrr@{k}", f"ndcg@{k}", f"recall@{k}", "hit@1", f"hit@{k}"]


# --- rankings -> runs ------------------------------------------------------------------


def run_from_ranking(doc_ids: Sequence[str]) -> dict[str, float]:
    """Scores 1/rank for a ranked list, so any library sorts it in exactly this order.

    A repeated id keeps its first (best) rank; later repeats are dropped.
    """
    run: dict[str, float] = {}
    for doc_id in doc_ids:
        if doc_id not in run:
            run[doc_id] = 1.0 / (len(run) + 1)
    return run


def evidence_judgements(
    ranked: Sequence[tuple[str, str]], evidence: Sequence[str]
) -> tuple[dict[str, int], dict[str, float]]:
    """Judge one ranking of `(node_id, text)` pairs against evidence strings.

    Returns `(qrels, run)` for one query whose relevant items are evidence strings, not
    nodes, so the scores do not depend on chunk sizes: the i-th retrieved node becomes
    the item `"evidence:<j>"` for the evidence strings it is the first to contain, or
    stays a non-relevant node. Several strings first met in one node form one item
    (`"evidence:0+1"`): a merged parent holding both passages at rank 1 is a perfect
    ranking, as are two leaves at ranks 1 and 2. Strings no node contains are items
    of their own that the run misses. Ranks are kept, so MRR and nDCG score the
    retriever's order.
    """
    if not evidence:
        raise ValueError("evidence is empty: nothing to judge against")
    covered: set[int] = set()
    qrels: dict[str, int] = {}
    items: list[str] = []
    for position, (node_id, text) in enumerate(ranked):
        new = [
            i for i, ev in enumerate(evidence) if i not in covered and contains_evidence(text, ev)
        ]
        if new:
            covered.update(new)
            item = "evidence:" + "+".join(map(str, new))
            qrels[item] = 1
        else:
            item = f"node:{position}:{node_id}"
        items.append(item)
    for i in range(len(evidence)):
        if i not in covered:
            qrels[f"evidence:{i}"] = 1
    return qrels, run_from_ranking(items)


def document_judgements(
    ranked_doc_ids: Sequence[str], relevant_docs: Collection[str],
    grades: Mapping[str, int] | None = None,
) -> tuple[dict[str, int], dict[str, float]]:
    """Judge a ranking of nodes by source document (BEIR, SQuAD): `(qrels, run)`.

    Several nodes of one document count once, at the rank of the first, as the usual
    document-level evaluation does, so the run ranks distinct documents: the caller
    retrieves deep enough to fill k of them. `grades` gives graded relevance (nDCG's gain)
    where the qrels grade documents; any other relevant document has grade 1.
    """
    grades = grades or {}
    return ({d: max(1, int(grades.get(d, 1))) for d in relevant_docs},
            run_from_ranking(ranked_doc_ids))


# --- ranking metrics with ranx ---------------------------------------------------------


def _ranked_ids(scores: Mapping[str, float]) -> list[str]:
    # sorted() is stable: ties keep the caller's insertion order.
    return [d for d, _ in sorted(scores.items(), key=lambda item: -item[1])]


def _judged(qrels: Qrels) -> dict[str, dict[str, int]]:
    # Positive grades only. A grade is nDCG's gain (linear, as BEIR's pytrec_eval and ranx's
    # "ndcg" take it); MRR, recall and hit count any positive grade as relevant. Evidence sets
    # and binary qrels have grade 1 throughout.
    judged = {qid: {d: int(r) for d, r in docs.items() if r > 0} for qid, docs in qrels.items()}
    judged = {qid: docs for qid, docs in judged.items() if docs}
    if not judged:
        raise ValueError("no query has a relevant document: nothing to rank")
    return judged


def _same_width_ids(
    judged: dict[str, dict[str, int]], run: dict[str, dict[str, float]]
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, float]]]:
    """The same judgements with every document id renamed to one of a single width.

    ranx stores a query's document ids in a NumPy array of fixed-width strings, as wide as its
    longest id, and numba compiles ranx's functions again for each new width: with a cold numba
    cache (a fresh install) that is tens of seconds per width, and every id set of another
    longest length paid it. The metrics only compare ids for equality, so consistent renaming
    (the same id -> the same name, in qrels and run alike) leaves every number unchanged.
    """
    names: dict[str, str] = {}

    def rename(doc_id: str) -> str:
        name = names.get(doc_id)
        if name is None:
            name = names[doc_id] = f"{len(names):0{_ID_WIDTH}x}"
        return name

    return ({qid: {rename(d): g for d, g in docs.items()} for qid, docs in judged.items()},
            {qid: {rename(d): s for d, s in docs.items()} for qid, docs in run.items()})


def _ranx_evaluate(
    qrels: Qrels, run: RunScores, k: int
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    _check_k(k)
    judged = _judged(qrels)
    run_dict: dict[str, dict[str, float]] = {}
    for qid in judged:
        ranked = _ranked_ids(run.get(qid, {})) or [_MISSING_DOC]
        run_dict[qid] = run_from_ranking(ranked)
    judged, run_dict = _same_width_ids(judged, run_dict)

    # ranx pulls in numba and pandas; imported here so that loading this module for
    # the answer metrics stays cheap.
    from ranx import Qrels as RanxQrels
    from ranx import Run as RanxRun
    from ranx import evaluate

    names = {
        f"mrr@{k}": f"mrr@{k}",
        f"ndcg@{k}": f"ndcg@{k}",
        f"recall@{k}": f"recall@{k}",
        "hit@1": "hit_rate@1",
        f"hit@{k}": f"hit_rate@{k}",
    }
    ranx_run = RanxRun(run_dict)
    # numba compiles ranx's functions on first use and aborts the process when two threads
    # compile at once (a fresh install has no numba cache): one evaluation at a time.
    with _RANX_LOCK, warnings.catch_warnings():
        # numba's "unsafe cast from uint64 to int64" inside ranx: harmless for ranks.
        warnings.simplefilter("ignore")
        means = evaluate(RanxQrels(judged), ranx_run, list(dict.fromkeys(names.values())))
    mean = {ours: float(means[theirs]) for ours, theirs in names.items()}
    per_query = {
        qid: {ours: float(ranx_run.scores[theirs][qid]) for ours, theirs in names.items()}
        for qid in judged
    }
    return mean, per_query


def ranking_metrics(qrels: Qrels, run: RunScores, k: int = 10) -> dict[str, float]:
    """MRR@k, nDCG@k, Recall@k, Hit@1 and Hit@k averaged over the judged queries (ranx).

    nDCG takes positive grades as gains (binary where every grade is 1); MRR, recall and hit
    count any positive grade as relevant. Queries with no relevant
    document (unanswerable ones) are left out; a judged query missing from `run` scores 0. Tied scores are ordered by the run's insertion order
    before ranx sees them, so its order is the retriever's order.
    """
    return _ranx_evaluate(qrels, run, k)[0]


def ranking_metrics_per_query(
    qrels: Qrels, run: RunScores, k: int = 10
) -> dict[str, dict[str, float]]:
    """`ranking_metrics` for each judged query (ranx), keyed by query id."""
    return _ranx_evaluate(qrels, run, k)[1]


# --- the same metrics in plain Python (one ranking at a time) --------------------------


def _relevant_positions(ranked: Sequence[str], relevant: Collection[str], k: int) -> list[int]:
    _check_k(k)
    return [i for i, d in enumerate(ranked[:k], start=1) if d in relevant]


def reciprocal_rank(ranked: Sequence[str], relevant: Collection[str], k: int = 10) -> float:
    """1/rank of the first relevant item within the top k, else 0."""
    positions = _relevant_positions(ranked, relevant, k)
    return 1.0 / positions[0] if positions else 0.0


def ndcg_at_k(ranked: Sequence[str], relevant: Collection[str], k: int = 10,
              grades: Mapping[str, int] | None = None) -> float:
    """nDCG@k: the sum of gain/log2(rank+1) over hits, over the ideal sum. The gain is the
    item's grade in `grades` (linear gains, as pytrec_eval), else 1: binary without grades."""
    def gain(d: str) -> float:
        return float(grades.get(d, 1)) if grades else 1.0

    positions = _relevant_positions(ranked, relevant, k)
    best = sorted((gain(d) for d in set(relevant)), reverse=True)[:k]
    ideal = sum(g / math.log2(i + 1) for i, g in enumerate(best, start=1))
    if ideal == 0.0:
        return 0.0
    return sum(gain(ranked[i - 1]) / math.log2(i + 1) for i in positions) / ideal


def recall_at_k(ranked: Sequence[str], relevant: Collection[str], k: int = 10) -> float:
    """Share of the relevant items found in the top k (0 when nothing is relevant)."""
    relevant_set = set(relevant)
    if not relevant_set:
        return 0.0
    return len(set(ranked[:k]) & relevant_set) / len(relevant_set)


def hit_at_k(ranked: Sequence[str], relevant: Collection[str], k: int = 10) -> float:
    """1.0 when a relevant item is in the top k, else 0.0."""
    return 1.0 if _relevant_positions(ranked, relevant, k) else 0.0


def ranking_metrics_reference(qrels: Qrels, run: RunScores, k: int = 10) -> dict[str, float]:
    """`ranking_metrics` computed without ranx, with the same conventions."""
    _check_k(k)
    judged = _judged(qrels)
    totals = dict.fromkeys(metric_names(k), 0.0)
    for qid, grades in judged.items():
        relevant = set(grades)
        ranked = list(dict.fromkeys(_ranked_ids(run.get(qid, {}))))
        per_query = {
            f"mrr@{k}": reciprocal_rank(ranked, relevant, k),
            f"ndcg@{k}": ndcg_at_k(ranked, relevant, k, grades),
            f"recall@{k}": recall_at_k(ranked, relevant, k),
            "hit@1": hit_at_k(ranked, relevant, 1),
            f"hit@{k}": hit_at_k(ranked, relevant, k),
        }
        for name, value in per_query.items():
            totals[name] += value
    return {name: total / len(judged) for name, total in totals.items()}


# --- answers (SQuAD normalisation) -----------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCT = frozenset(string.punctuation)


def _is_punct(ch: str) -> bool:
    # SQuAD strips string.punctuation; Unicode punctuation (curly quotes, dashes) is
    # stripped too so that “sharp” and "sharp" normalise alike.
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, drop punctuation and articles, squeeze spaces."""
    text = "".join(ch for ch in text.lower() if not _is_punct(ch))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 on normalised answers.

    As in SQuAD v2, when either side is empty (no answer) the score is 1.0 only when
    both are empty.
    """
    pred_tokens = normalize_answer(prediction).split()
    ref_tokens = normalize_answer(reference).split()
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    common = Counter(pred_tokens) & Counter(ref_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


# --- abstention ------------------------------------------------------------------------


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _noanswer_from_counts(tp: int, fp: int, fn: int) -> dict[str, float]:
    # No abstentions: precision 1.0 only if there was nothing to abstain on, so that
    # never abstaining cannot pass a precision gate. No unanswerable questions: recall
    # 1.0, nothing was missed.
    precision = tp / (tp + fp) if tp + fp else float(fn == 0)
    recall = tp / (tp + fn) if tp + fn else 1.0
    return {
        "noanswer_precision": precision,
        "noanswer_recall": recall,
        "noanswer_f1": _f1(precision, recall),
    }


def noanswer_scores(preds: Sequence[bool], golds: Sequence[bool]) -> dict[str, float]:
    """Precision, recall and F1 of abstaining, from answerable flags.

    `preds[i]` is whether the system answered question i, `golds[i]` whether it is
    answerable; the positive class is "abstain / not answerable". With no abstentions,
    precision is 1.0 only when no question was unanswerable (else 0.0); with no
    unanswerable questions, recall is 1.0.
    """
    if len(preds) != len(golds):
        raise ValueError(f"preds and golds differ in length: {len(preds)} != {len(golds)}")
    pairs = list(zip(preds, golds, strict=True))
    tp = sum(1 for p, g in pairs if not p and not g)
    fp = sum(1 for p, g in pairs if not p and g)
    fn = sum(1 for p, g in pairs if p and not g)
    return _noanswer_from_counts(tp, fp, fn)


def abstains(score: float, threshold: float) -> bool:
    """The abstention rule the threshold assumes: abstain when the score is below it."""
    return score < threshold


def best_abstain_threshold(scores: Sequence[float], answerable_flags: Sequence[bool]) -> float:
    """The confidence threshold (abstain when score < threshold) maximising abstention F1.

    Candidates are the lowest score (abstain on nothing), the midpoints between
    consecutive distinct scores, and just above the highest (abstain on everything).
    Ties go to the lowest threshold, which abstains least.
    """
    if len(scores) != len(answerable_flags):
        raise ValueError(
            f"scores and answerable_flags differ in length: "
            f"{len(scores)} != {len(answerable_flags)}"
        )
    if not scores:
        raise ValueError("scores is empty: no threshold to choose")
    if any(math.isnan(s) for s in scores):
        raise ValueError("scores contain NaN")
    pairs = sorted(zip(scores, answerable_flags, strict=True), key=lambda p: p[0])
    unanswerable = sum(1 for _, answerable in pairs if not answerable)
    # Sweep upwards: abstaining on the j lowest scores, only at boundaries between
    # distinct scores; O(n log n), so SQuAD-sized sets stay fast.
    best_threshold = pairs[0][0]
    best_f1 = _noanswer_from_counts(0, 0, unanswerable)["noanswer_f1"]
    tp = fp = 0
    for j, (score, answerable) in enumerate(pairs):
        if answerable:
            fp += 1
        else:
            tp += 1
        if j + 1 < len(pairs) and pairs[j + 1][0] == score:
            continue
        f1 = _noanswer_from_counts(tp, fp, unanswerable - tp)["noanswer_f1"]
        if f1 > best_f1:
            best_f1 = f1
            best_threshold = (
                (score + pairs[j + 1][0]) / 2
                if j + 1 < len(pairs)
                else math.nextafter(score, math.inf)
            )
    return best_threshold


# --- relevance -------------------------------------------------------------------------

_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Whitespace collapsed to single spaces, stripped and case folded."""
    return _WS.sub(" ", text).strip().casefold()


def contains_evidence(node_text: str, evidence: str) -> bool:
    """Whether `evidence` occurs in `node_text`, whitespace collapsed and case folded."""
    needle = normalize_text(evidence)
    if not needle:
        raise ValueError("evidence must not be empty")
    return needle in normalize_text(node_text)


# --- answer accuracy -------------------------------------------------------------------

_CITE = re.compile(r"\s*\[\d+\]")
_WORD = re.compile(r"\w+")
# An answer states an evidence string that it holds at least this share of the words of.
STATES_WORD_SHARE = 0.6


def states_evidence(answer: str, evidence: str, share: float = STATES_WORD_SHARE) -> bool:
    """Whether `answer` states `evidence`: after case and white-space folding and dropping [n]
    markers, the evidence is inside the answer, or the answer holds at least `share` of the
    evidence's distinct words."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must be in (0, 1], got {share}")
    text = normalize_text(_CITE.sub("", answer))
    needle = normalize_text(_CITE.sub("", evidence))
    if not needle:
        raise ValueError("evidence must not be empty")
    if needle in text:
        return True
    wanted = set(_WORD.findall(needle))
    if not wanted:
        return False
    return len(wanted & set(_WORD.findall(text))) / len(wanted) >= share


def answer_accuracy(pairs: Sequence[tuple[str, Sequence[str]]]) -> float | None:
    """The share of (answer, evidence strings) pairs whose answer states one of its strings;
    an abstention ("") states nothing. None for no pairs."""
    if not pairs:
        return None
    return sum(any(states_evidence(a, e) for e in ev) for a, ev in pairs if a) / len(pairs)
