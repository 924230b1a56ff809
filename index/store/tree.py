"""The node tree: every chunk of every level, with O(1) look-ups by id, level, parent and children.

llama-index returns a flat list of nodes and finds a level by walking it
(`get_deeper_nodes`); here the level dictionary is kept up to date as nodes are
added and removed, so `nodes_at`, `parent`, `children` and `leaves` are
dictionary look-ups whatever the size of the tree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Node:
    """One chunk. `start`/`end` are character offsets into the source file's text;
    `line_start`/`line_end` the 1-based lines they fall on (0: not recorded, a snapshot of an
    older build), `anchor` the slug of its section's heading, as GitHub gives it ("" for text
    before the first heading)."""

    id: str
    level: int
    text: str
    source: str
    heading_path: tuple[str, ...]
    start: int
    end: int
    parent: str | None
    line_start: int = 0
    line_end: int = 0
    anchor: str = ""


def node_id(source: str, level: int, start: int, text: str) -> str:
    """A stable id: the same chunk of the same file gets the same id on every ingest."""
    h = hashlib.blake2b(digest_size=12)
    for part in (source, str(level), str(start), text):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def vector_id(nid: str) -> int:
    """The int64 id a leaf has in the FAISS id map: 63 bits of a hash of its node id."""
    digest = hashlib.blake2b(nid.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


class NodeTree:
    """Nodes of all levels, level 0 being the largest chunks."""

    def __init__(self) -> None:
        self.by_id: dict[str, Node] = {}
        self.levels: dict[int, list[str]] = {}
        self._children: dict[str, list[str]] = {}
        self._by_source: dict[str, list[str]] = {}
        self._by_vector: dict[int, str] = {}

    # -- building ---------------------------------------------------------------
    def add(self, nodes: Iterable[Node]) -> None:
        """Add nodes, parents before their children."""
        for n in nodes:
            if n.id in self.by_id:
                raise ValueError(f"duplicate node id {n.id}")
            if n.parent is not None and n.parent not in self.by_id:
                raise ValueError(f"node {n.id} names unknown parent {n.parent}")
            self.by_id[n.id] = n
            self.levels.setdefault(n.level, []).append(n.id)
            self._children[n.id] = []
            if n.parent is not None:
                self._children[n.parent].append(n.id)
            self._by_source.setdefault(n.source, []).append(n.id)
            self._by_vector[vector_id(n.id)] = n.id

    def remove_source(self, source: str) -> list[str]:
        """Remove every node of one source file; returns the removed ids."""
        ids = self._by_source.pop(source, [])
        if not ids:
            return []
        gone = set(ids)
        for nid in ids:
            n = self.by_id.pop(nid)
            self._children.pop(nid, None)
            self._by_vector.pop(vector_id(nid), None)
            if n.parent is not None and n.parent not in gone:
                self._children[n.parent].remove(nid)
        for level, members in list(self.levels.items()):
            kept = [i for i in members if i not in gone]
            if kept:
                self.levels[level] = kept
            else:
                del self.levels[level]
        return ids

    # -- look-ups (all dictionary look-ups) --------------------------------------
    def __len__(self) -> int:
        return len(self.by_id)

    def __contains__(self, nid: object) -> bool:
        return nid in self.by_id

    def __getitem__(self, nid: str) -> Node:
        return self.by_id[nid]

    def nodes_at(self, level: int) -> list[str]:
        """Ids of the nodes at `level` (0 = largest chunks), in ingestion order. Do not mutate."""
        return self.levels.get(level, [])

    def parent(self, nid: str) -> str | None:
        return self.by_id[nid].parent

    def children(self, nid: str) -> list[str]:
        return self._children[nid]

    @property
    def depth(self) -> int:
        """Number of levels."""
        return max(self.levels) + 1 if self.levels else 0

    def leaves(self) -> list[str]:
        """Ids of the deepest level: the nodes that are embedded and indexed."""
        return self.levels.get(self.depth - 1, []) if self.levels else []

    def is_leaf(self, nid: str) -> bool:
        return not self._children[nid]

    def sources(self) -> list[str]:
        return list(self._by_source)

    def has_source(self, source: str) -> bool:
        return source in self._by_source

    def of_source(self, source: str) -> list[str]:
        return self._by_source.get(source, [])

    def by_vector_id(self, vid: int) -> str | None:
        return self._by_vector.get(vid)

    def leaves_under(self, nid: str) -> Iterator[str]:
        """The leaves below `nid` (itself when it is a leaf), left to right."""
        stack = [nid]
        while stack:
            cur = stack.pop()
            kids = self._children[cur]
            if not kids:
                yield cur
            else:
                stack.extend(reversed(kids))

    # -- serialisation ----------------------------------------------------------
    def to_records(self) -> list[list[object]]:
        """Plain rows, parents before children, for the snapshot."""
        rows: list[list[object]] = []
        for level in sorted(self.levels):
            for nid in self.levels[level]:
                n = self.by_id[nid]
                rows.append([n.id, n.level, n.parent, n.source, list(n.heading_path), n.start, n.end, n.text,
                             n.line_start, n.line_end, n.anchor])
        return rows

    @classmethod
    def from_records(cls, rows: Iterable[list[object]]) -> NodeTree:
        tree = cls()
        tree.add(
            Node(
                id=str(r[0]), level=int(r[1]), parent=None if r[2] is None else str(r[2]),  # type: ignore[call-overload]
                source=str(r[3]), heading_path=tuple(r[4]), start=int(r[5]), end=int(r[6]),  # type: ignore[arg-type, call-overload]
                text=str(r[7]),
                # rows of older snapshots end at the text
                **({"line_start": int(r[8]), "line_end": int(r[9]), "anchor": str(r[10])}  # type: ignore[call-overload]
                   if len(r) > 10 else {}),
            )
            for r in rows
        )
        return tree
