"""Ingestion with the real model on small corpora: incremental updates and bad input.

The retrieval and incremental tests run on both vector backends (FAISS, and Milvus through
Milvus Lite in a file in the index directory); Milvus-only tests follow at the end.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from index import (
    IndexConfig,
    IngestError,
    Retriever,
    SnapshotError,
    SnapshotMismatchError,
    current_path,
    ingest_sync,
    load_snapshot,
)
from index.store.snapshot import CURRENT, manifest_dict, write_snapshot
from index.store.tree import vector_id

A = "# Loss\n\nHuber loss uses L2 for small errors and L1 for large errors.\n"
B = "# Trees\n\nLightGBM grows trees leaf-wise and bins features into histograms.\n"
C = "# Attention\n\nScaled dot-product attention divides by the square root of the key size.\n"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "notes"
    root.mkdir()
    (root / "a.md").write_text(A)
    (root / "b.md").write_text(B)
    return root


def ingest_with(backend: str) -> Callable[..., object]:
    def run(paths, index_dir, embedder, config: IndexConfig | None = None, **kw):
        config = dataclasses.replace(config or IndexConfig(), vector_backend=backend)
        return ingest_sync(paths, index_dir, config, embedder=embedder, **kw)

    return run


run_faiss = ingest_with("faiss")


@pytest.fixture(params=["faiss", "milvus"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "milvus":
        pytest.importorskip("pymilvus")
        pytest.importorskip("milvus_lite")
    yield request.param
    if request.param == "milvus":  # stop this test's in-process Milvus Lite engines
        from index.store.milvus import LITE_FILE, release

        for db in tmp_path.rglob(LITE_FILE):
            release(str(db.resolve()))


@pytest.fixture
def run(backend: str) -> Callable[..., object]:
    """`ingest_sync` with the test's vector backend."""
    return ingest_with(backend)


def sources(index_dir: Path) -> set[str]:
    return {Path(s).name for s in load_snapshot(index_dir).tree.sources()}


def test_ingest_and_search(corpus, tmp_path, embedder, run, backend):
    report = run([corpus], tmp_path / "idx", embedder)
    assert report.files_new == 2 and report.leaves_embedded == report.leaves > 0
    snap = load_snapshot(tmp_path / "idx")
    assert snap.manifest.backend == manifest_dict(snap)["vector_backend"] == backend
    assert (snap.path / "vectors.faiss").exists() == (backend == "faiss")
    assert len(snap.vectors) == len(snap.tree.leaves()) == len(snap.lexical)
    assert snap.manifest.model == "all-MiniLM-L6-v2" and snap.manifest.dim == 384
    assert snap.manifest.chunk_sizes == [2048, 512, 128]
    assert set(Path(p).name for p in snap.manifest.files) == {"a.md", "b.md"}
    assert len(snap.sentences) >= 2
    top = Retriever(snap, embedder).search("what is huber loss", k=1)[0]
    assert top.heading_path == ("Loss",) and Path(top.source).name == "a.md"
    assert (corpus / "a.md").read_text()[top.start:top.end] == top.text


def test_unchanged_reingest_embeds_nothing(corpus, tmp_path, embedder, run):
    run([corpus], tmp_path / "idx", embedder)
    first = current_path(tmp_path / "idx")
    report = run([corpus], tmp_path / "idx", embedder)
    assert report.leaves_embedded == 0 and report.files_unchanged == 2
    assert "nothing changed" in report.summary() and "0 chunks embedded" in report.summary()
    assert current_path(tmp_path / "idx") == first  # no new snapshot for no change


def test_changed_added_and_removed_files(corpus, tmp_path, embedder, run):
    idx = tmp_path / "idx"
    run([corpus], idx, embedder)
    old = load_snapshot(idx)
    old_a = set(old.tree.of_source(str((corpus / "a.md").resolve())))
    (corpus / "a.md").write_text(A + "\nLog-cosh loss is a smooth alternative.\n")
    (corpus / "c.md").write_text(C)
    (corpus / "b.md").unlink()
    report = run([corpus], idx, embedder)
    assert (report.files_changed, report.files_new, report.files_removed) == (1, 1, 1)
    snap = load_snapshot(idx)
    assert sources(idx) == {"a.md", "c.md"}
    b_path = str((corpus / "b.md").resolve())
    assert b_path not in snap.manifest.files
    # removed from the tree, FAISS and BM25
    assert not snap.tree.of_source(b_path)
    leaf_vids = {vector_id(i) for i in snap.tree.leaves()}
    ids, _ = snap.vectors.export()
    assert set(ids.tolist()) == leaf_vids
    assert set(snap.lexical.node_ids) == set(snap.tree.leaves())
    assert set(np.unique(snap.sentences.leaf).tolist()) <= leaf_vids
    assert not snap.lexical.search("LightGBM histograms", 5)
    # the changed file's new text is searchable; its old nodes are gone
    new_a = set(snap.tree.of_source(str((corpus / "a.md").resolve())))
    assert new_a != old_a
    assert any("Log-cosh" in snap.tree[i].text for i in new_a)


