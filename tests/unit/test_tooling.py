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


def test_mypy_is_clean():
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr


def test_index_imports_no_web_or_cli_framework():
    code = ("import sys, index, index.ingestion.pipeline, index.answer.extractive, index.search.retriever; "
            "bad = [m for m in ('fastapi', 'starlette', 'typer', 'click', 'uvicorn', 'ragas') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
