"""Vector indexes: FAISS and Milvus (Milvus Lite in a file) pass the same retrieval tests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from index.config import IndexConfig
from index.store.tree import Node, NodeTree, vector_id
from index.store.vectors import FaissIndex, VectorIndex


def unit(n: int, d: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class Backend:
    """Makes empty indexes of one backend and reloads them the way a snapshot does."""

    def __init__(self, name: str, root: Path) -> None:
        self.name, self.root, self.saves = name, root, 0

    def new(self, dim: int, **kw: object) -> VectorIndex:
        if self.name == "faiss":
            return FaissIndex(dim)
        from index.store.milvus import MilvusIndex

        return MilvusIndex.create(IndexConfig(vector_backend="milvus", **kw), dim, self.root)

    def reload(self, idx: VectorIndex) -> VectorIndex:
        self.saves += 1
        if self.name == "faiss":
            idx.save(self.root / f"v{self.saves}.faiss")
            return FaissIndex.load(self.root / f"v{self.saves}.faiss")
        from index.store.milvus import IDS_FILE, MilvusIndex

        assert isinstance(idx, MilvusIndex)
        snap = self.root / f"snap-{self.saves}"
        snap.mkdir()
        idx.save(snap / IDS_FILE)
        return MilvusIndex.load(snap, idx.describe(), idx.dim)


@pytest.fixture(params=["faiss", "milvus"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "milvus":
        pytest.importorskip("pymilvus")
        pytest.importorskip("milvus_lite")
    yield Backend(request.param, tmp_path)
    if request.param == "milvus":
        from index.store.milvus import LITE_FILE, release

        release(str((tmp_path / LITE_FILE).resolve()))


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[Backend]:
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    yield Backend("milvus", tmp_path)
    from index.store.milvus import LITE_FILE, release

    release(str((tmp_path / LITE_FILE).resolve()))


# -- both backends --------------------------------------------------------------------------
def test_flat_search_is_exact_inner_product(backend: Backend):
    v = unit(200, 16, 0)
    idx = backend.new(16)
    idx.add(np.arange(1000, 1200), v)
    q = unit(5, 16, 1)
    scores, ids = idx.search(q, 10)
    expected = np.argsort(-(q @ v.T), axis=1)[:, :10] + 1000
    assert (ids == expected).all()
    assert np.allclose(scores, np.sort(q @ v.T, axis=1)[:, ::-1][:, :10], atol=1e-5)


def test_remove_and_round_trip(backend: Backend):
    v = unit(50, 8, 2)
    idx = backend.new(8)
    idx.add(np.arange(50), v)
    assert idx.remove(np.array([3, 4, 99])) == 2
    assert len(idx) == 48
    _, ids = idx.search(v[3], 48)
    assert 3 not in ids and 4 not in ids
    again = backend.reload(idx)
    assert again.kind == "flat" and len(again) == 48
    assert (again.search(v[:5], 5)[1] == idx.search(v[:5], 5)[1]).all()
    exported, vectors = again.export()
    assert sorted(exported.tolist()) == sorted(set(range(50)) - {3, 4})
    assert np.allclose(vectors, v[exported], atol=1e-6)


def test_shapes_checked_and_empty_index(backend: Backend):
    idx = backend.new(8)
    with pytest.raises(ValueError, match=r"vectors must have shape \(n, 8\), got \(2, 4\)"):
        idx.add(np.arange(2), np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="3 ids for 2 vectors"):
        idx.add(np.arange(3), np.zeros((2, 8), np.float32))
    scores, ids = idx.search(np.zeros(8, np.float32), 5)
    assert scores.shape == (1, 0) and ids.shape == (1, 0)


def test_fewer_vectors_than_k(backend: Backend):
    v = unit(3, 8, 6)
    idx = backend.new(8)
    idx.add(np.array([7, 8, 9]), v)
    scores, ids = idx.search(v[:2], 10)
    assert ids.shape == (2, 3) and set(ids[0].tolist()) == {7, 8, 9}
    assert ids[0][0] == 7 and ids[1][0] == 8 and np.isclose(scores[0][0], 1.0, atol=1e-5)


# -- FAISS only -----------------------------------------------------------------------------
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


# -- Milvus only ----------------------------------------------------------------------------
def test_a_view_returns_its_own_top_k_when_unknown_rows_crowd_the_query(lite: Backend):
    """Rows an ingest wrote after a snapshot (near the query, more than k + EXTRA of them) are
    dropped, and the view asks again until it has its own exact top k."""
    v = unit(50, 16, 7)
    writer = lite.new(16)
    writer.add(np.arange(50), v)
    view = lite.reload(writer)
    q = unit(3, 16, 8)
    crowd = np.repeat(q, 100, axis=0) + 0.01 * unit(300, 16, 9)
    writer.add(np.arange(1000, 1300), crowd / np.linalg.norm(crowd, axis=1, keepdims=True))
    scores, ids = view.search(q, 10)
    assert (ids == np.argsort(-(q @ v.T), axis=1)[:, :10]).all()
    assert np.allclose(scores, np.sort(q @ v.T, axis=1)[:, ::-1][:, :10], atol=1e-5)
    assert (writer.search(q, 1)[1] >= 1000).all()  # the writer's own view has them


def test_rows_are_written_once(lite: Backend):
    """An id that is already stored keeps its row: a snapshot reading it never sees it change."""
    v = unit(2, 8, 10)
    writer = lite.new(8)
    writer.add(np.array([5]), v[:1])
    view = lite.reload(writer)
    writer.add(np.array([5]), v[1:])  # same id, other vector (never happens with content ids)
    scores, ids = view.search(v[:1], 1)
    assert ids[0][0] == 5 and np.isclose(scores[0][0], 1.0, atol=1e-5)


def test_rows_carry_source_heading_path_and_level(lite: Backend):
    nodes = [Node("p" * 24, 0, "Loss. Huber loss.", "/notes/a.md", ("DL", "Loss"), 0, 17, None),
             Node("c" * 24, 1, "Huber loss.", "/notes/a.md", ("DL", "Loss"), 6, 17, "p" * 24)]
    tree = NodeTree()
    tree.add(nodes)
    idx = lite.new(8)
    from index.store.milvus import MilvusIndex

    assert isinstance(idx, MilvusIndex)
    idx.bind(tree)
    vid = vector_id("c" * 24)
    idx.add(np.array([vid, 42]), unit(2, 8, 11))
    rows = idx.client.query(idx.collection, filter='level == 1 and source like "%a.md"',
                            output_fields=["id", "source", "heading_path", "level", "node_id"])
    assert [(r["id"], r["source"], r["heading_path"], r["level"], r["node_id"]) for r in rows] == [
        (vid, "/notes/a.md", "DL > Loss", 1, "c" * 24)]
    unknown = idx.client.query(idx.collection, filter="id == 42", output_fields=["level", "source"])
    assert (unknown[0]["level"], unknown[0]["source"]) == (-1, "")


def test_hnsw_index_type_keeps_recall_against_exact(lite: Backend):
    v = unit(2000, 32, 12)
    idx = lite.new(32, milvus_index_type="HNSW")
    idx.add(np.arange(2000), v)
    assert idx.kind == "hnsw"
    view = lite.reload(idx)  # flushes: the HNSW graph is built per sealed segment
    q = unit(50, 32, 13)
    _, a = view.search(q, 10)
    e = np.argsort(-(q @ v.T), axis=1)[:, :10]
    assert np.mean([len(set(x) & set(y)) / 10 for x, y in zip(e, a, strict=True)]) >= 0.95


def test_credentials_are_never_written_down(tmp_path: Path):
    from index.store.milvus import recorded_uri, redact

    assert redact("https://root:Milvus@db.example:19530/x?token=abc") == "https://db.example:19530/x"
    assert redact("http://[::1]:19530") == "http://[::1]:19530"
    assert recorded_uri("http://u:p@milvus:19530", tmp_path) == "http://milvus:19530"
    assert recorded_uri(str((tmp_path / "milvus.db").resolve()), tmp_path) == "milvus.db"
    assert recorded_uri("/elsewhere/v.db", tmp_path) == "/elsewhere/v.db"
    config = IndexConfig(vector_backend="milvus", milvus_uri="http://u:pw0rd@milvus:19530", milvus_token="s3cret")
    assert "s3cret" not in repr(config) and "pw0rd" not in repr(config)
    assert IndexConfig(milvus_uri="").milvus_uri is None  # compose's NOTESRAG_MILVUS_URI= when unset


def test_config_is_checked():
    with pytest.raises(ValueError, match="vector backend must be one of faiss, milvus, got 'qdrant'"):
        IndexConfig(vector_backend="qdrant")
    with pytest.raises(ValueError, match="milvus index type must be one of FLAT, HNSW, got 'IVF'"):
        IndexConfig(milvus_index_type="IVF")
    with pytest.raises(ValueError, match="milvus collection name must start with a letter"):
        IndexConfig(milvus_collection="my-notes")
    with pytest.raises(ValueError, match=r"milvus_uri must be a server URL such as http://milvus:19530 or") as e:
        IndexConfig(milvus_uri="root:pw@milvus:19530")
    assert "pw" not in str(e.value)


def test_a_collection_gone_under_a_view_is_unavailable_not_a_crash(lite: Backend):
    from index.store.milvus import MilvusIndex
    from index.store.snapshot import SnapshotUnavailable

    idx = lite.new(8)
    assert isinstance(idx, MilvusIndex)
    idx.add(np.arange(3), unit(3, 8, 14))
    idx.client.drop_collection(idx.collection)
    with pytest.raises(SnapshotUnavailable, match=f"collection {idx.collection}"):
        idx.search(unit(1, 8, 15), 2)


LOCKER = r"""
import sys, time
from pymilvus import MilvusClient
MilvusClient(sys.argv[1])
print("open", flush=True)
time.sleep(60)
"""


def test_a_lite_file_held_by_another_process_is_named_in_the_error(tmp_path: Path):
    pytest.importorskip("milvus_lite")
    from index.store.milvus import connect
    from index.store.snapshot import SnapshotUnavailable

    db = str(tmp_path / "held.db")
    p = subprocess.Popen([sys.executable, "-c", LOCKER, db], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "open"
        t0 = time.perf_counter()
        with pytest.raises(SnapshotUnavailable, match=r"open in another process.*one process at a time"):
            connect(db)
        assert time.perf_counter() - t0 < 30
    finally:
        p.kill()
        p.wait(10)
