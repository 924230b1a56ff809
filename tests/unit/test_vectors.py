from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index.vectors import FaissIndex


def unit(n: int, d: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_flat_search_is_exact_inner_product():
    v = unit(200, 16, 0)
    idx = FaissIndex(16)
    idx.add(np.arange(1000, 1200), v)
    q = unit(5, 16, 1)
    scores, ids = idx.search(q, 10)
    expected = np.argsort(-(q @ v.T), axis=1)[:, :10] + 1000
    assert (ids == expected).all()
    assert np.allclose(scores, np.sort(q @ v.T, axis=1)[:, ::-1][:, :10], atol=1e-5)


def test_remove_and_round_trip(tmp_path: Path):
    v = unit(50, 8, 2)
    idx = FaissIndex(8)
    idx.add(np.arange(50), v)
    assert idx.remove(np.array([3, 4, 99])) == 2
    assert len(idx) == 48
    _, ids = idx.search(v[3], 48)
    assert 3 not in ids and 4 not in ids
    idx.save(tmp_path / "v.faiss")
    again = FaissIndex.load(tmp_path / "v.faiss")
    assert again.kind == "flat" and len(again) == 48
    assert (again.search(v[:5], 5)[1] == idx.search(v[:5], 5)[1]).all()


def test_hnsw_upgrade_keeps_recall_against_exact(tmp_path: Path):
    v = unit(3000, 32, 3)
    exact = FaissIndex(32)
    exact.add(np.arange(3000), v)
    approx = FaissIndex(32, hnsw_threshold=1000)
    approx.add(np.arange(3000), v)
    approx.maybe_upgrade()
    assert approx.kind == "hnsw"
    q = unit(100, 32, 4)
    _, e = exact.search(q, 10)
    _, a = approx.search(q, 10)
    recall = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(e, a, strict=True)])
    assert recall >= 0.95
    # removal from an HNSW index rebuilds it without the removed ids
    approx.remove(np.arange(100))
    assert len(approx) == 2900
    assert not np.isin(approx.search(q, 10)[1], np.arange(100)).any()
    approx.save(tmp_path / "h.faiss")
    assert FaissIndex.load(tmp_path / "h.faiss").kind == "hnsw"


def test_shapes_checked_and_empty_index():
    idx = FaissIndex(8)
    with pytest.raises(ValueError, match=r"vectors must have shape \(n, 8\), got \(2, 4\)"):
        idx.add(np.arange(2), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="3 ids for 2 vectors"):
        idx.add(np.arange(3), np.zeros((2, 8), np.float32))
    scores, ids = idx.search(np.zeros(8, np.float32), 5)
    assert scores.shape == (1, 0) and ids.shape == (1, 0)


def test_hnsw_hidden_removals_survive_save_and_an_id_can_come_back(tmp_path: Path):
    v = unit(400, 16, 5)
    idx = FaissIndex(16, kind="hnsw")
    idx.add(np.arange(400), v)
    assert idx.remove(np.array([7, 8, 9])) == 3  # hidden, under the rebuild fraction
    assert len(idx) == 397
    idx.save(tmp_path / "h.faiss")
    again = FaissIndex.load(tmp_path / "h.faiss")
    assert len(again) == 397
    _, ids = again.search(v[7:10], 5)
    assert not np.isin(ids, [7, 8, 9]).any()
    again.add(np.array([8]), v[8:9])  # the same id again (a file reverted to an old version)
    assert len(again) == 398
    _, ids = again.search(v[8], 1)
    assert ids[0][0] == 8
    exported, _ = again.export()
    assert sorted(exported.tolist()) == sorted(set(range(400)) - {7, 9})
