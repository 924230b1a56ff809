"""Metrics against numbers worked out by hand, and ranx against a second computation."""

from __future__ import annotations

import math
import random

import pytest

from eval.metrics import (
    abstains,
    best_abstain_threshold,
    contains_evidence,
    document_judgements,
    evidence_judgements,
    exact_match,
    hit_at_k,
    metric_names,
    ndcg_at_k,
    noanswer_scores,
    normalize_answer,
    normalize_text,
    ranking_metrics,
    ranking_metrics_per_query,
    ranking_metrics_reference,
    recall_at_k,
    reciprocal_rank,
    run_from_ranking,
    token_f1,
)

LOG2_3 = math.log2(3)

# --- one ranking, by hand -------------------------------------------------------------


def test_reciprocal_rank_first_relevant_at_rank_3() -> None:
    ranked = ["n1", "n2", "r", "n3", "r2"]
    assert reciprocal_rank(ranked, {"r", "r2"}) == pytest.approx(1 / 3)
    assert reciprocal_rank(ranked, {"r"}, k=2) == 0.0  # outside the cut-off
    assert reciprocal_rank(ranked, {"absent"}) == 0.0


def test_ndcg_by_hand() -> None:
    # Relevant {a, c, e}; a at rank 1, c at rank 3, e never retrieved.
    # DCG@4 = 1/log2(2) + 1/log2(4) = 1 + 0.5 = 1.5
    # IDCG@4 = 1 + 1/log2(3) + 1/log2(4) = 2.1309...  (three relevant items)
    ranked = ["a", "b", "c", "d"]
    expected = 1.5 / (1 + 1 / LOG2_3 + 0.5)
    assert expected == pytest.approx(0.703918, abs=1e-6)
    assert ndcg_at_k(ranked, {"a", "c", "e"}, k=4) == pytest.approx(expected)
    # At k=2 only a counts; the ideal has two relevant items: 1 / (1 + 1/log2(3)).
    assert ndcg_at_k(ranked, {"a", "c", "e"}, k=2) == pytest.approx(1 / (1 + 1 / LOG2_3))
    assert ndcg_at_k(["a", "b"], {"a"}, k=10) == 1.0
    assert ndcg_at_k(["b", "a"], {"a"}, k=10) == pytest.approx(1 / LOG2_3)


def test_recall_and_hit_by_hand() -> None:
    ranked = ["a", "b", "c", "d"]
    relevant = {"a", "c", "e"}
    assert recall_at_k(ranked, relevant, k=4) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, relevant, k=1) == pytest.approx(1 / 3)
    assert hit_at_k(["n1", "n2", "r"], {"r"}, k=1) == 0.0
    assert hit_at_k(["n1", "n2", "r"], {"r"}, k=2) == 0.0
    assert hit_at_k(["n1", "n2", "r"], {"r"}, k=3) == 1.0


def test_k_is_checked() -> None:
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        reciprocal_rank(["a"], {"a"}, k=0)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        ranking_metrics({"q": {"a": 1}}, {"q": {"a": 1.0}}, k=-3)


# --- ranx over several queries, by hand -----------------------------------------------

QRELS = {
    "q1": {"r": 1},
    "q2": {"a": 1, "c": 1, "e": 1},
    "q3": {},  # unanswerable: left out of ranking metrics
    "q4": {"x": 1, "y": 0},  # retrieved nothing
}
RUN = {
    "q1": run_from_ranking(["n1", "n2", "r", "n3"]),
    "q2": run_from_ranking(["a", "b", "c", "d"]),
    "q3": run_from_ranking(["z"]),
}


def test_ranking_metrics_by_hand() -> None:
    # Three judged queries (q1, q2, q4); q4 scores 0 everywhere.
    ndcg_q2 = 1.5 / (1 + 1 / LOG2_3 + 0.5)
    expected = {
        "mrr@10": (1 / 3 + 1 + 0) / 3,
        "ndcg@10": (0.5 + ndcg_q2 + 0) / 3,  # q1: 1/log2(4) over an ideal of 1
        "recall@10": (1 + 2 / 3 + 0) / 3,
        "hit@1": (0 + 1 + 0) / 3,
        "hit@10": (1 + 1 + 0) / 3,
    }
    got = ranking_metrics(QRELS, RUN, k=10)
    assert list(got) == metric_names(10)
    assert got == pytest.approx(expected)
    assert ranking_metrics_reference(QRELS, RUN, k=10) == pytest.approx(expected)


