"""Auto-merge: a parent replaces its retrieved children when enough of them are retrieved.

The parent takes the best score among its retrieved children, so it sits where
its best child sat and the ranking order survives the merge (llama-index's
AutoMergingRetriever re-sorts FAISS L2 distances as if they were similarities,
which turns the ranking upside down). Merging repeats up the tree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def auto_merge(
    ranked: Sequence[tuple[str, float]],
    parent_of: Callable[[str], str | None],
    children_of: Callable[[str], Sequence[str]],
    threshold: float = 0.5,
) -> list[tuple[str, float]]:
    """Merge `ranked` (best first) up the tree; returns (node id, score), best first."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"merge threshold must be in (0, 1], got {threshold}")
    scores: dict[str, float] = {}
    first_seen: dict[str, int] = {}
    for i, (nid, s) in enumerate(ranked):
        if nid not in scores or s > scores[nid]:
            scores[nid] = s
        first_seen.setdefault(nid, i)
    changed = True
    while changed:
        changed = False
        groups: dict[str, list[str]] = {}
        merged_away: set[str] = set()
        for nid in scores:
            p = parent_of(nid)
            if p is not None:
                groups.setdefault(p, []).append(nid)
        for parent, kids in groups.items():
            if parent in merged_away or any(k not in scores for k in kids):
                continue  # this round already merged part of the group higher up
            if len(kids) / len(children_of(parent)) < threshold:
                continue
            # the parent stands for everything retrieved below it, not only its direct children
            covered = [n for n in scores if n != parent and _below(n, parent, parent_of)]
            best = max(covered, key=lambda c: (scores[c], -first_seen[c]))
            score = max(scores[best], scores.get(parent, float("-inf")))
            pos = min(first_seen[c] for c in covered)
            for c in covered:
                del scores[c]
                merged_away.add(c)
            scores[parent] = score
            first_seen[parent] = min(pos, first_seen.get(parent, pos))
            changed = True
    return sorted(scores.items(), key=lambda kv: (-kv[1], first_seen[kv[0]]))


def _below(node: str, ancestor: str, parent_of: Callable[[str], str | None]) -> bool:
    p = parent_of(node)
    while p is not None:
        if p == ancestor:
            return True
        p = parent_of(p)
    return False
