"""PDF: the text layer of each page through pypdf, one section a page.

The document text is the pages' text joined by a form feed (`\\f`), so a character offset
falls in exactly one page; each page is a section whose heading path is `("Page N",)`
(1-based), so every node cut from it (chunks never cross a section) carries its page:
`page_of(node.heading_path)` gives it back. A PDF with no text on any page (a scan) and a
PDF pypdf cannot read are skipped with the reason. Plain data in and out: `documents` (which
imports this module lazily) turns it into its `SourceFile` and `Section`s.
"""

from __future__ import annotations

import io
import logging
import re

PAGE_BREAK = "\f"
PAGE_PREFIX = "Page "
NO_TEXT_LAYER = "no text layer (scanned?)"
_PAGE = re.compile(rf"^{PAGE_PREFIX}(\d+)$")


class PdfSkipped(Exception):
    """A PDF that is not ingested; the message names the reason (a scan, a damaged file)."""


def pdf_text(name: str, data: bytes) -> str:
    """The text of a PDF file named `name`, pages joined by PAGE_BREAK; PdfSkipped for a scan
    or a damaged file."""
    import pypdf
    from pypdf.errors import PyPdfError

    # pypdf logs every repair it attempts at WARNING; the skip reason says what matters
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise PdfSkipped(f"encrypted PDF {name}")
        texts = [_clean(p.extract_text() or "") for p in reader.pages]
    except PdfSkipped:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError,
            RecursionError, UnicodeError) as e:  # what a damaged file raises from pypdf's parser
        raise PdfSkipped(f"damaged PDF {name}: {type(e).__name__}: {e}") from e
    if not texts:
        raise PdfSkipped(f"damaged PDF {name}: no pages")
    if not any(t.strip() for t in texts):
        raise PdfSkipped(NO_TEXT_LAYER)
    return PAGE_BREAK.join(texts)


def _clean(text: str) -> str:
    # a form feed inside a page would read as a page break; a lone surrogate or NUL from a
    # broken font map would fail the snapshot write
    text = text.replace(PAGE_BREAK, " ").replace("\0", "")
    return text.encode("utf-8", "replace").decode("utf-8")


def pages(text: str) -> list[tuple[str, str, int]]:
    """(heading `Page N`, page text, offset in `text`) of each page with text."""
    out: list[tuple[str, str, int]] = []
    pos = 0
    for number, page in enumerate(text.split(PAGE_BREAK), 1):
        if page.strip():
            out.append((f"{PAGE_PREFIX}{number}", page, pos))
        pos += len(page) + len(PAGE_BREAK)
    return out


def page_of(heading_path: tuple[str, ...] | list[str]) -> int | None:
    """The 1-based page of a node cut from a PDF, from its heading path; None for other files."""
    if len(heading_path) == 1 and (m := _PAGE.match(heading_path[0])):
        return int(m.group(1))
    return None