def test_ranking_metrics_per_query() -> None:
    per_query = ranking_metrics_per_query(QRELS, RUN, k=10)
    assert set(per_query) == {"q1", "q2", "q4"}
    assert per_query["q1"]["mrr@10"] == pytest.approx(1 / 3)
    assert per_query["q2"]["recall@10"] == pytest.approx(2 / 3)
    assert per_query["q4"] == dict.fromkeys(metric_names(10), 0.0)


def test_ranking_metrics_k_cuts_off() -> None:
    got = ranking_metrics(QRELS, RUN, k=2)
    assert got["mrr@2"] == pytest.approx((0 + 1 + 0) / 3)
    assert got["recall@2"] == pytest.approx((0 + 1 / 3 + 0) / 3)


def test_ties_follow_the_runs_order() -> None:
    qrels = {"q": {"r": 1}}
    # Equal scores: the order the retriever listed them in decides, not ranx.
    assert ranking_metrics(qrels, {"q": {"n": 1.0, "r": 1.0}})["mrr@10"] == 0.5
    assert ranking_metrics(qrels, {"q": {"r": 1.0, "n": 1.0}})["mrr@10"] == 1.0
    assert ranking_metrics_reference(qrels, {"q": {"n": 1.0, "r": 1.0}})["mrr@10"] == 0.5


def test_graded_relevance_is_the_gain_of_ndcg_only() -> None:
    run = {"q": run_from_ranking(["a", "b"])}
    graded = ranking_metrics({"q": {"a": 1, "b": 3}}, run)
    binary = ranking_metrics({"q": {"a": 1, "b": 1}}, run)
    assert binary["ndcg@10"] == 1.0
    # the grade-3 document ranked second: DCG 1 + 3/log2(3), ideal 3 + 1/log2(3)
    assert graded["ndcg@10"] == pytest.approx((1 + 3 / LOG2_3) / (3 + 1 / LOG2_3))
    assert {m: v for m, v in graded.items() if m != "ndcg@10"} == \
        {m: v for m, v in binary.items() if m != "ndcg@10"}


def test_only_unanswerable_queries_is_an_error() -> None:
    with pytest.raises(ValueError, match="no query has a relevant document"):
        ranking_metrics({"q": {}}, {"q": {"a": 1.0}})


def test_ranx_agrees_with_pure_python_on_random_rankings() -> None:
    rng = random.Random(20240501)
    pool = [f"d{i}" for i in range(40)]
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for q in range(200):
        qid = f"q{q}"
        qrels[qid] = {d: 1 for d in rng.sample(pool, rng.randint(1, 6))}
        ranked = rng.sample(pool, rng.randint(1, 25))
        if rng.random() < 0.5:
            run[qid] = run_from_ranking(ranked)
        else:  # arbitrary distinct scores, inserted out of rank order
            values = sorted(rng.sample(range(1, 10_000), len(ranked)), reverse=True)
            pairs = list(zip(ranked, (v / 100 for v in values), strict=True))
            rng.shuffle(pairs)
            run[qid] = dict(pairs)
    for k in (1, 5, 10):
        assert ranking_metrics(qrels, run, k) == pytest.approx(
            ranking_metrics_reference(qrels, run, k), abs=1e-9
        )
    per_query = ranking_metrics_per_query(qrels, run, 10)
    for qid, scores in per_query.items():
        ranked = sorted(run[qid], key=lambda d: -run[qid][d])
        assert scores["mrr@10"] == pytest.approx(reciprocal_rank(ranked, set(qrels[qid])))
        assert scores["ndcg@10"] == pytest.approx(ndcg_at_k(ranked, set(qrels[qid])))


# --- judging rankings -----------------------------------------------------------------


def test_run_from_ranking() -> None:
    assert run_from_ranking(["a", "b", "a", "c"]) == {"a": 1.0, "b": 0.5, "c": 1 / 3}


