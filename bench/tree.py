"""Level dictionary benchmark: NodeTree.nodes_at / parent against llama-index's get_deeper_nodes.

The same three-level tree (1 root : 4 children : 4 grandchildren) at growing
sizes; each look-up timed many times, median and p99 reported.
Run: `python -m bench.tree`.
"""

from __future__ import annotations

import statistics
import time

from index.store.tree import Node, NodeTree


def _tree(n_total: int) -> NodeTree:
    roots = max(1, n_total // 21)
    tree = NodeTree()
    tree.add(Node(f"r{i}", 0, "", "s", (), 0, 0, None) for i in range(roots))
    tree.add(Node(f"m{i}", 1, "", "s", (), 0, 0, f"r{i // 4}") for i in range(roots * 4))
    tree.add(Node(f"l{i}", 2, "", "s", (), 0, 0, f"m{i // 4}") for i in range(roots * 16))
    return tree


def _llama_nodes(tree: NodeTree) -> list:  # type: ignore[type-arg]
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode

    out = {}
    for level in sorted(tree.levels):
        for nid in tree.nodes_at(level):
            n = TextNode(id_=nid, text="")
            p = tree.parent(nid)
            if p is not None:
                n.relationships[NodeRelationship.PARENT] = RelatedNodeInfo(node_id=p)
            kids = tree.children(nid)
            if kids:
                n.relationships[NodeRelationship.CHILD] = [RelatedNodeInfo(node_id=k) for k in kids]
            out[nid] = n
    return list(out.values())


def _time(fn, repeat: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(repeat):
        t = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t) / 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def main(sizes: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000), llama_max: int = 10_000) -> list[str]:
    from llama_index.core.node_parser import get_deeper_nodes

    lines = ["| nodes | NodeTree.nodes_at(2) median / p99 µs | NodeTree.parent median / p99 µs "
             "| llama-index get_deeper_nodes(depth=2) median / p99 µs | ratio |", "|---|---|---|---|---|"]
    for n in sizes:
        tree = _tree(n)
        leaf = tree.nodes_at(2)[len(tree.nodes_at(2)) // 2]
        at = _time(lambda t=tree: t.nodes_at(2), 2000)
        par = _time(lambda t=tree, x=leaf: t.parent(x), 2000)
        if n <= llama_max:
            nodes = _llama_nodes(tree)
            ll = _time(lambda ns=nodes: get_deeper_nodes(ns, depth=2), 5 if n >= 10_000 else 20)
            llama = f"{ll[0]:.0f} / {ll[1]:.0f}"
            ratio = f"{ll[0] / at[0]:.0f}x"
        else:
            # get_deeper_nodes grows quadratically: about 2 minutes a call at 100k nodes here
            llama, ratio = "not run (quadratic)", "-"
        lines.append(f"| {len(tree):,} | {at[0]:.2f} / {at[1]:.2f} | {par[0]:.2f} / {par[1]:.2f} | {llama} | {ratio} |")
    return lines


if __name__ == "__main__":
    print("\n".join(main()))
