"""Ingestion with the real model on small corpora: incremental updates and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from index import (
    IndexConfig,
    IngestError,
    Retriever,
    SnapshotMismatchError,
    current_path,
    ingest_sync,
    load_snapshot,
)
from index.snapshot import CURRENT, write_snapshot
from index.tree import vector_id

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


def run(paths, index_dir, embedder, **kw):
    return ingest_sync(paths, index_dir, embedder=embedder, **kw)


def sources(index_dir: Path) -> set[str]:
    return {Path(s).name for s in load_snapshot(index_dir).tree.sources()}


def test_ingest_and_search(corpus, tmp_path, embedder):
    report = run([corpus], tmp_path / "idx", embedder)
    assert report.files_new == 2 and report.leaves_embedded == report.leaves > 0
    snap = load_snapshot(tmp_path / "idx")
    assert len(snap.vectors) == len(snap.tree.leaves()) == len(snap.lexical)
    assert snap.manifest.model == "all-MiniLM-L6-v2" and snap.manifest.dim == 384
    assert snap.manifest.chunk_sizes == [2048, 512, 128]
    assert set(Path(p).name for p in snap.manifest.files) == {"a.md", "b.md"}
    assert len(snap.sentences) >= 2
    top = Retriever(snap, embedder).search("what is huber loss", k=1)[0]
    assert top.heading_path == ("Loss",) and Path(top.source).name == "a.md"
    assert (corpus / "a.md").read_text()[top.start:top.end] == top.text


def test_unchanged_reingest_embeds_nothing(corpus, tmp_path, embedder):
    run([corpus], tmp_path / "idx", embedder)
    first = current_path(tmp_path / "idx")
    report = run([corpus], tmp_path / "idx", embedder)
    assert report.leaves_embedded == 0 and report.files_unchanged == 2
    assert "nothing changed" in report.summary() and "0 chunks embedded" in report.summary()
    assert current_path(tmp_path / "idx") == first  # no new snapshot for no change


def test_changed_added_and_removed_files(corpus, tmp_path, embedder):
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
    run([corpus], idx, embedder)
    run([other], idx, embedder)
    assert sources(idx) == {"a.md", "b.md", "c.md"}


def test_bad_files_are_skipped_with_reasons_and_nothing_is_lost(corpus, tmp_path, embedder):
    idx = tmp_path / "idx"
    run([corpus], idx, embedder)
    (corpus / "b.md").write_bytes(b"\xff\xfe not utf-8 \xe9")  # was good, now broken
    (corpus / "empty.md").write_text("")
    (corpus / "bin.txt").write_bytes(b"\x00\x01\x02binary")
    (corpus / "big.md").write_text("word " * 300)
    report = run([corpus], idx, embedder, config=IndexConfig(max_file_bytes=1000))
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
    run([corpus], idx, embedder)
    before = current_path(idx)
    (corpus / "bad.md").write_bytes(b"\xff\xfe")
    with pytest.raises(IngestError, match=r"bad\.md: not UTF-8"):
        run([corpus], idx, embedder, strict=True)
    assert current_path(idx) == before


def test_missing_path_and_empty_corpus(tmp_path, embedder):
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        run([tmp_path / "nope"], tmp_path / "idx", embedder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match="no ingestible files"):
        run([tmp_path / "empty"], tmp_path / "idx", embedder)
    assert current_path(tmp_path / "idx") is None


def test_snapshot_of_another_model_fails_naming_both(corpus, tmp_path, embedder):
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


def test_interrupted_write_leaves_the_previous_snapshot(corpus, tmp_path, embedder, monkeypatch):
    idx = tmp_path / "idx"
    run([corpus], idx, embedder)
    before = load_snapshot(idx)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("index.lexical.BM25Index.save", boom)
    (corpus / "c.md").write_text(C)
    with pytest.raises(OSError, match="disk full"):
        run([corpus], idx, embedder)
    after = load_snapshot(idx)
    assert after.path == before.path and len(after.tree) == len(before.tree)
    assert not list(idx.glob(".tmp-*"))


def test_snapshot_round_trip_and_pruning(corpus, tmp_path, embedder):
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


def test_chunk_size_change_rebuilds(corpus, tmp_path, embedder):
    idx = tmp_path / "idx"
    run([corpus], idx, embedder)
    report = run([corpus], idx, embedder, config=IndexConfig(chunk_sizes=(512, 64)))
    assert report.leaves_embedded == report.leaves
    snap = load_snapshot(idx)
    assert snap.manifest.chunk_sizes == [512, 64] and snap.tree.depth == 2


def test_same_file_through_two_roots(corpus, tmp_path, embedder):
    report = run([corpus, corpus / "a.md"], tmp_path / "idx", embedder)
    assert sources(tmp_path / "idx") == {"a.md", "b.md"}
    assert report.nodes == len(load_snapshot(tmp_path / "idx").tree)


def test_copied_snapshot_dir_loads(corpus, tmp_path, embedder):
    idx = tmp_path / "idx"
    run([corpus], idx, embedder)
    shutil.copytree(current_path(idx), tmp_path / "copy")
    assert len(load_snapshot(tmp_path / "copy").tree) == len(load_snapshot(idx).tree)
