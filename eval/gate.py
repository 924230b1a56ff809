"""The quality gate: hybrid+merge on data/questions.jsonl must not fall under these floors.

`MEASURED` is what `notesrag eval` gave on the day the floors were set (index/ at commit
8a2021e plus RRF k=5, dense weight 1.5, BM25 tokens that split letters from digits and
answers that keep a "Term:" label; chunk sizes 2048,512,128, merge threshold 0.5, k=10; since
issue 13 the answers of the packaged cross-encoder, see below);
each floor sits a little under it, so a real regression fails and noise does not (the run
is deterministic on CPU: the same index and model give the same numbers). Raise the
floors when a change lifts the measured values; see the README's table at a glance and eval/README.md.
"""

from __future__ import annotations

from collections.abc import Mapping

GATE_RUN = "hybrid+merge"

# Measured on the 214-question set (issue 13: answer units scored by the packaged cross-encoder,
# 4 units a question in calls of about one length, the logistic confidence, abstain threshold
# 0.15, low-confidence flag under 0.5, a quantity question answered without a number next to what
# it counts (5.0 off the log-odds, unless a list, diagram or code answers it by enumerating what is
# counted) and a question naming what the index never mentions penalised). The abstention floors changed on
# purpose: a false "not covered" is the failure a user trusts least, so recall was traded for
# precision; the low-confidence flag is the softer abstention, and has floors of its own.
# Retrieval since passages are embedded in int8 on the CPU (PASSAGES_INT8): fp32 passages gave
# mrr@10 0.961, ndcg@10 0.970, hit@1 0.928 with the same answers. Retrieval since the lists are fused
# by z-scores (DEFAULT_FUSION, the leaves BM25 does not list at 0): reciprocal rank fusion gave
# 0.954 / 0.965 / 0.917, the same answers.
MEASURED: dict[str, float] = {
    "mrr@10": 0.978,
    "ndcg@10": 0.983,
    "recall@10": 1.000,
    "hit@1": 0.961,
    "answer_accuracy": 0.950,  # 0.917 before a definition of the term a question names was preferred,
    # 0.928 before a "where ..." line opening a section became the context of the next unit, 0.933
    # with a term bonus of 3 in place of 4
    "f1": 0.459,  # a question for one thing: a lead-in list gives its lead-in and one item, or
    # the one of them the cross-encoder scores well ahead alone (0.428 when both always answered)
    "noanswer_precision": 1.000,
    "noanswer_recall": 0.706,  # 0.353 before the counted-thing check and a quantity penalty of 5,
    # 0.588 before an enumeration had to enumerate what is counted and a count to sit next to it
    "flagged_noanswer_precision": 0.789,
    "flagged_noanswer_recall": 0.882,  # 0.853 before code names counted as names
}

FLOORS: dict[str, float] = {
    "mrr@10": 0.97,
    "ndcg@10": 0.975,
    "recall@10": 0.98,
    "hit@1": 0.95,
    "answer_accuracy": 0.91,
    "f1": 0.40,
    "noanswer_precision": 0.9,
    "noanswer_recall": 0.6,
    "flagged_noanswer_precision": 0.7,
    "flagged_noanswer_recall": 0.7,
}


def failures(metrics: Mapping[str, float | None], floors: Mapping[str, float] = FLOORS) -> list[str]:
    """One line per metric under its floor (or missing); empty when the gate passes."""
    out = []
    for name, floor in floors.items():
        value = metrics.get(name)
        if value is None:
            out.append(f"{name}: missing (floor {floor})")
        elif value < floor:
            out.append(f"{name}: {value:.3f} < floor {floor}")
    return out
