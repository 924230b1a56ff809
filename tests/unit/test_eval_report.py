"""Report formats on a hand-made evaluation: the JSON shape, the table, Markdown, the chart."""

from __future__ import annotations

import json
from pathlib import Path

from eval.datasets import Dataset, LabelledQuestion
from eval.report import (
    format_markdown,
    format_table,
    format_value,
    report_dict,
    write_chart,
    write_outputs,
)
from eval.runner import Evaluation, Outcome, Ranked, RunResult, RunSpec


def _evaluation() -> Evaluation:
    ds = Dataset("tiny", (LabelledQuestion("q1", "What?", "a", ("a",)),
                          LabelledQuestion("q2", "Who?", "", (), False)), "evidence")
    outcome = Outcome("q1", [Ranked("n1", "a", "a.md")], ["a"], "a", True, 0.9, "a", 0.01, 3)
    runs = [
        RunResult(RunSpec("dense", "dense", False),
                  {"mrr@5": 0.75, "ndcg@5": 0.8, "f1": 0.5, "noanswer_precision": None,
                   "latency_p50_ms": 12.345, "MiXeD": 1.0}, [outcome]),
        RunResult(RunSpec("hybrid+merge", "hybrid", True),
                  {"mrr@5": 1.0, "ndcg@5": 1.0, "f1": 0.123456, "noanswer_precision": 0.5,
                   "latency_p50_ms": 3.0, "MiXeD": 1.0}, [outcome]),
    ]
    return Evaluation(ds, 5, "in-process", runs, ["a note"], 1.234)


def test_report_dict_shape() -> None:
    report = report_dict(_evaluation())
    assert report["dataset"] == "tiny"
    assert report["questions"] == 2
    assert (report["answerable"], report["unanswerable"], report["k"]) == (1, 1, 5)
    assert [r["name"] for r in report["runs"]] == ["dense", "hybrid+merge"]
    run = report["runs"][1]
    assert run["config"] == {"mode": "hybrid", "merge": True, "chunk_sizes": [2048, 512, 128],
                             "merge_threshold": 0.5}
    assert run["metrics"]["f1"] == 0.1235  # rounded to 4 places
    assert "mixed" in run["metrics"]  # names lower-cased
    assert report["runs"][0]["metrics"]["noanswer_precision"] is None
    json.dumps(report, allow_nan=False)  # plain JSON, no NaN


def test_format_value() -> None:
    assert format_value(None) == "-"
    assert format_value(0.91234) == "0.912"
    assert format_value(123.456) == "123.5"
    assert format_value(3) == "3"


def test_format_table_has_a_row_per_metric_and_a_column_per_run() -> None:
    table = format_table(report_dict(_evaluation()))
    lines = table.splitlines()
    assert lines[0].startswith("tiny: 2 questions (1 unanswerable), k=5")
    header = next(line for line in lines if line.startswith("metric"))
    assert header.split() == ["metric", "dense", "hybrid+merge"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:] if line and line[0] != "-"}
    assert rows["mrr@5"] == ["0.750", "1.000"]
    assert rows["noanswer_precision"] == ["-", "0.500"]
    # the known metrics come in the documented order, unknown ones after them
    names = list(rows)
    assert names.index("mrr@5") < names.index("ndcg@5") < names.index("f1") < names.index("mixed")


def test_format_markdown() -> None:
    md = format_markdown(report_dict(_evaluation()))
    assert md.startswith("# Evaluation: tiny\n")
    assert "| metric | dense | hybrid+merge |" in md
    assert "| mrr@5 | 0.750 | 1.000 |" in md
    assert "- a note" in md
    assert '**hybrid+merge**: `{"mode": "hybrid"' in md


def test_write_chart_and_outputs(tmp_path: Path) -> None:
    png = write_chart(report_dict(_evaluation()), tmp_path / "chart.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    paths = write_outputs(_evaluation(), tmp_path / "out")
    assert json.loads(paths["json"].read_text())["runs"][0]["name"] == "dense"
    assert paths["markdown"].read_text().startswith("# Evaluation")
    assert paths["chart"].read_bytes()[:4] == b"\x89PNG"
    rows = [json.loads(line) for line in paths["details"].read_text().splitlines()]
    assert [(r["run"], r["qid"], r["ranked"]) for r in rows] == [
        ("dense", "q1", ["n1"]), ("hybrid+merge", "q1", ["n1"])]
