"""PDF ingestion through pypdf with PDFs written by the test: page numbers on every node,
a scan and a damaged file skipped with their reasons, the rest of the folder ingested."""

from __future__ import annotations

from pathlib import Path

import pytest
from pdf_files import make_pdf

from index import Retriever, ingest_sync, load_snapshot
from index.ingestion.documents import SkipFile, read_source, sections
from index.ingestion.pdf import NO_TEXT_LAYER, page_of

PAGES = [
    ["Gradient boosting fits each new tree to the residuals of the ensemble."],
    [],  # a page with no text: numbering must not shift
    ["Huber loss uses L2 for small errors and L1 for large errors.", "It is robust to outliers."],
]


def test_pages_become_sections_with_their_numbers(tmp_path: Path) -> None:
    f = tmp_path / "guide.pdf"
    f.write_bytes(make_pdf(PAGES))
    src = read_source(f, 10_000_000)
    assert src.kind == "pdf" and src.path == str(f.resolve())
    secs = sections(src)
    assert [s.heading_path for s in secs] == [("Page 1",), ("Page 3",)]
    for s in secs:  # offsets point into the document text
        assert src.text[s.start:s.start + len(s.text)] == s.text
    assert "Huber loss" in secs[1].text and "Huber" not in secs[0].text
    assert page_of(("Page 3",)) == 3 and page_of(("Loss",)) is None and page_of(()) is None


def test_scan_and_damaged_pdf_are_skipped_with_reasons(tmp_path: Path) -> None:
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(make_pdf([[], []]))
    with pytest.raises(SkipFile, match=r"^no text layer \(scanned\?\)$"):
        read_source(scan, 10_000_000)
    good = make_pdf(PAGES)
    for name, data in (("cut.pdf", good[: len(good) // 2]), ("junk.pdf", b"%PDF-1.4\nnot really\n")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SkipFile, match=rf"^damaged PDF {name}: "):
            read_source(tmp_path / name, 10_000_000)


def test_folder_with_pdfs_ingests_and_answers_with_page(tmp_path: Path, embedder) -> None:
    root = tmp_path / "notes"
    root.mkdir()
    (root / "trees.md").write_text("# Trees\n\nLightGBM grows trees leaf-wise.\n")
    (root / "guide.pdf").write_bytes(make_pdf(PAGES))
    (root / "scan.pdf").write_bytes(make_pdf([[]]))
    (root / "broken.pdf").write_bytes(make_pdf(PAGES)[:300])
    report = ingest_sync([root], tmp_path / "index", embedder=embedder)
    assert report.files_new == 2
    assert report.skipped[str(root / "scan.pdf")] == NO_TEXT_LAYER
    assert report.skipped[str(root / "broken.pdf")].startswith("damaged PDF broken.pdf: ")
    snap = load_snapshot(tmp_path / "index")
    hit = Retriever(snap, embedder).search("Which loss is robust to outliers?", k=1, merge=False)[0]
    assert hit.source == str(root / "guide.pdf")
    assert page_of(tuple(hit.heading_path)) == 3 and "Huber" in hit.text
    pdf_nodes = [snap.tree[i] for i in snap.tree.of_source(str(root / "guide.pdf"))]
    assert {page_of(n.heading_path) for n in pdf_nodes} == {1, 3}
    # unchanged PDFs are not re-read into new chunks
    again = ingest_sync([root], tmp_path / "index", embedder=embedder)
    assert again.files_unchanged == 2 and again.leaves_embedded == 0
