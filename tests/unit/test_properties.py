"""Property tests (hypothesis) for pure parts not covered elsewhere: the node tree's links under
random adds and removals of sources, and the evaluation metrics (bounds, monotonicity, ranx
against the pure-Python reference on ties, graded labels and missing queries).
Fusion and merge properties: test_fusion_merge.py."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eval.metrics import (
    best_abstain_threshold,
    exact_match,
    hit_at_k,
    ndcg_at_k,
    noanswer_scores,
    normalize_answer,
    ranking_metrics,
    ranking_metrics_reference,
    recall_at_k,
    reciprocal_rank,
    token_f1,
)
from index.store.tree import Node, NodeTree, vector_id

# -- the node tree ---------------------------------------------------------------------------

SOURCES = [f"/notes/{i}.md" for i in range(4)]


@st.composite
def source_nodes(draw: st.DrawFn, source: str) -> list[Node]:
    """A random forest for one source, parents before children: each node hangs under an
    earlier node (one level deeper) or is a root."""
    n = draw(st.integers(1, 12))
    nodes: list[Node] = []
    for k in range(n):
        parent = draw(st.one_of(st.none(), st.integers(0, k - 1))) if k else None
        level = 0 if parent is None else nodes[parent].level + 1
        nid = f"{source}#{k}"
        nodes.append(Node(nid, level, f"text {k}", source, ("H",), k, k + 1,
                          None if parent is None else nodes[parent].id))
    return nodes


def check_links(tree: NodeTree, model: dict[str, list[Node]]) -> None:
    """Every look-up of `tree` agrees with the plain list of nodes it should hold."""
    expected = {n.id: n for nodes in model.values() for n in nodes}
    assert tree.by_id == expected and len(tree) == len(expected)
    by_level: dict[int, set[str]] = {}
    for n in expected.values():
        by_level.setdefault(n.level, set()).add(n.id)
    assert {lvl: set(ids) for lvl, ids in tree.levels.items()} == by_level  # no empty level is left
    assert all(len(ids) == len(set(ids)) for ids in tree.levels.values())
    for nid, n in expected.items():
        assert tree.parent(nid) == n.parent
        kids = [m.id for m in expected.values() if m.parent == nid]
        assert tree.children(nid) == kids  # in the order they were added
        assert tree.is_leaf(nid) == (not kids)
        assert tree.by_vector_id(vector_id(nid)) == nid
        below = list(tree.leaves_under(nid))
        assert all(tree.is_leaf(x) for x in below) and (below == [nid]) == (not kids)
    assert sorted(tree.sources()) == sorted(model)
    for source, nodes in model.items():
        assert tree.has_source(source) and tree.of_source(source) == [n.id for n in nodes]
    assert tree.depth == (max(by_level) + 1 if by_level else 0)
    assert tree.leaves() == (tree.nodes_at(max(by_level)) if by_level else [])
    again = NodeTree.from_records(tree.to_records())
    assert again.by_id == tree.by_id
    assert all(again.children(i) == tree.children(i) for i in tree.by_id)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), steps=st.integers(1, 12))
def test_tree_links_hold_under_random_adds_and_removes(data: st.DataObject, steps: int) -> None:
    tree, model = NodeTree(), {}
    removed: set[str] = set()
    for _ in range(steps):
        source = data.draw(st.sampled_from(SOURCES))
        if source in model:
            gone = tree.remove_source(source)
            assert gone == [n.id for n in model.pop(source)]
            removed.update(gone)
            assert tree.remove_source(source) == []  # twice is a no-op
        else:
            nodes = data.draw(source_nodes(source))
            tree.add(nodes)
            model[source] = nodes
            removed.difference_update(n.id for n in nodes)
            with pytest.raises(ValueError, match="duplicate node id"):
                tree.add(nodes[:1])
        check_links(tree, model)
        for nid in removed:
            assert nid not in tree and tree.by_vector_id(vector_id(nid)) is None


# -- ranking metrics ---------------------------------------------------------------------------

DOCS = [f"d{i}" for i in range(12)]
rankings = st.lists(st.sampled_from(DOCS), max_size=15)  # repeats allowed: the first counts
relevant_sets = st.sets(st.sampled_from(DOCS), max_size=6)
ks = st.integers(1, 20)


@given(rankings, relevant_sets, ks)
def test_per_query_metrics_are_bounded_and_consistent(ranked: list[str], relevant: set[str], k: int) -> None:
    ranked = list(dict.fromkeys(ranked))
    rr, ndcg = reciprocal_rank(ranked, relevant, k), ndcg_at_k(ranked, relevant, k)
    recall, hit = recall_at_k(ranked, relevant, k), hit_at_k(ranked, relevant, k)
    for value in (rr, ndcg, recall, hit):
        assert 0.0 <= value <= 1.0 + 1e-12
    assert hit in (0.0, 1.0) and (hit == 1.0) == (rr > 0) == (ndcg > 0) == (recall > 0)
    if rr:
        assert 1 / rr == pytest.approx(round(1 / rr)) and round(1 / rr) <= k
    top = ranked[:k]
    ideal = min(k, len(relevant))
    # nDCG is 1 exactly when the first min(k, |relevant|) places are all relevant
    assert (ndcg == pytest.approx(1.0)) == (ideal > 0 and len(top) >= ideal and set(top[:ideal]) <= relevant)
    # a larger cut-off never lowers MRR, recall or hit
    assert reciprocal_rank(ranked, relevant, k + 1) >= rr
    assert recall_at_k(ranked, relevant, k + 1) >= recall
    assert hit_at_k(ranked, relevant, k + 1) >= hit


@st.composite
def qrels_and_run(draw: st.DrawFn) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, float]]]:
    """Graded labels (0 counts as not relevant), tied scores, judged queries missing from the
    run and unjudged queries in it."""
    queries = [f"q{i}" for i in range(draw(st.integers(1, 6)))]
    qrels = {q: draw(st.dictionaries(st.sampled_from(DOCS), st.integers(0, 3), max_size=5)) for q in queries}
    if not any(g > 0 for docs in qrels.values() for g in docs.values()):
        qrels[queries[0]][DOCS[0]] = 1
    run: dict[str, dict[str, float]] = {}
    for q in [*queries, "unjudged"]:
        if draw(st.booleans()) or q == queries[0]:
            run[q] = draw(st.dictionaries(st.sampled_from(DOCS), st.sampled_from([0.1, 0.5, 0.5, 0.9, 2.0]),
                                          max_size=10))
    return qrels, run


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(qrels_and_run(), st.sampled_from([1, 3, 10]))
def test_ranx_equals_the_pure_reference(data: tuple[dict, dict], k: int) -> None:
    qrels, run = data
    ours = ranking_metrics(qrels, run, k)
    assert ours == pytest.approx(ranking_metrics_reference(qrels, run, k), abs=1e-9)
    for name, value in ours.items():
        assert 0.0 <= value <= 1.0 + 1e-9, name
    assert ours["hit@1"] <= ours[f"hit@{k}"] and ours[f"mrr@{k}"] <= ours[f"hit@{k}"] + 1e-12


# -- answers and abstention -------------------------------------------------------------------

words = st.lists(st.sampled_from(["the", "a", "Huber", "loss", "L1", "L2", "errors,", "large", "small", "é"]),
                 max_size=8).map(" ".join)


@given(words, words)
def test_token_f1_and_exact_match(pred: str, ref: str) -> None:
    f1 = token_f1(pred, ref)
    assert 0.0 <= f1 <= 1.0 and f1 == pytest.approx(token_f1(ref, pred))
    assert token_f1(pred, pred) == 1.0
    if exact_match(pred, ref):
        assert f1 == 1.0
    if not normalize_answer(pred) or not normalize_answer(ref):
        assert f1 == float(normalize_answer(pred) == normalize_answer(ref))


@given(st.lists(st.tuples(st.sampled_from([0.0, 0.2, 0.2, 0.5, 0.7, 1.0]), st.booleans()), min_size=1, max_size=25))
def test_best_abstain_threshold_is_optimal_and_scores_are_bounded(pairs: list[tuple[float, bool]]) -> None:
    scores, flags = [s for s, _ in pairs], [f for _, f in pairs]

    def f1(t: float) -> float:
        out = noanswer_scores([s >= t for s in scores], flags)
        assert all(0.0 <= v <= 1.0 for v in out.values())
        return out["noanswer_f1"]

    best = best_abstain_threshold(scores, flags)
    assert math.isfinite(best)
    distinct = sorted(set(scores))
    candidates = [distinct[0], *((a + b) / 2 for a, b in itertools.pairwise(distinct)), distinct[-1] + 1]
    assert f1(best) == pytest.approx(max(f1(t) for t in candidates))
