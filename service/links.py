"""How sources reach callers: the path relative to its corpus root (never an absolute path of
this host), the lines, heading anchor and PDF page of a passage, and a link to it.

The engine runs every citation and passage it returns through one `Linker`, so `/v1/ask`, the
chat completions, `/v1/search`, the SSE events, feedback records and the MCP tools all show
the same `source` and `url`. The URL comes from `NOTESRAG_SOURCE_URL_TEMPLATE` (see
`PLACEHOLDERS`); a page of an ingested website links to itself.
"""

from __future__ import annotations

import dataclasses
import re
import string
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit

from index.answer.extractive import Citation
from index.ingestion.chunking import slug
from index.ingestion.pdf import page_of
from index.search.retriever import Hit
from index.store.snapshot import Snapshot, public_path

# What a URL template may name; each value is URL-encoded ({path} keeps its slashes).
PLACEHOLDERS: dict[str, str] = {
    "path": "the source relative to the corpus root, e.g. guide/intro.md",
    "path_noext": "the same without its file extension, e.g. guide/intro",
    "name": "the file name, e.g. intro.md",
    "anchor": "the slug of the passage's heading, as GitHub and MkDocs give it",
    "line_start": "the first line of the passage (1-based)",
    "line_end": "its last line",
    "page": "a PDF's page (1-based)",
}
# Sources whose indexed text is extracted from the file, so its lines are not the file's lines.
_EXTRACTED = (".html", ".htm", ".pdf")
# An absolute POSIX path of two or more parts, not inside a URL (no ':' or '/' or a word just before it).
_ABSOLUTE = re.compile(r"(?<![\w.~:/\\-])/(?:[^\s/'\"`<>|]+/)+([^\s/'\"`<>|,;)]+)")


def hide_paths(text: str) -> str:
    """`text` with every absolute path shown as `…/` and its last part: error messages of the
    library name their files and folders; callers of the API are not told where they are."""
    return _ABSOLUTE.sub(lambda m: "…/" + m.group(1), text)


def scrub(value: Any) -> Any:
    """`hide_paths` applied to every string of a JSON-like value."""
    if isinstance(value, str):
        return hide_paths(value)
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


class UrlTemplate:
    """A URL with `{placeholder}`s (PLACEHOLDERS). A placeholder without a value (no heading, not
    a PDF, no line numbers) drops the template's `#fragment` when it stands there, and gives no
    URL at all when it stands before it."""

    def __init__(self, template: str) -> None:
        self.template = template.strip()
        if not self.template.startswith(("http://", "https://")):
            raise ValueError("the source URL template must start with http:// or https://")
        base, hash_, fragment = self.template.partition("#")
        self._base, self._fragment = self._parse(base), self._parse(hash_ + fragment) if hash_ else []

    @staticmethod
    def _parse(part: str) -> list[tuple[str, str | None]]:
        try:
            parsed = list(string.Formatter().parse(part))
        except ValueError as e:  # "Single '}' encountered", "expected '}' before end of string"
            raise ValueError(f"the source URL template is not valid ({e}); write a literal brace as {{{{ or }}}}") from None
        out: list[tuple[str, str | None]] = []
        for literal, field, spec, conversion in parsed:
            if field is not None and (field not in PLACEHOLDERS or spec or conversion):
                raise ValueError(f"the source URL template names {{{field}{'!' + conversion if conversion else ''}"
                                 f"{':' + spec if spec else ''}}}, which is not one of "
                                 + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS))
            out.append((literal, field))
        return out

    @property
    def fields(self) -> set[str]:
        return {f for _, f in self._base + self._fragment if f is not None}

    def render(self, values: dict[str, str | None]) -> str | None:
        """The URL for these (already URL-encoded) values, or None when a value before the
        fragment is missing."""
        base = _fill(self._base, values)
        if base is None:
            return None
        return base + (_fill(self._fragment, values) or "")


def _fill(parts: list[tuple[str, str | None]], values: dict[str, str | None]) -> str | None:
    out = []
    for literal, field in parts:
        out.append(literal)
        if field is not None:
            value = values.get(field)
            if value is None or value == "":
                return None
            out.append(value)
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Link:
    """Where a passage is, as callers are shown it."""

    source: str  # relative to its corpus root, or a web page's URL
    line_start: int | None
    line_end: int | None
    anchor: str | None
    page: int | None
    url: str | None


