"""The quality gate: hybrid+merge on data/questions.jsonl must not fall under these floors.

`MEASURED` is what `notesrag eval` gave on the day the floors were set (index/ at commit
8a2021e plus RRF k=5, dense weight 1.5, BM25 tokens that split letters from digits and
answers that keep a "Term:" label; chunk sizes 2048,512,128, merge threshold 0.5, k=10, abstain threshold 0.34);
each floor sits a little under it, so a real regression fails and noise does not (the run
is deterministic on CPU: the same index and model give the same numbers). Raise the
floors when a change lifts the measured values; see the README's quality table.
"""

from __future__ import annotations

from collections.abc import Mapping

GATE_RUN = "hybrid+merge"

MEASURED: dict[str, float] = {
    "mrr@10": 0.947,
    "ndcg@10": 0.960,
    "recall@10": 1.000,
    "hit@1": 0.899,
    "f1": 0.451,
    "noanswer_precision": 0.818,
    "noanswer_recall": 0.450,
}

FLOORS: dict[str, float] = {
    "mrr@10": 0.935,
    "ndcg@10": 0.95,
    "recall@10": 0.98,
    "hit@1": 0.88,
    "f1": 0.44,
    "noanswer_precision": 0.75,
    "noanswer_recall": 0.40,
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
