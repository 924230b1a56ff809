"""Hostile files in a corpus: each is skipped or handled with a warning that names it, the rest
is ingested, and nothing the previous snapshot held is lost. (Binary, non-UTF-8, empty,
over-limit files and symlink loops: see test_documents.py and test_pipeline.py.)"""

from __future__ import annotations

import base64
import logging
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

import index.ingestion.pipeline
from index import IngestError, ingest_sync, load_snapshot
from index.ingestion.documents import (
    MAX_RUN,
    Section,
    SkipFile,
    drop_long_runs,
    markdown_sections,
    read_source,
)

A = "# Loss\n\nHuber loss uses L2 for small errors and L1 for large errors.\n"
B = "# Trees\n\nLightGBM grows trees leaf-wise and bins features into histograms.\n"
C = "# Attention\n\nScaled dot-product attention divides by the square root of the key size.\n"
SECRET = "# Secret\n\nThe launch code is swordfish-4471.\n"


def blob(n_bytes: int, seed: int = 0) -> str:
    """`n_bytes` of base64: one line, no whitespace (an inlined image, a minified bundle)."""
    raw = random.Random(seed).randbytes(n_bytes * 3 // 4)
    return base64.b64encode(raw).decode()


def nested_headings(repeats: int = 2000) -> str:
    """Six heading levels, repeated; a body every 400 repeats; lines of 7 and more '#'."""
    lines = []
    for i in range(repeats):
        lines += [f"{'#' * level} Level {level} of {i}" for level in range(1, 7)]
        if i % 400 == 0:
            lines += [f"Body {i}: attention heads nested six levels deep.", f"####### seven {i}", "#" * 40]
    return "\n".join(lines) + "\n"


@contextmanager
def fifo_never_blocks(path: Path, seconds: float = 20.0) -> Iterator[None]:
    """If a reader ever blocks on the FIFO (a regression), give it EOF after `seconds`, so the
    test fails instead of hanging the suite."""
    done = threading.Event()

    def release() -> None:
        if not done.wait(seconds):
            with suppress(OSError):  # no reader blocked: nothing to release
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

    threading.Thread(target=release, daemon=True).start()
    try:
        yield
    finally:
        done.set()


def names(snapshot_sources: list[str]) -> set[str]:
    return {Path(s).name for s in snapshot_sources}


def test_hostile_corpus(tmp_path: Path, embedder, monkeypatch: pytest.MonkeyPatch,
                        caplog: pytest.LogCaptureFixture) -> None:
    root, idx, outside = tmp_path / "notes", tmp_path / "idx", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "a.md").write_text(A)
    (root / "b.md").write_text(B)
    ingest_sync([root], idx, embedder=embedder)
    before = load_snapshot(idx)
    kept = {p: before.tree.of_source(str((root / p).resolve())) for p in ("a.md", "b.md")}

    (root / "c.md").write_text(C)
    (root / "blob.txt").write_text(blob(2 * 1024 * 1024))  # 2 MB, one line, no whitespace
    (root / "image.md").write_text("# Diagram\n\nThe encoder stack is drawn below.\n\n"
                                   f"![stack](data:image/png;base64,{blob(300_000, 1)})\n\n"
                                   "Residual connections skip every sub-layer.\n")
    (root / "nested.md").write_text(nested_headings())
    os.mkfifo(root / "fifo.md")
    (root / "dir.md").mkdir()  # a folder with a note's name: walked like any folder
    (root / "dir.md" / "inner.md").write_text("# Inner\n\nKV caching stores keys and values of past tokens.\n")
    (outside / "secret.md").write_text(SECRET)
    os.symlink(outside / "secret.md", root / "link-out.md")
    (outside / "folder").mkdir()
    (outside / "folder" / "hidden.md").write_text(SECRET.replace("Secret", "Hidden"))
    os.symlink(outside / "folder", root / "linked-folder")
    os.symlink(root / "c.md", root / "link-in.md")  # inside the root: the same file, once
    (root / "d.md").write_text("# Gone\n\nThis note is deleted before it is read.\n")

    real_open = os.open
    real_read_source = index.ingestion.pipeline.read_source

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        name = os.path.basename(os.fsdecode(path))
        if name == "a.md":  # deleted after discovery, just before it is opened
            os.unlink(path)
        if name == "b.md":  # root reads everything, so refuse as chmod 000 would for a user
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    def read_source(path: Path, max_bytes: int, confine: Path | None = None):  # type: ignore[no-untyped-def]
        if path.name == "d.md":  # deleted between discovery and the read
            path.unlink()
        return real_read_source(path, max_bytes, confine)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(index.ingestion.pipeline, "read_source", read_source)
    t0 = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="notesrag.ingest"), fifo_never_blocks(root / "fifo.md"):
        report = ingest_sync([root], idx, embedder=embedder)
    seconds = time.perf_counter() - t0
    monkeypatch.undo()

    reasons = {Path(p).name: r for p, r in report.skipped.items()}
    assert reasons == {
        "a.md": "unreadable: No such file or directory",
        "b.md": "unreadable: Permission denied",
        "d.md": "unreadable: No such file or directory",
        "fifo.md": "not a regular file (a FIFO, socket or device)",
        "link-out.md": "a symbolic link that leads outside the ingested folders",
        "hidden.md": "a symbolic link that leads outside the ingested folders",  # via linked-folder
    }
    assert str(root / "linked-folder" / "hidden.md") in report.skipped  # named by the link
    warned = [r.getMessage() for r in caplog.records if "without whitespace" in r.getMessage()]
    assert len(warned) == 2 and any("blob.txt: left out 1 run(s)" in w for w in warned)
    assert any("image.md: left out 1 run(s)" in w for w in warned)
    assert seconds < 30, f"the hostile corpus took {seconds:.0f}s"  # the blob is not chunked

    snap = load_snapshot(idx)
    assert names(snap.tree.sources()) == {"a.md", "b.md", "c.md", "image.md", "nested.md", "inner.md"}
    # nothing of the previous snapshot is lost: the unreadable and vanished files keep their nodes
    for p, ids in kept.items():
        assert snap.tree.of_source(str((root / p).resolve())) == ids
    texts = [snap.tree[i].text for i in snap.tree.leaves()]
    assert any("Huber" in t for t in texts) and any("LightGBM" in t for t in texts)
    assert not any("swordfish" in t or "deleted before" in t for t in texts)
    # the blob is left out, the prose around it stays, with offsets into the file
    image = (root / "image.md").read_text()
    image_nodes = [snap.tree[i] for i in snap.tree.of_source(str((root / "image.md").resolve()))]
    assert image_nodes and all(len(n.text) < 2000 and image[n.start:n.end] == n.text for n in image_nodes)
    assert any("Residual connections" in n.text for n in image_nodes)
    assert snap.manifest.files[str((root / "blob.txt").resolve())].nodes == 0
    # headings nest at most six deep; seven '#' are text
    nested = [snap.tree[i] for i in snap.tree.of_source(str((root / "nested.md").resolve()))]
    assert nested and max(len(n.heading_path) for n in nested) == 6
    assert any("####### seven 0" in n.text for n in nested)
    assert all(n.heading_path[-1].startswith("Level 6") for n in nested)

    # strict: the first hostile file is an error and the snapshot stays
    with pytest.raises(IngestError, match=r"(fifo\.md: not a regular file|a symbolic link)"):
        ingest_sync([root], idx, embedder=embedder, strict=True)
    assert load_snapshot(idx).path == snap.path


