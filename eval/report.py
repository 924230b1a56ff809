"""Reports of an evaluation: the JSON document, a terminal table, Markdown and a PNG chart.

Everything but the writers is a pure function of the report dictionary (`report_dict`),
so the formats are tested on plain data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eval.runner import Evaluation, outcome_rows

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
CHART_PNG = "metrics.png"
DETAILS_JSONL = "per_question.jsonl"


def metric_order(k: int) -> list[str]:
    """The order metrics are shown in; others follow alphabetically."""
    return [
        f"mrr@{k}", f"ndcg@{k}", f"recall@{k}", "hit@1", f"hit@{k}",
        "answer_accuracy", "answerable_abstained", "f1", "em", "f1_answered", "answered_rate", "citation_support",
        "noanswer_precision", "noanswer_recall", "noanswer_f1",
        "low_confidence_rate", "flagged_noanswer_precision", "flagged_noanswer_recall",
        "abstain_threshold", "noanswer_precision_at_best", "noanswer_recall_at_best",
        "noanswer_f1_at_best", "f1_at_best", "em_at_best", "answer_accuracy_at_best",
        "context_precision", "context_recall", "rouge_l", "semantic_similarity",
        "faithfulness", "answer_relevancy",
        "context_tokens", "latency_p50_ms", "latency_p95_ms", "embed_ms_per_question",
    ]


def chart_metrics(k: int) -> list[str]:
    """The metrics in [0, 1] that the chart draws."""
    return [f"mrr@{k}", f"ndcg@{k}", f"recall@{k}", "hit@1", "answer_accuracy", "f1", "em",
            "noanswer_precision", "noanswer_recall", "context_precision", "context_recall",
            "rouge_l", "semantic_similarity", "faithfulness", "answer_relevancy"]


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    return value


def report_dict(evaluation: Evaluation) -> dict[str, Any]:
    """`{"dataset", "questions", "runs": [{"name", "config", "metrics"}], ...}` (JSON-ready)."""
    ds = evaluation.dataset
    return {
        "dataset": ds.name,
        "questions": len(ds.questions),
        "answerable": len(ds.answerable),
        "unanswerable": len(ds.unanswerable),
        "relevance": ds.relevance,
        "k": evaluation.k,
        "source": evaluation.source,
        "seconds": round(evaluation.seconds, 2),
        "runs": [
            {"name": r.spec.name, "config": r.spec.config(),
             "metrics": {name.lower(): _clean(v) for name, v in r.metrics.items()}}
            for r in evaluation.runs
        ],
        "notes": list(evaluation.notes),
    }


def _ordered_names(report: Mapping[str, Any]) -> list[str]:
    present: dict[str, None] = {}
    for run in report["runs"]:
        present |= dict.fromkeys(run["metrics"])
    order = [m for m in metric_order(int(report.get("k", 10))) if m in present]
    return order + sorted(m for m in present if m not in order)


def format_value(value: Any) -> str:
    """A metric value for a table: 3 decimals, 1 for milliseconds and tokens, '-' for none."""
    if value is None:
        return "-"
    if isinstance(value, float) and abs(value) >= 10:
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _rows(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["metric", *(run["name"] for run in report["runs"])]
    rows = [[name, *(format_value(run["metrics"].get(name)) for run in report["runs"])]
            for name in _ordered_names(report)]
    return header, rows


def format_table(report: Mapping[str, Any]) -> str:
    """A plain-text table, one row per metric and one column per run."""
    header, rows = _rows(report)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    title = (f"{report['dataset']}: {report['questions']} questions "
             f"({report.get('unanswerable', 0)} unanswerable), k={report.get('k')}, "
             f"{report.get('source', '')}")
    rule = "-" * len(line(header))
    return "\n".join([title, rule, line(header), rule, *(line(r) for r in rows), rule])


def format_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: a summary, the metrics table, the configurations, the notes."""
    header, rows = _rows(report)
    out = [
        f"# Evaluation: {report['dataset']}",
        "",
        f"{report['questions']} questions ({report.get('answerable', '?')} answerable, "
        f"{report.get('unanswerable', '?')} unanswerable), relevance by "
        f"{report.get('relevance', '?')}, k = {report.get('k')}, scored {report.get('source', '')}"
        f" in {report.get('seconds', 0)} s.",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        "## Configurations",
        "",
    ]
    for run in report["runs"]:
        out.append(f"- **{run['name']}**: `{json.dumps(run['config'])}`")
    if report.get("notes"):
        out += ["", "## Notes", "", *(f"- {n}" for n in report["notes"])]
    return "\n".join(out) + "\n"


def write_chart(report: Mapping[str, Any], path: Path) -> Path:
    """A grouped bar chart of the [0, 1] metrics, one bar per run, as PNG."""
    # Figure without pyplot: the Agg canvas, no GUI backend, no global state.
    from matplotlib.figure import Figure

    names = [m for m in chart_metrics(int(report.get("k", 10)))
             if any(run["metrics"].get(m) is not None for run in report["runs"])]
    runs = report["runs"]
    fig = Figure(figsize=(max(6.0, 0.9 * len(names) * max(1, len(runs)) / 2 + 2), 4.5),
                 layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(runs))
    for i, run in enumerate(runs):
        values = [run["metrics"].get(m) or 0.0 for m in names]
        xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(names))]
        ax.bar(xs, values, width, label=run["name"])
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title(f"{report['dataset']} ({report['questions']} questions)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", ncols=min(4, max(1, len(runs))), loc="lower left")
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def write_outputs(evaluation: Evaluation, out_dir: Path) -> dict[str, Path]:
    """report.json, report.md, metrics.png and per_question.jsonl in `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = report_dict(evaluation)
    paths = {"json": out_dir / REPORT_JSON, "markdown": out_dir / REPORT_MD,
             "chart": out_dir / CHART_PNG, "details": out_dir / DETAILS_JSONL}
    paths["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                             encoding="utf-8")
    paths["markdown"].write_text(format_markdown(report), encoding="utf-8")
    write_chart(report, paths["chart"])
    with paths["details"].open("w", encoding="utf-8") as f:
        for row in outcome_rows(evaluation):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return paths