def test_evidence_judgements_separate_leaves() -> None:
    ranked = [("n1", "Alpha  BETA gamma."), ("n2", "nothing"), ("n3", "delta epsilon")]
    qrels, run = evidence_judgements(ranked, ["alpha beta", "Delta Epsilon"])
    assert qrels == {"evidence:0": 1, "evidence:1": 1}
    assert list(run) == ["evidence:0", "node:1:n2", "evidence:1"]
    got = ranking_metrics({"q": qrels}, {"q": run})
    # DCG = 1 + 1/log2(4) = 1.5, IDCG = 1 + 1/log2(3)
    assert got["ndcg@10"] == pytest.approx(1.5 / (1 + 1 / LOG2_3))
    assert got["mrr@10"] == 1.0 and got["recall@10"] == 1.0


def test_evidence_judgements_merged_parent_is_one_item() -> None:
    # A parent holding both passages at rank 2 (after a child with one of them).
    ranked = [
        ("leaf", "nothing here"),
        ("parent", "alpha beta. delta epsilon"),
        ("c", "alpha beta"),
    ]
    qrels, run = evidence_judgements(ranked, ["alpha beta", "delta epsilon", "never seen"])
    assert qrels == {"evidence:0+1": 1, "evidence:2": 1}
    got = ranking_metrics({"q": qrels}, {"q": run})
    assert got["mrr@10"] == 0.5
    assert got["recall@10"] == 0.5  # one of the two items is never retrieved
    # DCG = 1/log2(3); IDCG = 1 + 1/log2(3)
    assert got["ndcg@10"] == pytest.approx((1 / LOG2_3) / (1 + 1 / LOG2_3))


def test_document_judgements_count_a_document_once() -> None:
    qrels, run = document_judgements(["d1", "d1", "d2", "d3"], {"d2", "d9"})
    assert qrels == {"d2": 1, "d9": 1}
    assert run == {"d1": 1.0, "d2": 0.5, "d3": 1 / 3}
    got = ranking_metrics({"q": qrels}, {"q": run})
    assert got["mrr@10"] == 0.5 and got["recall@10"] == 0.5


# --- answers --------------------------------------------------------------------------


def test_normalize_answer() -> None:
    assert normalize_answer("The  Cat's hat!") == "cats hat"
    assert normalize_answer("An apple, a pear") == "apple pear"
    assert normalize_answer("\u201csharp.\u201d") == "sharp"  # curly quotes are punctuation


def test_token_f1_by_hand() -> None:
    # pred {cat, sat}, ref {cat, sat, down}: P = 1, R = 2/3, F1 = 2PR/(P+R) = 0.8
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    # Counts are clipped: common = {cat: 1, dog: 1}, P = R = 2/3
    assert token_f1("cat cat dog", "cat dog dog") == pytest.approx(2 / 3)
    assert token_f1("uses L2 loss for small errors", "L2 loss for small errors") == pytest.approx(
        2 * (5 / 6) * 1 / (5 / 6 + 1)
    )
    assert token_f1("completely different", "nothing shared") == 0.0


def test_token_f1_empty_answers() -> None:
    assert token_f1("", "") == 1.0
    assert token_f1("the", "") == 1.0  # both normalise to nothing
    assert token_f1("something", "") == 0.0
    assert token_f1("", "something") == 0.0


def test_exact_match() -> None:
    assert exact_match("The Huber loss.", "huber  loss") == 1.0
    assert exact_match("Huber loss is", "huber loss") == 0.0


# --- abstention -----------------------------------------------------------------------


def test_noanswer_scores_by_hand() -> None:
    answered = [True, False, False, True, False]
    answerable = [True, False, True, False, False]
    # Abstained on 1, 2, 4; unanswerable are 1, 3, 4: tp = 2 (1, 4), fp = 1 (2), fn = 1 (3)
    got = noanswer_scores(answered, answerable)
    assert got == pytest.approx(
        {"noanswer_precision": 2 / 3, "noanswer_recall": 2 / 3, "noanswer_f1": 2 / 3}
    )


def test_noanswer_scores_edges() -> None:
    # Nothing unanswerable, nothing abstained: perfect.
    assert noanswer_scores([True, True], [True, True])["noanswer_f1"] == 1.0
    # Never abstaining when it should have cannot pass a precision gate.
    assert noanswer_scores([True, True], [True, False])["noanswer_precision"] == 0.0
    with pytest.raises(ValueError, match="differ in length: 2 != 1"):
        noanswer_scores([True, True], [True])