def test_paths_outside_the_ingested_roots_are_kept(corpus, tmp_path, embedder):
    other = tmp_path / "other"
    other.mkdir()
    (other / "c.md").write_text(C)
    idx = tmp_path / "idx"
    run_faiss([corpus], idx, embedder)
    run_faiss([other], idx, embedder)
    assert sources(idx) == {"a.md", "b.md", "c.md"}
    # both roots are recorded, so each file's public path is relative to its own root
    snap = load_snapshot(idx)
    assert snap.manifest.roots == sorted([str(corpus.resolve()), str(other.resolve())])
    assert {snap.public_path(s) for s in snap.manifest.files} == {"a.md", "b.md", "c.md"}


def test_bad_files_are_skipped_with_reasons_and_nothing_is_lost(corpus, tmp_path, embedder):
    idx = tmp_path / "idx"
    run_faiss([corpus], idx, embedder)
    (corpus / "b.md").write_bytes(b"\xff\xfe not utf-8 \xe9")  # was good, now broken
    (corpus / "empty.md").write_text("")
    (corpus / "bin.txt").write_bytes(b"\x00\x01\x02binary")
    (corpus / "big.md").write_text("word " * 300)
    report = run_faiss([corpus], idx, embedder, config=IndexConfig(max_file_bytes=1000))
    reasons = {Path(p).name: r for p, r in report.skipped.items()}
    assert reasons["b.md"].startswith("not UTF-8")
    assert reasons["empty.md"] == "empty file"
    assert reasons["bin.txt"] == "binary file"
    assert "size limit of 1000 bytes" in reasons["big.md"]
    assert sources(idx) == {"a.md", "b.md"}  # b.md keeps what the snapshot had of it
    snap = load_snapshot(idx)
    assert any("LightGBM" in snap.tree[i].text for i in snap.tree.leaves())


def test_strict_makes_a_bad_file_an_error_and_keeps_the_snapshot(corpus, tmp_path, embedder):
    idx = tmp_path / "idx"
    run_faiss([corpus], idx, embedder)
    before = current_path(idx)
    (corpus / "bad.md").write_bytes(b"\xff\xfe")
    with pytest.raises(IngestError, match=r"bad\.md: not UTF-8"):
        run_faiss([corpus], idx, embedder, strict=True)
    assert current_path(idx) == before


def test_missing_path_and_empty_corpus(tmp_path, embedder):
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        run_faiss([tmp_path / "nope"], tmp_path / "idx", embedder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match="no ingestible files"):
        run_faiss([tmp_path / "empty"], tmp_path / "idx", embedder)
    assert current_path(tmp_path / "idx") is None


def test_snapshot_of_another_model_fails_naming_both(corpus, tmp_path, embedder, run):
    idx = tmp_path / "idx"
    run([corpus], idx, embedder)
    manifest = current_path(idx) / "manifest.json"
    data = json.loads(manifest.read_text())
    data["model"], data["dim"] = "bge-large-en", 1024
    manifest.write_text(json.dumps(data))
    msg = r"built with model 'bge-large-en' \(dim 1024\).*configured embedder is 'all-MiniLM-L6-v2' \(dim 384\)"
    with pytest.raises(SnapshotMismatchError, match=msg):
        load_snapshot(idx, model=embedder.model_name, dim=embedder.dim)
    with pytest.raises(SnapshotMismatchError, match=msg):
        Retriever(load_snapshot(idx), embedder)
    with pytest.raises(SnapshotMismatchError, match=msg):
        run([corpus], idx, embedder)
    assert run([corpus], idx, embedder, rebuild=True).leaves_embedded > 0


def test_interrupted_write_leaves_the_previous_snapshot(corpus, tmp_path, embedder, run, monkeypatch):
    idx = tmp_path / "idx"
    run([corpus], idx, embedder)
    before = load_snapshot(idx)
    q = embedder.encode(["scaled dot-product attention", "huber loss"])
    answers = before.vectors.search(q, 5)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("index.store.lexical.BM25Index.save", boom)
    (corpus / "c.md").write_text(C)  # its vectors are written (Milvus: into the shared collection)
    with pytest.raises(OSError, match="disk full"):
        run([corpus], idx, embedder)
    after = load_snapshot(idx)
    assert after.path == before.path and len(after.tree) == len(before.tree)
    assert not list(idx.glob(".tmp-*"))
    for old, new in zip(answers, after.vectors.search(q, 5), strict=True):
        assert np.array_equal(old, new)  # c.md's rows are not the old snapshot's


