"""`ingest --engine ray` on a local Ray instance with 2 CPU actors: the asyncio pipeline's snapshot.

Real Ray, the real model. Ray starts once for the module (about 5 s) and every Ray ingest
here joins it; each ingest still starts its own pool of 2 actors, which load the model.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from index import MODES, IngestError, Retriever, Snapshot, current_path, ingest_sync, load_snapshot
from index.ingestion.ray_engine import ingest_ray_sync
from index.store.snapshot import Manifest
from service.cli import app

pytest.importorskip("ray.data")

ROOT = Path(__file__).resolve().parents[2]
NOTES = ROOT / "data" / "notes"
QUESTIONS = [json.loads(line)["question"] for line in (ROOT / "data" / "questions.jsonl").read_text().splitlines()
             if line.strip()]
ACTORS = 2


@pytest.fixture(scope="module")
def ray_local():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=ACTORS, include_dashboard=False, logging_level=logging.ERROR)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_notes(ray_local, embedder, tmp_path_factory):
    index_dir = tmp_path_factory.mktemp("ray-notes")
    report = ingest_ray_sync([NOTES], index_dir, embedder=embedder, actors=ACTORS)
    return report, load_snapshot(index_dir)


def assert_same_snapshot(a: Snapshot, b: Snapshot) -> None:
    """Same nodes and tree, manifests equal but for the times, vectors equal to 1e-5."""
    assert a.tree.by_id == b.tree.by_id
    assert a.tree.levels == b.tree.levels

    def timeless(m: Manifest) -> Manifest:
        return replace(m, created_at="", files={k: replace(f, indexed_at=None) for k, f in m.files.items()})

    assert timeless(a.manifest) == timeless(b.manifest)
    ids_a, vecs_a = a.vectors.export()
    ids_b, vecs_b = b.vectors.export()
    assert np.array_equal(ids_a, ids_b)  # the same ids in the same order: ties rank alike too
    np.testing.assert_allclose(vecs_a, vecs_b, rtol=0, atol=1e-5)
    sa, sb = a.sentences, b.sentences
    assert len(sa) == len(sb) > 0
    assert np.array_equal(sa.leaf, sb.leaf) and np.array_equal(sa.start, sb.start)
    assert np.array_equal(sa.end, sb.end)
    # stored as fp16: equal to 1e-5 before rounding is equal to 1e-5 plus one fp16 step after it
    va, vb = sa.vectors.astype(np.float32), sb.vectors.astype(np.float32)
    step = np.spacing(np.maximum(np.abs(sa.vectors), np.abs(sb.vectors))).astype(np.float32)
    assert (np.abs(va - vb) <= 1e-5 + step).all()
    assert a.lexical.node_ids == b.lexical.node_ids


def test_notes_snapshot_equals_the_asyncio_one(ray_notes, notes_snapshot):
    report, snap = ray_notes
    assert report.engine == f"ray, {ACTORS} CPU actors" and "embedded on ray" in report.summary()
    assert report.leaves_embedded == report.leaves == len(snap.tree.leaves()) > 0
    assert report.sentences_embedded == len(snap.sentences)
    assert_same_snapshot(notes_snapshot, snap)


def test_same_search_results(ray_notes, notes_snapshot, embedder):
    by_asyncio = Retriever(notes_snapshot, embedder)
    by_ray = Retriever(ray_notes[1], embedder)
    # the snapshots are the subject: each question is embedded once, in one batch, and both
    # search with that vector (one model either way), not four times one at a time
    vectors = by_asyncio.embed_queries(QUESTIONS)
    for mode in MODES:
        for q, v in zip(QUESTIONS, vectors, strict=True):
            a, b = (r.rank(q, k=10, mode=mode, query_vector=v) for r in (by_asyncio, by_ray))
            assert [i for i, _ in a] == [i for i, _ in b], (mode, q)
            np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-5)


def test_incremental_reingest_embeds_only_new_chunks(ray_local, embedder, tmp_path):
    corpus = tmp_path / "notes"
    corpus.mkdir()
    for name in ("01-fundamentals-of-deep-learning.md", "06-rag.md", "07-cuda.md"):
        shutil.copy(NOTES / name, corpus / name)
    first = tmp_path / "first"
    ingest_sync([corpus], first, embedder=embedder)  # the engine that made a snapshot does not matter
    old = load_snapshot(first)
    shutil.copytree(first, tmp_path / "by-asyncio")
    shutil.copytree(first, tmp_path / "by-ray")
    rag = corpus / "06-rag.md"
    rag.write_text(rag.read_text() + "\n## Reranking\n\nA cross-encoder reranks the fused candidates "
                   "before the answer is written. It reads the question and each passage together.\n")

    by_ray = ingest_ray_sync([corpus], tmp_path / "by-ray", embedder=embedder, actors=ACTORS)
    by_asyncio = ingest_sync([corpus], tmp_path / "by-asyncio", embedder=embedder)
    snap = load_snapshot(tmp_path / "by-ray")
    new_leaves = set(snap.tree.leaves()) - set(old.tree.leaves())
    assert (by_ray.files_changed, by_ray.files_unchanged) == (1, 2)
    assert by_ray.leaves_embedded == len(new_leaves) == by_asyncio.leaves_embedded > 0
    assert by_ray.leaves_reused == by_asyncio.leaves_reused > 0
    assert by_ray.sentences_embedded == by_asyncio.sentences_embedded
    assert_same_snapshot(load_snapshot(tmp_path / "by-asyncio"), snap)

    again = ingest_ray_sync([corpus], tmp_path / "by-ray", embedder=embedder, actors=ACTORS)
    assert again.leaves_embedded == 0 and not again.changed
    assert again.engine == "ray"  # nothing to embed: no actor was started
    assert current_path(tmp_path / "by-ray") == snap.path


def test_a_failed_ray_embedding_keeps_the_previous_snapshot(ray_local, embedder, tmp_path):
    """Actors that cannot load the driver's model fail the run; the snapshot stays as it was."""
    corpus = tmp_path / "notes"
    corpus.mkdir()
    shutil.copy(NOTES / "07-cuda.md", corpus)
    ingest_sync([corpus], tmp_path / "idx", embedder=embedder)
    before = current_path(tmp_path / "idx")

    class OtherModel:  # the driver's side of the seam: the name and dimension the actors must match
        model_name, dim, device = "other-model", embedder.dim, "cpu"

        def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
            raise AssertionError("the driver never encodes under the ray engine")

    with pytest.raises(IngestError, match=r"embedding on Ray failed: .*'all-MiniLM-L6-v2'.*'other-model'"):
        ingest_ray_sync([corpus], tmp_path / "idx", embedder=OtherModel(), rebuild=True, actors=1)
    assert current_path(tmp_path / "idx") == before
    assert not list((tmp_path / "idx").glob(".tmp-*"))


