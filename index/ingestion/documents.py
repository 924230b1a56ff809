"""Reading notes: discover files, decode them, and cut them into sections with heading paths.

Each section is the text between two headings; its heading path is the chain of
headings above it. Character offsets are offsets into the file's text (for
HTML, into the text extracted from it), so a citation can point back at the file.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUFFIXES: dict[str, str] = {
    ".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text",
    ".rst": "rst", ".html": "html", ".htm": "html", ".pdf": "pdf",
}


class SkipFile(Exception):
    """A file that is not ingested; the message names the reason."""


@dataclass(frozen=True, slots=True)
class Section:
    heading_path: tuple[str, ...]
    text: str
    start: int  # offset of `text` in the document text


@dataclass(frozen=True, slots=True)
class SourceFile:
    path: str  # as it is stored in the snapshot: absolute, resolved
    text: str
    sha256: str
    size: int
    kind: str


def is_utf8(text: str) -> bool:
    """Whether `text` can be written as UTF-8 (a lone surrogate from a file name or JSON cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def discover(paths: list[Path]) -> Iterator[Path]:
    """Supported files under `paths` (files given directly are taken whatever their suffix).

    Hidden files and folders are skipped, symlinked folders are not followed
    twice (a symlink loop ends), and the order is stable.
    """
    seen_dirs: set[tuple[int, int]] = set()
    for root in paths:
        if not root.exists():
            raise FileNotFoundError(f"no such file or directory: {root}")
        if root.is_file():
            yield root
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            st = os.stat(dirpath)
            if (st.st_dev, st.st_ino) in seen_dirs:
                dirnames[:] = []
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith(".") and Path(name).suffix.lower() in SUFFIXES:
                    yield Path(dirpath) / name


def read_source(path: Path, max_bytes: int, confine: Path | None = None) -> SourceFile:
    """Read and decode one file; raises SkipFile with a reason a person can act on.

    With `confine` (a resolved folder), the file actually opened must lie inside it: the check
    is made on the open descriptor, after every link was followed, so a link swapped in
    between a check and the read cannot lead the read outside.
    """
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (reads of regular files ignore it)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:  # a symlink loop is ELOOP
        raise SkipFile(f"unreadable: {e.strerror or e}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read; a device never ends
            raise SkipFile("not a regular file (a FIFO, socket or device)")
        resolved = opened_path(fd, path)
        if confine is not None and resolved != confine and confine not in resolved.parents:
            raise SkipFile(OUTSIDE)
        size = st.st_size
        if size > max_bytes:
            raise SkipFile(f"larger than the size limit of {max_bytes} bytes ({size} bytes)")
        if size == 0:
            raise SkipFile("empty file")
        data = _read_at_most(fd, max_bytes + 1)
    except SkipFile:
        raise
    except RuntimeError as e:  # Python < 3.13 reports a symlink loop this way
        raise SkipFile(f"unreadable: {e}") from e
    except OSError as e:
        raise SkipFile(f"unreadable: {e.strerror or e}") from e
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise SkipFile(f"larger than the size limit of {max_bytes} bytes")
    if path.suffix.lower() == ".pdf":  # binary: its text layer is read by pypdf (index.ingestion.pdf)
        from index.ingestion.pdf import PdfSkipped, pdf_text

        try:
            text = pdf_text(resolved.name, data)
        except PdfSkipped as e:
            raise SkipFile(str(e)) from e
        return SourceFile(str(resolved), text, hashlib.sha256(data).hexdigest(), len(data), "pdf")
    if b"\0" in data[:8192]:
        raise SkipFile("binary file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SkipFile(f"not UTF-8 (byte {e.start})") from e
    if not text.strip():
        raise SkipFile("empty file")
    kind = SUFFIXES.get(path.suffix.lower(), "text")
    if kind == "html":
        text = html_to_text(text)
    return SourceFile(str(resolved), text, hashlib.sha256(data).hexdigest(), len(data), kind)


OUTSIDE = "a symbolic link that leads outside the corpus root"


def opened_path(fd: int, path: Path) -> Path:
    """The resolved path of the file open as `fd` (on Linux, what the kernel says it opened)."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc: resolve the name again (a race remains there)
        return path.resolve(strict=True)
    if not target.startswith("/"):  # "pipe:[...]", "anon_inode:..."
        raise SkipFile("not a regular file (a FIFO, socket or device)")
    if target.endswith(" (deleted)") and not os.path.exists(target):
        raise SkipFile("unreadable: No such file or directory")  # removed since it was opened
    return Path(target)


def _read_at_most(fd: int, n: int) -> bytes:
    chunks: list[bytes] = []
    left = n
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def sections(src: SourceFile) -> list[Section]:
    """Cut a document into sections by its headings."""
    if src.kind == "markdown":
        return markdown_sections(src.text)
    if src.kind == "rst":
        return rst_sections(src.text)
    if src.kind == "html":
        return markdown_sections(src.text)  # html_to_text writes headings as Markdown
    if src.kind == "pdf":
        from index.ingestion.pdf import pages

        return [Section((heading,), text, start) for heading, text, start in pages(src.text)]
    return [Section((), src.text, 0)] if src.text.strip() else []


# A run of more printable ASCII characters than this with no whitespace is data, not prose
# (base64, a minified script, a hash list): it would become thousands of meaningless chunks,
# so it is left out of the index. Non-ASCII runs are kept: CJK prose has no spaces.
MAX_RUN = 1000
_LONG_RUN = re.compile(rf"(?<![!-~])[!-~]{{{MAX_RUN + 1},}}")  # starts only at a run's start: linear


def drop_long_runs(secs: list[Section]) -> tuple[list[Section], int]:
    """`secs` with every run of over MAX_RUN ASCII characters without whitespace cut out, and
    the number of runs cut. The text around a run stays, as sections that keep their offsets."""
    out: list[Section] = []
    cut = 0
    for s in secs:
        pos = 0
        for m in _LONG_RUN.finditer(s.text):
            cut += 1
            if s.text[pos:m.start()].strip():
                out.append(Section(s.heading_path, s.text[pos:m.start()], s.start + pos))
            pos = m.end()
        if pos == 0:
            out.append(s)
        elif s.text[pos:].strip():
            out.append(Section(s.heading_path, s.text[pos:], s.start + pos))
    return out, cut


_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def markdown_sections(text: str) -> list[Section]:
    """ATX headings (`#` to `######`) outside code fences open sections."""
    out: list[Section] = []
    path: list[tuple[int, str]] = []
    body_start = 0
    pos = 0
    in_fence = False

    def close(end: int) -> None:
        body = text[body_start:end]
        if body.strip():
            out.append(Section(tuple(h for _, h in path), body, body_start))

    for line in text.splitlines(keepends=True):
        if _FENCE.match(line):
            in_fence = not in_fence
        m = None if in_fence else _MD_HEADING.match(line.rstrip("\r\n"))
        if m:
            close(pos)
            level = len(m.group(1))
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, m.group(2).strip()))
            body_start = pos + len(line)
        pos += len(line)
    close(len(text))
    return out


_RST_ADORN = re.compile(r"^([=\-`:'\"~^_*+#<>.])\1{2,}\s*$")


def rst_sections(text: str) -> list[Section]:
    """reStructuredText titles: a line underlined (optionally overlined) by punctuation."""
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    styles: list[str] = []
    path: list[tuple[int, str]] = []
    out: list[Section] = []
    body_start = 0
    i = 0
    while i < len(lines):
        title = lines[i].strip()
        under = lines[i + 1].rstrip("\r\n") if i + 1 < len(lines) else ""
        m = _RST_ADORN.match(under)
        if title and not _RST_ADORN.match(lines[i].rstrip("\r\n")) and m and len(under.strip()) >= len(title):
            head_start = offsets[i]
            if i > 0 and _RST_ADORN.match(lines[i - 1].rstrip("\r\n")):
                head_start = offsets[i - 1]  # overline
            body = text[body_start:head_start]
            if body.strip():
                out.append(Section(tuple(h for _, h in path), body, body_start))
            style = m.group(1)
            if style not in styles:
                styles.append(style)
            level = styles.index(style)
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, title))
            body_start = offsets[i + 2]
            i += 2
            continue
        i += 1
    body = text[body_start:]
    if body.strip():
        out.append(Section(tuple(h for _, h in path), body, body_start))
    return out


def html_to_text(html: str) -> str:
    """Visible text of an HTML page, headings written as Markdown so they open sections."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    for level in range(1, 7):
        for h in soup.find_all(f"h{level}"):
            title = " ".join(h.get_text(" ").split())
            h.replace_with(f"\n\n{'#' * level} {title}\n\n")
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for block in soup.find_all(["p", "li", "div", "pre", "tr", "section", "article", "blockquote"]):
        block.insert_after("\n")
    text = soup.get_text()
    lines = [ln.rstrip() for ln in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