def test_files_that_yield_no_chunks_are_unchanged_on_the_next_ingest(tmp_path: Path, embedder) -> None:
    """A file with headings only, or only a blob, has no nodes; re-ingesting it must neither
    count it removed nor write a new snapshot."""
    root, idx = tmp_path / "notes", tmp_path / "idx"
    root.mkdir()
    (root / "a.md").write_text(A)
    (root / "headings.md").write_text("# Only\n## Headings\n")
    (root / "blob.md").write_text(blob(5000))
    first = ingest_sync([root], idx, embedder=embedder)
    assert first.files_new == 3 and not first.skipped
    for _ in range(2):
        again = ingest_sync([root], idx, embedder=embedder)
        assert (again.files_unchanged, again.files_removed, again.snapshot) == (3, 0, first.snapshot)
        assert "nothing changed" in again.summary()
    assert len(load_snapshot(idx).manifest.files) == 3


def test_markdown_nesting_is_bounded_and_offsets_hold() -> None:
    text = nested_headings()
    t0 = time.perf_counter()
    secs = markdown_sections(text)
    assert time.perf_counter() - t0 < 2
    assert len(secs) == 5
    for s in secs:
        assert len(s.heading_path) == 6 and text[s.start:s.start + len(s.text)] == s.text
        assert "####### seven" in s.text and "#" * 40 in s.text
    # a shallower heading closes the deeper ones
    secs = markdown_sections("###### F\n\nf\n\n# A\n\na\n\n### C\n\nc\n\n## B\n\nb\n")
    assert [s.heading_path for s in secs] == [("F",), ("A",), ("A", "C"), ("A", "B")]