def test_cli_ingest_with_the_ray_engine(ray_local, tmp_path):
    """The CLI joins the Ray this process is connected to (a local one would start otherwise)."""
    corpus = tmp_path / "notes"
    corpus.mkdir()
    shutil.copy(NOTES / "07-cuda.md", corpus)
    r = CliRunner().invoke(app, ["ingest", str(corpus), "--index-dir", str(tmp_path / "idx"), "--engine", "ray",
                                 "--actors", "1", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "embedded on ray, 1 CPU actor" in r.output
    assert len(load_snapshot(tmp_path / "idx").tree) > 0


@pytest.mark.parametrize(("args", "message"), [
    (["--address", "127.0.0.1:6379"], "--address needs --engine ray"),
    (["--actors", "2"], "--actors needs --engine ray"),
    (["--engine", "asyncio", "--address", "auto"], "--address needs --engine ray"),
    (["--engine", "spark"], "'spark' is not one of"),
    (["--engine", "ray", "--actors", "0"], "--actors"),
])
def test_cli_engine_flag_errors(args, message, tmp_path):
    r = CliRunner().invoke(app, ["ingest", str(NOTES), "--index-dir", str(tmp_path / "idx"), *args])
    assert r.exit_code == 2 and message in " ".join(r.output.split()), r.output
    assert current_path(tmp_path / "idx") is None


def test_cli_ray_engine_without_ray_installed(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray.data", None)  # `import ray.data` raises ImportError
    r = CliRunner().invoke(app, ["ingest", str(NOTES), "--index-dir", str(tmp_path / "idx"), "--engine", "ray"])
    assert r.exit_code == 2 and "pip install 'notesrag[scale]'" in r.output, r.output
