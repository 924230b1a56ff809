"""Milvus (Lite, FLAT) ranks every labelled question exactly as FAISS's exact search does.

data/notes is ingested once with each backend and the real model; the dense candidates
the retriever asks for (30) must come back in the same order with the same scores, and
the retriever's own rankings (dense, and hybrid with auto-merge) must be identical.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from index import IndexConfig, Retriever, ingest_sync, load_snapshot

ROOT = Path(__file__).resolve().parents[2]
NOTES = ROOT / "data" / "notes"
QUESTIONS = ROOT / "data" / "questions.jsonl"


def same_ranking(a_ids: np.ndarray, a_scores: np.ndarray, b_ids: np.ndarray, b_scores: np.ndarray) -> bool:
    """Equal, or differing only inside runs of tied scores (duplicate chunks score alike)."""
    if np.array_equal(a_ids, b_ids):
        return True
    for i in np.flatnonzero(a_ids != b_ids):
        tied = np.isclose(a_scores, a_scores[i], atol=1e-5)
        if set(a_ids[tied].tolist()) != set(b_ids[tied].tolist()):
            return False
    return True


def test_dense_rankings_equal_faiss_exact_on_the_labelled_set(tmp_path, embedder, notes_index):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from index.store.milvus import LITE_FILE, release

    # notes_index: data/notes ingested with the default backend (FAISS), shared by the session
    ingest_sync([NOTES], tmp_path / "milvus", IndexConfig(vector_backend="milvus"), embedder=embedder)
    try:
        exact, milvus = load_snapshot(notes_index), load_snapshot(tmp_path / "milvus")
        assert exact.manifest.backend == "faiss" and milvus.manifest.backend == "milvus"
        assert exact.tree.by_id == milvus.tree.by_id
        questions = [json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines() if line.strip()]
        assert len(questions) >= 100
        q = embedder.encode(questions)
        fs, fi = exact.vectors.search(q, 30)
        ms, mi = milvus.vectors.search(q, 30)
        assert fi.shape == mi.shape == (len(questions), min(30, len(exact.vectors)))
        assert np.abs(fs - ms).max() < 1e-5
        for row in range(len(questions)):
            assert same_ranking(fi[row], fs[row], mi[row], ms[row]), questions[row]
        r_exact, r_milvus = Retriever(exact, embedder), Retriever(milvus, embedder)
        for text, vec in zip(questions, q, strict=True):
            for mode, merge in (("dense", False), ("hybrid", True)):
                a = r_exact.rank(text, 10, mode, merge, query_vector=vec)
                b = r_milvus.rank(text, 10, mode, merge, query_vector=vec)
                assert [i for i, _ in a] == [i for i, _ in b], (text, mode)
                assert np.allclose([s for _, s in a], [s for _, s in b], atol=1e-5)
    finally:
        release(str((tmp_path / "milvus" / LITE_FILE).resolve()))
