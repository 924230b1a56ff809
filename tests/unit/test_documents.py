from __future__ import annotations

import os
from pathlib import Path

import pytest

from index.ingestion.documents import (
    SkipFile,
    discover,
    html_to_text,
    markdown_sections,
    read_source,
    rst_sections,
    sections,
)


def test_markdown_heading_paths_and_offsets():
    text = "# A\n\nintro\n\n## B\n\nbody b\n\n### C\n\nbody c\n\n## D\n\n```\n# not a heading\n```\n"
    secs = markdown_sections(text)
    assert [s.heading_path for s in secs] == [("A",), ("A", "B"), ("A", "B", "C"), ("A", "D")]
    for s in secs:
        assert text[s.start:s.start + len(s.text)] == s.text
    assert "# not a heading" in secs[-1].text


def test_markdown_without_headings_is_one_section():
    assert [s.heading_path for s in markdown_sections("just text\n")] == [()]


def test_rst_titles():
    text = "Title\n=====\n\nintro\n\nSub\n---\n\nbody\n\nOther\n=====\n\nmore\n"
    secs = rst_sections(text)
    assert [s.heading_path for s in secs] == [("Title",), ("Title", "Sub"), ("Other",)]
    assert secs[1].text.strip() == "body"


def test_html_text_and_headings():
    html = ("<html><head><title>x</title><style>p{}</style></head><body><h1>Guide</h1>"
            "<p>Hello <b>world</b>.</p><script>alert(1)</script><h2>Part</h2><p>Two</p></body></html>")
    text = html_to_text(html)
    assert "alert" not in text and "p{}" not in text
    secs = markdown_sections(text)
    assert [s.heading_path for s in secs] == [("Guide",), ("Guide", "Part")]
    assert "Hello world." in secs[0].text


def test_read_source_kinds(tmp_path: Path):
    (tmp_path / "a.md").write_text("# H\n\ntext\n")
    (tmp_path / "b.html").write_text("<h1>T</h1><p>p</p>")
    src = read_source(tmp_path / "a.md", 1000)
    assert src.kind == "markdown" and src.path == str((tmp_path / "a.md").resolve())
    assert [s.heading_path for s in sections(read_source(tmp_path / "b.html", 1000))] == [("T",)]


@pytest.mark.parametrize("content, limit, reason", [
    (b"", 100, "empty file"),
    (b"   \n\n", 100, "empty file"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00", 100, "binary file"),
    (b"caf\xe9 au lait", 100, "not UTF-8"),
    (b"x" * 101, 100, "larger than the size limit of 100 bytes"),
])
def test_read_source_skips_with_a_reason(tmp_path: Path, content: bytes, limit: int, reason: str):
    p = tmp_path / "f.md"
    p.write_bytes(content)
    with pytest.raises(SkipFile, match=reason):
        read_source(p, limit)


def test_read_source_missing_and_symlink_loop(tmp_path: Path):
    with pytest.raises(SkipFile, match="unreadable"):
        read_source(tmp_path / "gone.md", 100)
    loop = tmp_path / "loop.md"
    os.symlink(loop, loop)
    with pytest.raises(SkipFile, match="unreadable"):
        read_source(loop, 100)


def test_discover_filters_and_survives_directory_loops(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "n.md").write_text("x")
    (tmp_path / "n.txt").write_text("x")
    (tmp_path / "image.png").write_bytes(b"x")
    (tmp_path / ".hidden.md").write_text("x")
    os.symlink(tmp_path, tmp_path / "sub" / "back")  # a folder loop
    found = sorted(p.name for p in discover([tmp_path]))
    assert found == ["n.md", "n.txt"]
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        list(discover([tmp_path / "missing"]))