@dataclass(frozen=True, slots=True)
class LinkedHit(Hit):
    """A retrieved passage with its public source and link (a `Hit` for everything that reads one)."""

    line_start: int | None = None
    line_end: int | None = None
    anchor: str | None = None
    page: int | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class _File:
    public: str
    web: bool
    pdf: bool
    extracted: bool  # its indexed text is extracted (HTML, PDF, a web page): no lines of the file
    values: dict[str, str | None]


class Linker:
    """Public sources and links of one service: its corpus root and its URL template."""

    def __init__(self, corpus_root: str | Path | None = None, url_template: str | None = None) -> None:
        self.corpus_root = Path(corpus_root) if corpus_root is not None else None
        # resolved once: public_path would resolve it (a stat a part) for every passage of every answer
        self._root = self.corpus_root.resolve() if self.corpus_root is not None else None
        self.template = UrlTemplate(url_template) if url_template else None
        self._files: dict[tuple[str, str], _File] = {}

    def source(self, source: str, snapshot: Snapshot | None) -> str:
        """`source` as callers see it; one already public (relative, or a URL) is kept."""
        path = Path(source)
        if "://" in source or not path.is_absolute():
            return source
        if self._root is not None and self._root in path.parents:
            return path.relative_to(self._root).as_posix()
        return public_path(source, snapshot.manifest.roots if snapshot else [], self._root)

    def link(self, snapshot: Snapshot, node_id: str, source: str, heading_path: tuple[str, ...],
             start: int, end: int) -> Link:
        """The link of the span [start, end) of node `node_id` (a quote, or the whole node)."""
        node = snapshot.tree.by_id.get(node_id)
        f = self._file(source, snapshot)
        public, web = f.public, f.web
        # chunks of a PDF have the heading path ("Page N",); a Markdown heading "Page 2" is no page
        page = page_of(heading_path) if f.pdf else None
        anchor = (node.anchor if node is not None and node.anchor else
                  slug(heading_path[-1]) if heading_path else "") if page is None else ""
        line_start = line_end = None
        if node is not None and node.line_start and not f.extracted:
            a = min(max(start - node.start, 0), len(node.text))
            b = min(max(end - 1 - node.start, a), len(node.text))
            line_start = node.line_start + node.text.count("\n", 0, a)
            line_end = line_start + node.text.count("\n", a, b)
        if web:  # the page itself; a PDF at its page, as browsers' PDF viewers read `#page=N`
            fragment = f"#page={page}" if page is not None else f"#{quote(anchor, safe='-_.')}" if anchor else ""
            url: str | None = source + fragment
        elif self.template is not None:
            url = self.template.render({
                **f.values, "anchor": quote(anchor, safe="-_."),
                "line_start": _str(line_start), "line_end": _str(line_end), "page": _str(page)})
        else:
            url = None
        return Link(public, line_start, line_end, anchor or None, page, url)

    def _file(self, source: str, snapshot: Snapshot) -> _File:
        """What the links of one file share, worked out once a snapshot (a few sources, many passages)."""
        key = (source, snapshot.version)
        f = self._files.get(key)
        if f is None:
            if len(self._files) > 50_000:
                self._files.clear()
            public = self.source(source, snapshot)
            path = PurePosixPath(public)
            noext = path.with_suffix("").as_posix() if path.suffix else public
            web = "://" in source
            f = self._files[key] = _File(
                public, web, urlsplit(source).path.lower().endswith(".pdf"),
                web or source.lower().endswith(_EXTRACTED),
                {"path": quote(public, safe="/"), "path_noext": quote(noext, safe="/"),
                 "name": quote(path.name, safe="")})
        return f

    def citation(self, c: Citation, snapshot: Snapshot) -> Citation:
        link = self.link(snapshot, c.node_id, c.source, c.heading_path, c.start, c.end)
        return dataclasses.replace(c, source=link.source, line_start=link.line_start, line_end=link.line_end,
                                   anchor=link.anchor, page=link.page, url=link.url)

    def citations(self, cites: list[Citation], snapshot: Snapshot) -> list[Citation]:
        return [self.citation(c, snapshot) for c in cites]

    def hit(self, h: Hit, snapshot: Snapshot) -> LinkedHit:
        if isinstance(h, LinkedHit):
            return h
        link = self.link(snapshot, h.node_id, h.source, h.heading_path, h.start, h.end)
        return LinkedHit(h.node_id, h.level, h.score, h.text, link.source, h.heading_path, h.start, h.end,
                         link.line_start, link.line_end, link.anchor, link.page, link.url)

    def hits(self, hits: list[Hit], snapshot: Snapshot) -> list[Hit]:
        return [self.hit(h, snapshot) for h in hits]


def _str(n: int | None) -> str | None:
    return None if n is None else str(n)
