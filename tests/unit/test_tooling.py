"""ruff and mypy, as configured in pyproject.toml, over the whole project."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_ruff_is_clean():
    r = subprocess.run([str(BIN / "ruff"), "check", "index", "service", "eval", "tests", "bench"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


# Type errors against the third-party types our code leans on, and against our own: mypy must
# still see them through pyproject.toml's follow_imports = "skip" list (which only drops
# subtrees none of these reach). Checked right after the full run, so its cache is warm.
PROBE = """\
import torch
from sentence_transformers import SentenceTransformer
from transformers.utils import logging as hf_logging
from index.search.fusion import rrf
torch.set_num_threads("2")
vectors: str = SentenceTransformer("x").encode(["a"])
hf_logging.disable_progress_bar(1)
rrf([["a"]], k="60")
"""


def test_mypy_is_clean(tmp_path: Path):
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE, encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "mypy", str(probe)], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 1, r.stdout + r.stderr
    errors = {(e.split(":")[1], e.rsplit("[", 1)[-1].rstrip("]")) for e in r.stdout.splitlines()
              if ": error:" in e}
    assert errors == {("5", "arg-type"), ("6", "assignment"), ("7", "call-arg"), ("8", "arg-type")}, r.stdout
    assert "Found 4 errors" in r.stdout, r.stdout


def test_index_imports_no_web_or_cli_framework():
    code = ("import sys, index, index.ingestion.pipeline, index.answer.extractive, index.search.retriever; "
            "bad = [m for m in ('fastapi', 'starlette', 'typer', 'click', 'uvicorn', 'ragas') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
