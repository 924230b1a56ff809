"""Chunking: llama-index's HierarchicalNodeParser turned into our stable-id `Node`s.

llama-index gives random ids and offsets relative to each parent; here every
node gets an id derived from its content and an absolute character span in
its source file, so re-ingesting an unchanged file yields the same nodes.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from index.config import DEFAULT_CHUNK_SIZES, check_chunk_sizes
from index.ingestion.documents import Section, SourceFile
from index.store.tree import Node, node_id

if TYPE_CHECKING:
    from llama_index.core.schema import BaseNode

class Chunker:
    """Cuts the sections of one file into a hierarchy of nodes."""

    def __init__(self, chunk_sizes: Sequence[int] = DEFAULT_CHUNK_SIZES, chunk_overlap: int = 20) -> None:
        self.chunk_sizes = check_chunk_sizes(chunk_sizes)
        if not 0 <= chunk_overlap < self.chunk_sizes[-1]:
            raise ValueError(
                f"chunk overlap must be in [0, {self.chunk_sizes[-1]}), got {chunk_overlap}"
            )
        self.chunk_overlap = chunk_overlap
        # imported here: a server that only loads snapshots never pays for llama-index (~60 MB)
        from llama_index.core.node_parser import HierarchicalNodeParser

        self._parser = HierarchicalNodeParser.from_defaults(
            chunk_sizes=list(self.chunk_sizes), chunk_overlap=chunk_overlap, include_metadata=False,
            include_prev_next_rel=False,
        )

    def chunk(self, src: SourceFile, sections: Sequence[Section]) -> list[Node]:
        """Nodes of every level for one file, parents before children."""
        from llama_index.core import Document
        from llama_index.core.schema import NodeRelationship
        docs = [Document(text=s.text, id_=str(i)) for i, s in enumerate(sections)]
        lines = LineIndex(src.text)
        anchors = heading_anchors(sections)
        raw = self._parser.get_nodes_from_documents(docs)
        by_raw = {n.node_id: n for n in raw}
        levels = _levels(raw)
        out: list[Node] = []
        new_id: dict[str, str] = {}
        abs_start: dict[str, int] = {}
        # parents come before children in llama-index's output order (level by level)
        for n in sorted(raw, key=lambda n: levels[n.node_id]):
            sec = sections[int(n.ref_doc_id or 0)]
            text = n.get_content()
            parent_rel = n.relationships.get(NodeRelationship.PARENT)
            if parent_rel is None:
                base_text, base_start, parent = sec.text, sec.start, None
            else:
                praw = by_raw[parent_rel.node_id]  # type: ignore[union-attr]
                base_text, base_start = praw.get_content(), abs_start[praw.node_id]
                parent = new_id[praw.node_id]
            hint = getattr(n, "start_char_idx", None) or 0
            off = base_text.find(text, max(0, hint - 64))
            if off < 0:
                off = base_text.find(text)
            if off < 0:  # the splitter changed the text: keep the hint, the text is what was indexed
                off = hint
            start = base_start + off
            abs_start[n.node_id] = start
            nid = node_id(src.path, levels[n.node_id], start, text)
            new_id[n.node_id] = nid
            out.append(Node(nid, levels[n.node_id], text, src.path, sec.heading_path, start,
                            start + len(text), parent, lines.line_of(start),
                            lines.line_of(max(start, start + len(text) - 1)),
                            anchors[int(n.ref_doc_id or 0)]))
        return _dedupe(out)


class LineIndex:
    """1-based line numbers of character offsets in one text (a binary search a look-up)."""

    def __init__(self, text: str) -> None:
        self._breaks = [m.start() for m in re.finditer("\n", text)]

    def line_of(self, offset: int) -> int:
        return bisect.bisect_left(self._breaks, offset) + 1


_SLUG_DROP = re.compile(r"[^\w\- ]", re.UNICODE)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens
    (MkDocs' default gives the same for headings of words, digits and single spaces)."""
    return _SLUG_DROP.sub("", heading.strip().lower()).replace(" ", "-")


def heading_anchors(sections: Sequence[Section]) -> list[str]:
    """Each section's anchor, in document order: a heading met again gets "-1", "-2", ... as on
    GitHub. Consecutive sections under one heading (a long section cut up) share its anchor.
    Only headings with text of their own make sections, so a duplicate of a heading that has
    none is not counted (GitHub would count it)."""
    seen: dict[str, int] = {}
    out: list[str] = []
    previous: tuple[str, ...] | None = None
    for sec in sections:
        if not sec.heading_path:
            out.append("")
        elif sec.heading_path == previous:
            out.append(out[-1])
        else:
            base = slug(sec.heading_path[-1])
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.append(base if n == 0 else f"{base}-{n}")
        previous = sec.heading_path
    return out


def _levels(raw: Sequence[BaseNode]) -> dict[str, int]:
    from llama_index.core.schema import NodeRelationship

    by_id = {n.node_id: n for n in raw}
    memo: dict[str, int] = {}

    def level(nid: str) -> int:
        if nid not in memo:
            rel = by_id[nid].relationships.get(NodeRelationship.PARENT)
            memo[nid] = 0 if rel is None else level(rel.node_id) + 1  # type: ignore[union-attr]
        return memo[nid]

    return {nid: level(nid) for nid in by_id}


def _dedupe(nodes: list[Node]) -> list[Node]:
    """Identical chunks at the same place (a repeated section) would share an id: keep one."""
    seen: set[str] = set()
    kept: list[Node] = []
    for n in nodes:
        if n.id in seen or (n.parent is not None and n.parent not in seen):
            continue
        seen.add(n.id)
        kept.append(n)
    return kept
