"""Citation links benchmark: what turning an answer's passages into public sources and links costs.

The nodes are data/notes cut by the real chunker (no embedding needed); a "response" is 5
passages and 2 citations, as `/v1/ask` returns by default. Timed side by side in one run: the
`Linker` (relative path, lines, anchor, URL template) and, for scale, the JSON serialisation of
the same passages and citations through the response schemas.
Run: `python -m bench.links [--n 3000]`.
"""

from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path

from bench import call_times
from index.answer.extractive import Citation
from index.config import MAX_FILE_BYTES
from index.ingestion.chunking import Chunker
from index.ingestion.documents import read_source, sections
from index.search.retriever import Hit
from index.store.snapshot import Manifest, Snapshot
from index.store.tree import NodeTree
from service.links import Linker
from service.schemas import CitationOut, ContextOut

NOTES = Path(__file__).resolve().parents[1] / "data" / "notes"
TEMPLATE = "https://docs.example/{path_noext}/#{anchor}"


def _snapshot() -> Snapshot:
    tree, chunker = NodeTree(), Chunker()
    for path in sorted(NOTES.glob("*.md")):
        src = read_source(path.resolve(), MAX_FILE_BYTES)
        tree.add(chunker.chunk(src, sections(src)))
    manifest = Manifest("bench", 384, [2048, 512, 128], 20, roots=[str(NOTES.resolve())])
    return Snapshot(Path("snap-bench"), manifest, tree, None, None, None)  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=3000, help="responses timed")
    a = ap.parse_args()
    snap = _snapshot()
    nodes = list(snap.tree.by_id.values())
    rng = random.Random(0)
    responses = []
    for _ in range(a.n):
        picked = rng.sample(nodes, 7)
        hits = [Hit(n.id, n.level, 0.5, n.text, n.source, n.heading_path, n.start, n.end) for n in picked[:5]]
        cites = [Citation(i, n.id, n.source, n.heading_path, n.start, min(n.end, n.start + 80),
                          n.text[:80], 0.9) for i, n in enumerate(picked[5:], 1)]
        responses.append((hits, cites))
    linker = Linker(NOTES, TEMPLATE)

    def link(i: int) -> object:
        hits, cites = responses[i]
        return linker.hits(hits, snap), linker.citations(cites, snap)

    def dump(i: int) -> object:
        hits, cites = responses[i]
        return ([ContextOut.of(r, h).model_dump_json() for r, h in enumerate(hits, 1)],
                [CitationOut.of(c).model_dump_json() for c in cites])

    rows = []
    for name, fn in (("Linker: 5 passages + 2 citations", link), ("schemas to JSON, the same", dump)):
        fn(0)
        ts = sorted(call_times(fn, a.n, unit_s=1e-6))
        rows.append((name, statistics.median(ts), ts[int(len(ts) * 0.99)]))
    print(f"{len(nodes)} nodes of {len(list(NOTES.glob('*.md')))} notes, {a.n} responses\n")
    print("| step | median µs | p99 µs |\n|---|---|---|")
    for name, med, p99 in rows:
        print(f"| {name} | {med:.1f} | {p99:.1f} |")
    print(f"\nLinker / serialisation (medians): {rows[0][1] / rows[1][1]:.2f}")


if __name__ == "__main__":
    main()