def test_snapshot_round_trip_and_pruning(corpus, tmp_path, embedder, run):
    idx = tmp_path / "idx"
    run([corpus], idx, embedder)
    snap = load_snapshot(idx)
    for _ in range(4):
        write_snapshot(idx, snap.manifest, snap.tree, snap.vectors, snap.lexical, snap.sentences)
    assert len(list(idx.glob("snap-*"))) == 3
    again = load_snapshot(idx)
    assert again.tree.by_id == snap.tree.by_id
    assert (idx / CURRENT).read_text().strip() == again.path.name
    q = embedder.encode(["huber"])
    assert (again.vectors.search(q, 3)[1] == snap.vectors.search(q, 3)[1]).all()


def test_chunk_size_change_rebuilds(corpus, tmp_path, embedder, run):
    idx = tmp_path / "idx"
    run([corpus], idx, embedder)
    report = run([corpus], idx, embedder, config=IndexConfig(chunk_sizes=(512, 64)))
    assert report.leaves_embedded == report.leaves
    snap = load_snapshot(idx)
    assert snap.manifest.chunk_sizes == [512, 64] and snap.tree.depth == 2


def test_same_file_through_two_roots(corpus, tmp_path, embedder):
    report = run_faiss([corpus, corpus / "a.md"], tmp_path / "idx", embedder)
    assert sources(tmp_path / "idx") == {"a.md", "b.md"}
    assert report.nodes == len(load_snapshot(tmp_path / "idx").tree)


def test_copied_snapshot_dir_loads(corpus, tmp_path, embedder):
    idx = tmp_path / "idx"
    run_faiss([corpus], idx, embedder)
    shutil.copytree(current_path(idx), tmp_path / "copy")
    assert len(load_snapshot(tmp_path / "copy").tree) == len(load_snapshot(idx).tree)


# -- Milvus only -----------------------------------------------------------------------------
@pytest.fixture
def milvus_run(tmp_path: Path) -> Iterator[Callable[..., object]]:
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    yield ingest_with("milvus")
    from index.store.milvus import LITE_FILE, release

    for db in tmp_path.rglob(LITE_FILE):
        release(str(db.resolve()))


def stored(snap) -> set[int]:
    """Every id in the snapshot's collection (a full scan)."""
    from index.store.milvus import stored_ids

    return set(stored_ids(snap.vectors).tolist())


def leaf_ids(snap) -> set[int]:
    return {vector_id(i) for i in snap.tree.leaves()}


def test_milvus_rows_carry_what_filters_need(corpus, tmp_path, embedder, milvus_run):
    milvus_run([corpus], tmp_path / "idx", embedder)
    snap = load_snapshot(tmp_path / "idx")
    client, collection = snap.vectors.client, snap.vectors.collection
    a = str((corpus / "a.md").resolve())
    rows = client.query(collection, filter=f'source == "{a}"',
                        output_fields=["id", "heading_path", "level", "node_id"])
    assert rows and {r["id"] for r in rows} == {vector_id(i) for i in snap.tree.of_source(a)
                                               if snap.tree.is_leaf(i)}
    for r in rows:
        node = snap.tree[r["node_id"]]
        assert vector_id(node.id) == r["id"] and r["level"] == node.level
        assert r["heading_path"] == " > ".join(node.heading_path) == "Loss"


def test_milvus_deletes_wait_until_no_kept_snapshot_knows_the_rows(corpus, tmp_path, embedder, milvus_run):
    """A removed file's rows stay while a snapshot on disk (the one just swapped out) knows them,
    and go once it is pruned."""
    idx = tmp_path / "idx"
    milvus_run([corpus], idx, embedder)
    first = load_snapshot(idx)
    b = leaf_ids(first) - {vector_id(i) for i in first.tree.leaves() if "Huber" in first.tree[i].text}
    (corpus / "b.md").unlink()
    milvus_run([corpus], idx, embedder)
    now = load_snapshot(idx)
    assert not b & leaf_ids(now) and b <= stored(now)
    old = load_snapshot(first.path)  # the replaced snapshot still answers as it did
    q = embedder.encode(["LightGBM histograms"])
    assert np.array_equal(old.vectors.search(q, 3)[1], first.vectors.search(q, 3)[1])
    for i in range(3):  # three more snapshots: the first is pruned
        (corpus / f"n{i}.md").write_text(f"# Note {i}\n\nGradient clipping caps the norm at {i}.\n")
        milvus_run([corpus], idx, embedder)
    assert not first.path.exists()
    now = load_snapshot(idx)
    assert not b & stored(now)
    assert stored(now) == set().union(*(leaf_ids(load_snapshot(p)) for p in idx.glob("snap-*")))


