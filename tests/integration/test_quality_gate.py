"""The quality gate: hybrid+merge on data/questions.jsonl stays above the floors in eval/gate.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval.datasets import load_jsonl
from eval.gate import FLOORS, GATE_RUN, MEASURED, failures
from eval.runner import IndexCache, LocalBackend, build_specs, evaluate

ROOT = Path(__file__).resolve().parents[2]


def test_floors_sit_under_the_measured_values() -> None:
    assert set(FLOORS) == set(MEASURED)
    for name, floor in FLOORS.items():
        assert floor <= MEASURED[name], name
    assert failures(MEASURED) == []
    assert failures({**MEASURED, "f1": 0.1}) == [f"f1: 0.100 < floor {FLOORS['f1']}"]
    assert failures({}) and all("missing" in line for line in failures({}))


@pytest.mark.slow
def test_quality_gate(notes_snapshot, embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dataset = load_jsonl(ROOT / "data" / "questions.jsonl", ROOT / "data" / "notes")
    assert len(dataset.questions) >= 80 and len(dataset.unanswerable) >= 12
    (spec,) = build_specs([GATE_RUN])
    # The session's index of data/notes is built with the default chunk sizes the gate uses.
    assert tuple(notes_snapshot.manifest.chunk_sizes) == spec.chunk_sizes
    backend = LocalBackend(dataset, IndexCache(tmp_path), embedder,
                           snapshots={spec.chunk_sizes: notes_snapshot})
    evaluation = evaluate(dataset, [spec], backend, k=10)
    metrics = evaluation.runs[0].metrics
    summary = ", ".join(f"{n} {metrics[n]:.3f}" for n in FLOORS if metrics.get(n) is not None)
    assert failures(metrics) == [], f"quality gate failed ({summary})"
    assert metrics["answerable_abstained"] == 0  # no answerable question answered "not covered"