def test_long_runs_are_cut_out_and_the_rest_keeps_its_offsets() -> None:
    run = "x" * (MAX_RUN + 1)
    text = f"before {run} middle {'y' * MAX_RUN} {run}\nafter"
    out, cut = drop_long_runs([Section(("H",), text, 100)])
    assert cut == 2
    assert [(s.text, s.start) for s in out] == [
        ("before ", 100), (f" middle {'y' * MAX_RUN} ", 100 + 7 + len(run)),
        ("\nafter", 100 + len(text) - len("\nafter"))]
    # CJK prose has no spaces: kept whole
    cjk = "注意力机制根据查询和键的相似度对值加权。" * 200
    assert drop_long_runs([Section((), cjk, 0)]) == ([Section((), cjk, 0)], 0)
    # a blob-only section leaves nothing; runs just under the limit cost linear time
    assert drop_long_runs([Section((), run, 0)]) == ([], 1)
    t0 = time.perf_counter()
    assert drop_long_runs([Section((), " ".join(["z" * MAX_RUN] * 2000), 0)])[1] == 0
    assert time.perf_counter() - t0 < 1


def test_read_source_confines_the_file_it_opens(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.md").write_text(SECRET)
    (root / "sub" / "fine.md").write_text(A)
    os.symlink(outside / "secret.md", root / "link.md")
    os.symlink(outside, root / "sub" / "escape")
    os.symlink(root / "sub" / "fine.md", root / "inside.md")
    for link in (root / "link.md", root / "sub" / "escape" / "secret.md"):
        with pytest.raises(SkipFile, match="a symbolic link that leads outside the corpus root"):
            read_source(link, 1000, confine=root)
        assert "swordfish" in read_source(link, 1000).text  # unconfined (the CLI) follows it
    src = read_source(root / "inside.md", 1000, confine=root)
    assert src.path == str(root / "sub" / "fine.md") and "Huber" in src.text


def test_read_source_refuses_special_files_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.md"
    os.mkfifo(fifo)
    with fifo_never_blocks(fifo, 10), pytest.raises(SkipFile, match="not a regular file"):
        read_source(fifo, 1000)
    (tmp_path / "folder.md").mkdir()
    with pytest.raises(SkipFile, match="not a regular file"):
        read_source(tmp_path / "folder.md", 1000)
    with pytest.raises(SkipFile, match="not a regular file"):
        read_source(Path("/dev/zero"), 1000)
