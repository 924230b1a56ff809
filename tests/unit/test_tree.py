from __future__ import annotations

import pytest

from index.ingestion.chunking import Chunker, check_chunk_sizes
from index.ingestion.documents import SourceFile, markdown_sections
from index.store.tree import Node, NodeTree, vector_id

THREE_SECTIONS = """# Loss

L2 loss is the mean squared error. L1 loss is the mean absolute error.
Huber loss uses L2 for small errors and L1 for large ones.

# Optimizer

Adam keeps running averages of the gradient and of its square.

# Trees

""" + " ".join(f"Sentence {i} about gradient boosted decision trees and their leaves." for i in range(60))


def build(text: str = THREE_SECTIONS, source: str = "/notes/a.md") -> tuple[NodeTree, SourceFile]:
    src = SourceFile(source, text, "h", len(text), "markdown")
    tree = NodeTree()
    tree.add(Chunker((256, 64, 32), chunk_overlap=4).chunk(src, markdown_sections(text)))
    return tree, src


def test_levels_parents_children_are_consistent():
    tree, src = build()
    assert tree.depth == 3
    assert set(tree.levels) == {0, 1, 2}
    assert tree.leaves() == tree.nodes_at(2)
    for level in range(3):
        for nid in tree.nodes_at(level):
            n = tree[nid]
            assert n.level == level
            assert src.text[n.start:n.end] == n.text  # spans point into the source
            if level == 0:
                assert tree.parent(nid) is None
            else:
                parent = tree.parent(nid)
                assert parent is not None and nid in tree.children(parent)
                assert tree[parent].level == level - 1
                p = tree[parent]
                assert p.start <= n.start and n.end <= p.end
    # the long "Trees" section splits into several leaves under one top node
    trees_top = [i for i in tree.nodes_at(0) if tree[i].heading_path == ("Trees",)]
    assert len(trees_top) >= 1
    assert len(list(tree.leaves_under(trees_top[0]))) > 1
    assert all(tree.is_leaf(i) for i in tree.leaves())


def test_heading_paths_become_node_metadata():
    tree, _ = build()
    paths = {tree[i].heading_path for i in tree.leaves()}
    assert paths == {("Loss",), ("Optimizer",), ("Trees",)}


def test_ids_are_stable_across_runs_and_differ_by_source():
    t1, _ = build()
    t2, _ = build()
    t3, _ = build(source="/notes/b.md")
    assert list(t1.by_id) == list(t2.by_id)
    assert not set(t1.by_id) & set(t3.by_id)


def test_remove_source_drops_every_link():
    tree, _ = build()
    other, _ = build(source="/notes/b.md")
    tree.add(other[i] for lvl in sorted(other.levels) for i in other.nodes_at(lvl))
    before = len(tree)
    removed = tree.remove_source("/notes/a.md")
    assert len(tree) == before - len(removed)
    assert tree.sources() == ["/notes/b.md"]
    for nid in removed:
        assert nid not in tree
        assert tree.by_vector_id(vector_id(nid)) is None
    for level in tree.levels:
        assert all(tree[i].source == "/notes/b.md" for i in tree.nodes_at(level))


def test_records_round_trip():
    tree, _ = build()
    again = NodeTree.from_records(tree.to_records())
    assert again.by_id == tree.by_id
    assert again.levels == tree.levels
    for nid in tree.by_id:
        assert again.children(nid) == tree.children(nid)


def test_add_rejects_duplicates_and_orphans():
    tree = NodeTree()
    n = Node("a", 0, "t", "/s", (), 0, 1, None)
    tree.add([n])
    with pytest.raises(ValueError, match="duplicate node id a"):
        tree.add([n])
    with pytest.raises(ValueError, match="unknown parent zz"):
        tree.add([Node("b", 1, "t", "/s", (), 0, 1, "zz")])


def test_lookups_do_not_scan():
    """nodes_at / parent / children are dict look-ups: they work on a tree of 50k nodes at once."""
    tree = NodeTree()
    tree.add(Node(f"r{i}", 0, "x", "/s", (), i, i + 1, None) for i in range(10_000))
    tree.add(Node(f"c{i}", 1, "x", "/s", (), i, i + 1, f"r{i // 4}") for i in range(40_000))
    assert len(tree.nodes_at(1)) == 40_000
    assert tree.parent("c39999") == "r9999"
    assert tree.children("r0") == ["c0", "c1", "c2", "c3"]
    assert tree.nodes_at(7) == []


@pytest.mark.parametrize("sizes, message", [
    ([], "must not be empty"),
    ([512, 2048], "strictly decreasing"),
    ([512, 8], "at least 16 tokens"),
])
def test_chunk_sizes_are_checked(sizes, message):
    with pytest.raises(ValueError, match=message):
        check_chunk_sizes(sizes)


def test_overlap_is_checked():
    with pytest.raises(ValueError, match=r"chunk overlap must be in \[0, 64\), got 64"):
        Chunker((256, 64), chunk_overlap=64)


def test_nodes_carry_their_lines_and_heading_anchor() -> None:
    from index.ingestion.chunking import heading_anchors, slug
    from index.ingestion.documents import SourceFile, sections

    text = ("intro line\n\n# Deep Learning\n\n## Loss (L1/L2)\n\nHuber loss mixes L1 and L2.\nSecond line.\n\n"
            "# Other\n\n## Loss (L1/L2)\n\nAgain.\n")
    src = SourceFile("/notes/a.md", text, "0" * 64, len(text), "markdown")
    secs = sections(src)
    assert slug("Loss (L1/L2)") == "loss-l1l2" and slug("Batch Norm (BN)") == "batch-norm-bn"
    # headings with no text of their own make no section; a heading met again gets "-1"
    assert [sec.heading_path[-1:] for sec in secs] == [(), ("Loss (L1/L2)",), ("Loss (L1/L2)",)]
    assert heading_anchors(secs) == ["", "loss-l1l2", "loss-l1l2-1"]
    nodes = Chunker((64, 16), chunk_overlap=0).chunk(src, secs)
    huber = next(n for n in nodes if n.text.startswith("Huber") and n.level == 1)
    lines = text.splitlines()
    assert lines[huber.line_start - 1].startswith("Huber") and huber.line_start == 7
    assert "Second line." in lines[huber.line_end - 1]
    assert huber.anchor == "loss-l1l2"
    again = next(n for n in nodes if n.text.strip() == "Again.")
    assert again.anchor == "loss-l1l2-1" and lines[again.line_start - 1] == "Again."
    # the tree's records keep them, and rows of older snapshots (no such columns) still load
    tree = NodeTree()
    tree.add(nodes)
    back = NodeTree.from_records(tree.to_records())
    assert back[huber.id] == huber
    old = NodeTree.from_records([row[:8] for row in tree.to_records()])
    assert old[huber.id].line_start == 0 and old[huber.id].anchor == ""


def test_public_paths_are_never_absolute() -> None:
    from index.store.snapshot import public_path

    roots = ["/srv/notes", "/srv/notes/team", "/home/u/extra", "/home/u/one.md"]
    assert public_path("/srv/notes/team/a.md", roots, "/srv/notes") == "team/a.md"  # the corpus root first
    assert public_path("/srv/notes/team/a.md", roots) == "a.md"  # else the deepest root
    assert public_path("/home/u/extra/x/y.md", roots, "/srv/notes") == "x/y.md"
    assert public_path("/home/u/one.md", roots, "/srv/notes") == "one.md"
    assert public_path("/elsewhere/z.md", roots, "/srv/notes") == "z.md"
    assert public_path("https://docs.example/a/b", roots) == "https://docs.example/a/b"