def test_milvus_rows_of_a_killed_ingest_are_deleted_by_the_next(corpus, tmp_path, embedder, milvus_run,
                                                                 monkeypatch):
    idx = tmp_path / "idx"
    milvus_run([corpus], idx, embedder)
    before = load_snapshot(idx)
    (corpus / "c.md").write_text(C)

    def killed(*a, **k):
        raise KeyboardInterrupt  # as a kill after the rows were written and before CURRENT moved

    monkeypatch.setattr("index.store.lexical.BM25Index.save", killed)
    with pytest.raises(KeyboardInterrupt):
        milvus_run([corpus], idx, embedder)
    monkeypatch.undo()
    assert load_snapshot(idx).path == before.path
    orphans = stored(before) - leaf_ids(before)
    assert orphans  # c.md's rows, known to no snapshot
    (corpus / "c.md").unlink()
    (corpus / "a.md").write_text(A + "\nLog-cosh loss is a smooth alternative.\n")
    milvus_run([corpus], idx, embedder)
    now = load_snapshot(idx)
    assert not orphans & stored(now)
    assert stored(now) == leaf_ids(now) | leaf_ids(before)  # the previous snapshot is still kept


def test_milvus_rebuild_is_a_new_collection_and_the_old_goes_when_unused(corpus, tmp_path, embedder,
                                                                         milvus_run):
    idx = tmp_path / "idx"
    milvus_run([corpus], idx, embedder)
    first = load_snapshot(idx)
    client, name = first.vectors.client, first.vectors.prefix
    milvus_run([corpus], idx, embedder, rebuild=True)
    second = load_snapshot(idx)
    assert second.vectors.collection != first.vectors.collection and second.vectors.prefix == name
    assert client.describe_alias(name)["collection_name"] == second.vectors.collection
    q = embedder.encode(["huber loss"])
    assert np.array_equal(load_snapshot(first.path).vectors.search(q, 3)[1], second.vectors.search(q, 3)[1])
    for i in range(3):
        (corpus / f"n{i}.md").write_text(f"# Note {i}\n\nWarm-up steps number {i}.\n")
        milvus_run([corpus], idx, embedder)
    assert first.vectors.collection not in client.list_collections()
    assert second.vectors.collection in client.list_collections()


def test_switching_backends_embeds_nothing(corpus, tmp_path, embedder, milvus_run):
    idx = tmp_path / "idx"
    run_faiss([corpus], idx, embedder)
    faiss_snap = load_snapshot(idx)
    q = embedder.encode(["huber loss", "LightGBM leaf-wise"])
    (corpus / "c.md").write_text(C)
    report = milvus_run([corpus], idx, embedder)
    snap = load_snapshot(idx)
    c_leaves = [i for i in snap.tree.of_source(str((corpus / "c.md").resolve())) if snap.tree.is_leaf(i)]
    assert report.leaves_embedded == len(c_leaves)  # only the new file's; the rest moved over
    assert snap.manifest.backend == "milvus" and not (snap.path / "vectors.faiss").exists()
    assert stored(snap) == leaf_ids(snap)
    (corpus / "c.md").unlink()
    report = run_faiss([corpus], idx, embedder)
    back = load_snapshot(idx)
    assert report.leaves_embedded == 0 and back.manifest.backend == "faiss"
    s1, i1 = back.vectors.search(q, 3)
    s0, i0 = faiss_snap.vectors.search(q, 3)
    assert np.array_equal(i1, i0) and np.allclose(s1, s0, atol=1e-6)


def test_milvus_manifest_records_no_secret(corpus, tmp_path, embedder, milvus_run):
    idx = tmp_path / "idx"
    config = IndexConfig(milvus_token="tok-S3CRET", milvus_collection="team_notes")
    milvus_run([corpus], idx, embedder, config=config)
    snap = load_snapshot(idx, config=config)
    text = (snap.path / "manifest.json").read_text()
    assert "tok-S3CRET" not in text and "S3CRET" not in repr(config)
    store = json.loads(text)["vector_store"]
    assert store["uri"] == "milvus.db" and store["collection"].startswith("team_notes_g")
    assert manifest_dict(snap)["milvus"] == {"uri": "milvus.db", "collection": store["collection"],
                                             "index_type": "FLAT"}


def test_a_copied_milvus_snapshot_says_where_its_vectors_are(corpus, tmp_path, embedder, milvus_run):
    idx = tmp_path / "idx"
    milvus_run([corpus], idx, embedder)
    shutil.copytree(current_path(idx), tmp_path / "elsewhere" / "copy")
    with pytest.raises(SnapshotError, match="holds no vectors itself: copy the whole index directory"):
        load_snapshot(tmp_path / "elsewhere" / "copy")