def test_best_abstain_threshold_separable() -> None:
    scores = [0.9, 0.2, 0.4, 0.8, 0.1]
    answerable = [True, False, True, True, False]
    threshold = best_abstain_threshold(scores, answerable)
    assert threshold == pytest.approx(0.3)  # midway between 0.2 and 0.4
    answered = [not abstains(s, threshold) for s in scores]
    assert noanswer_scores(answered, answerable)["noanswer_f1"] == 1.0


def test_best_abstain_threshold_by_hand() -> None:
    # Sorted: 0.1 U, 0.3 A, 0.5 U, 0.7 A. Abstain below 0.2: P 1, R 1/2, F1 2/3;
    # below 0.4: F1 1/2; below 0.6: P 2/3, R 1, F1 0.8; all: P 1/2, R 1, F1 2/3.
    threshold = best_abstain_threshold([0.7, 0.5, 0.3, 0.1], [True, False, True, False])
    assert threshold == pytest.approx(0.6)


def test_best_abstain_threshold_ties_and_edges() -> None:
    # Two equal scores can only be abstained on together.
    t = best_abstain_threshold([0.5, 0.5], [True, False])
    assert t > 0.5 and abstains(0.5, t)
    # Nothing unanswerable: abstain on nothing.
    t = best_abstain_threshold([0.3, 0.6], [True, True])
    assert t == 0.3 and not abstains(0.3, t)
    with pytest.raises(ValueError, match="scores is empty"):
        best_abstain_threshold([], [])
    with pytest.raises(ValueError, match="differ in length"):
        best_abstain_threshold([0.1], [True, False])


def test_best_abstain_threshold_matches_brute_force() -> None:
    rng = random.Random(7)
    for _ in range(50):
        n = rng.randint(1, 30)
        scores = [rng.randint(0, 10) / 10 for _ in range(n)]
        flags = [rng.random() < 0.7 for _ in range(n)]
        best = best_abstain_threshold(scores, flags)

        def f1(t: float, scores: list[float] = scores, flags: list[bool] = flags) -> float:
            return noanswer_scores([not abstains(s, t) for s in scores], flags)["noanswer_f1"]

        candidates = [*sorted(set(scores)), max(scores) + 1]
        assert f1(best) == pytest.approx(max(f1(t) for t in candidates))


# --- relevance ------------------------------------------------------------------------


def test_contains_evidence() -> None:
    node = "Huber Loss: uses L2 loss for small errors,\n   L1 loss for large errors."
    assert contains_evidence(node, "uses l2 loss for small errors, L1 LOSS")
    assert not contains_evidence(node, "uses L1 loss for small errors")
    assert contains_evidence("STRASSE", "straße")  # case folding, not lower()
    assert normalize_text("  a \t b\n") == "a b"
    with pytest.raises(ValueError, match="evidence must not be empty"):
        contains_evidence(node, "  ")


def test_graded_document_judgements_worked_by_hand() -> None:
    """Graded qrels (NFCorpus-style): nDCG takes the grade as its gain, MRR and recall do not."""
    # ranked documents d1 (not relevant), d2 (grade 2), d3 (grade 1); d4 (grade 1) never retrieved
    qrels, run = document_judgements(["d1", "d2", "d2", "d3"], {"d2", "d3", "d4"}, {"d2": 2})
    assert qrels == {"d2": 2, "d3": 1, "d4": 1}
    got = ranking_metrics({"q": qrels}, {"q": run})
    dcg = 2 / LOG2_3 + 1 / 2  # ranks 2 and 3: log2(3), log2(4) = 2
    ideal = 2 / 1 + 1 / LOG2_3 + 1 / 2  # grades 2, 1, 1 at ranks 1, 2, 3
    assert got["ndcg@10"] == pytest.approx(dcg / ideal)  # 0.5627
    assert got["mrr@10"] == 0.5
    assert got["recall@10"] == pytest.approx(2 / 3)
    assert ranking_metrics_reference({"q": qrels}, {"q": run}) == pytest.approx(got)
    # binary qrels of the same documents score lower nDCG: the grade-2 document is no longer worth more
    binary, _ = document_judgements(["d1", "d2", "d2", "d3"], {"d2", "d3", "d4"})
    assert ranking_metrics({"q": binary}, {"q": run})["ndcg@10"] == pytest.approx(
        (1 / LOG2_3 + 1 / 2) / (1 + 1 / LOG2_3 + 1 / 2))
