"""The real model on data/notes: the corpus itself, ingestion, search and the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from index import MODES

ROOT = Path(__file__).resolve().parents[2]
NOTES = ROOT / "data" / "notes"
ORIGINAL = ROOT / "data" / "source" / "2024-technical-notes.txt"  # the text the notes were made from


def test_markdown_notes_keep_the_original_text_line_for_line():
    """data/notes is the original text file with headings restored and nothing else changed."""
    original = [ln for ln in ORIGINAL.read_text(encoding="utf-8").splitlines() if ln.strip()]
    converted: list[str] = []
    for path in sorted(NOTES.glob("*.md")):
        for ln in path.read_text(encoding="utf-8").splitlines():
            if ln.strip():
                converted.append(re.sub(r"^#{1,6} ", "", ln))
    assert converted == original
    headings = [ln for p in sorted(NOTES.glob("*.md")) for ln in p.read_text().splitlines() if ln.startswith("#")]
    for expected in ("# Fundamentals of Deep Learning", "## Normalization", "# RAG", "# CUDA", "## Loss"):
        assert expected in headings


def test_huber_loss_section_first(notes_retriever):
    for mode in MODES:
        top = notes_retriever.search("What is Huber loss?", k=3, mode=mode)[0]
        assert top.heading_path[-1] == "Loss", (mode, top.heading_path)
        assert "Huber Loss" in top.text


def test_lightgbm_lines_first(notes_retriever):
    for mode in MODES:
        top = notes_retriever.search("What makes LightGBM efficient?", k=3, mode=mode, merge=False)[0]
        assert "LightGBM uses histogram-based algorithms" in top.text, mode


def test_hits_carry_spans_into_their_source(notes_retriever):
    for hit in notes_retriever.search("Why use layer norm instead of batch norm?", k=5):
        text = Path(hit.source).read_text(encoding="utf-8")
        assert text[hit.start:hit.end] == hit.text
        assert hit.heading_path and hit.level in (0, 1, 2)
    scores = [h.score for h in notes_retriever.search("diffusion model loss", k=5)]
    assert scores == sorted(scores, reverse=True)


def test_every_notes_section_is_in_the_tree(notes_snapshot):
    paths = {notes_snapshot.tree[i].heading_path for i in notes_snapshot.tree.leaves()}
    assert ("Fundamentals of Deep Learning", "Loss") in paths
    assert ("Machine Learning Basics",) in paths
    assert len(notes_snapshot.manifest.files) == len(list(NOTES.glob("*.md")))


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def in_process_cli(*args: str) -> Result:
    """The same commands in this process, with its loaded models: a fresh interpreter for each
    would import torch and load them again (`python -m service.cli` is run by the tests beside)."""
    from service.cli import app
    from service.settings import get_settings

    get_settings.cache_clear()  # read from this environment, as a fresh process would
    return CliRunner().invoke(app, list(args))


def test_cli_ingest_and_search(tmp_path):
    idx = tmp_path / "idx"
    r = in_process_cli("ingest", str(NOTES), "--index-dir", str(idx), "--no-progress")
    assert r.exit_code == 0, r.output
    assert re.search(r"ingested 9 files \(9 new, 0 changed, 0 unchanged, 0 removed\); embedded \d+ chunks", r.stdout)
    r = in_process_cli("ingest", str(NOTES), "--index-dir", str(idx), "--no-progress")
    assert "nothing changed: 9 files unchanged, 0 chunks embedded" in r.stdout
    r = in_process_cli("search", "What is Huber loss?", "--index-dir", str(idx), "--json", "--k", "2")
    assert r.exit_code == 0, r.output
    hits = json.loads(r.stdout)
    assert len(hits) == 2 and hits[0]["heading_path"][-1] == "Loss"


@pytest.mark.parametrize("args, code, message", [
    (("ingest", "/no/such/notes"), 2, "no such file or directory: /no/such/notes"),
    (("search", "x", "--mode", "fuzzy"), 2, "mode must be one of dense, bm25, hybrid"),
    (("ingest", "data/notes", "--chunk-sizes", "128,512"), 2, "strictly decreasing"),
])
def test_cli_bad_input(tmp_path, args, code, message):
    r = cli(*args, "--index-dir", str(tmp_path / "idx"))
    assert r.returncode == code
    assert message in r.stderr


def test_cli_search_without_index(tmp_path):
    r = cli("search", "x", "--index-dir", str(tmp_path / "none"))
    assert r.returncode == 1 and "no index in" in r.stderr
