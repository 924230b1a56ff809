from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from index.search.fusion import rrf, zscore
from index.search.merge import auto_merge

# A hand-made tree:  P1 -> a, b, c ;  P2 -> d, e ;  R -> P1, P2
PARENT = {"a": "P1", "b": "P1", "c": "P1", "d": "P2", "e": "P2", "P1": "R", "P2": "R", "R": None}
CHILDREN = {"P1": ["a", "b", "c"], "P2": ["d", "e"], "R": ["P1", "P2"]}


def merge(ranked, threshold):
    return auto_merge(ranked, PARENT.get, lambda p: CHILDREN[p], threshold)


def test_rrf_by_hand():
    fused = rrf([["a", "b", "c"], ["b", "d"]], k=60)
    scores = dict(fused)
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["a"] == pytest.approx(1 / 61)
    assert scores["d"] == pytest.approx(1 / 62)
    assert [k for k, _ in fused] == ["b", "a", "d", "c"]


def test_rrf_weights_and_errors():
    fused = dict(rrf([["a"], ["b"]], k=0, weights=[2.0, 1.0]))
    assert fused == {"a": 2.0, "b": 1.0}
    with pytest.raises(ValueError, match="2 weights for 1 rankings"):
        rrf([["a"]], weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="rrf k must be >= 0"):
        rrf([["a"]], k=-1)


def test_zscore_by_hand():
    # dense 0.9, 0.7, 0.5: mean 0.7, sd sqrt(0.08/3); z = +1.2247, 0, -1.2247
    # bm25 9, 3: mean 6, sd 3; z = +1, -1
    fused = zscore([[("a", 0.9), ("b", 0.7), ("c", 0.5)], [("c", 9.0), ("d", 3.0)]], weights=[1.5, 1.0])
    z = 0.2 / (0.08 / 3) ** 0.5
    scores = dict(fused)
    assert scores["a"] == pytest.approx(1.5 * z - 1.0)  # missing from bm25: its lowest z, -1
    assert scores["b"] == pytest.approx(0.0 - 1.0)
    assert scores["c"] == pytest.approx(-1.5 * z + 1.0)
    assert scores["d"] == pytest.approx(-1.5 * z - 1.0)  # missing from dense: its lowest z
    assert [k for k, _ in fused] == ["a", "c", "b", "d"]


def test_zscore_statistics_come_from_the_top_of_each_list():
    head = [("a", 3.0), ("b", 1.0)]
    shallow = dict(zscore([head], depth=2))
    deep = dict(zscore([[*head, ("c", -50.0)]], depth=2))
    assert deep["a"] == shallow["a"] == pytest.approx(1.0)
    assert deep["b"] == shallow["b"] == pytest.approx(-1.0)
    assert deep["c"] == pytest.approx(-52.0)  # (-50 - 2) / 1
    assert dict(zscore([[("a", 2.0), ("b", 2.0)]])) == {"a": 0.0, "b": 0.0}  # no spread: sd 1
    assert zscore([[], [("a", 1.0)]]) == [("a", 0.0)]
    with pytest.raises(ValueError, match="2 weights and 1 absent scores for 1 lists"):
        zscore([[("a", 1.0)]], weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="depth must be >= 1"):
        zscore([[("a", 1.0)]], depth=0)


def test_zscore_a_list_cut_short_is_filled_with_its_absent_score():
    # BM25 lists only "a" (the one leaf holding the word); 3 more leaves score 0. Statistics over
    # 4, 0, 0, 0 (depth 4): mean 1, sd sqrt(3); "a" at 3 / sqrt(3), every other leaf at -1 / sqrt(3)
    dense = [("b", 0.8), ("a", 0.6), ("c", 0.4)]  # mean 0.6, sd sqrt(0.08 / 3)
    fused = dict(zscore([dense, [("a", 4.0)]], absent=[None, (0.0, 3)], depth=4))
    zd = 0.2 / (0.08 / 3) ** 0.5
    assert fused["a"] == pytest.approx(0.0 + 3 / 3 ** 0.5)
    assert fused["b"] == pytest.approx(zd - 1 / 3 ** 0.5)
    assert fused["c"] == pytest.approx(-zd - 1 / 3 ** 0.5)
    assert max(fused, key=fused.__getitem__) == "a"
    # without it, a list of one has no spread: "a" gets z 0 from BM25 and "b" stays ahead
    alone = dict(zscore([dense, [("a", 4.0)]]))
    assert alone["b"] > alone["a"]
    # fewer keys outside than places left: only those fill the statistics (4, 0: mean 2, sd 2)
    assert dict(zscore([[("a", 4.0)]], absent=[(0.0, 1)], depth=4)) == {"a": 1.0}


def test_merge_replaces_children_at_the_best_childs_place():
    ranked = [("x", 0.9), ("a", 0.8), ("d", 0.5), ("b", 0.4)]
    out = merge(ranked, threshold=0.6)  # 2 of 3 children of P1 -> merged; 1 of 2 of P2 -> not
    assert out == [("x", 0.9), ("P1", 0.8), ("d", 0.5)]


def test_merge_repeats_up_the_tree():
    ranked = [("a", 0.9), ("b", 0.8), ("d", 0.7), ("e", 0.6)]
    out = merge(ranked, threshold=0.6)  # P1 and P2 merge, then both children of R are there
    assert out == [("R", 0.9)]


def test_merge_keeps_children_below_threshold():
    ranked = [("a", 0.9), ("d", 0.7)]
    assert merge(ranked, threshold=0.6) == ranked


def test_merge_threshold_checked():
    with pytest.raises(ValueError, match=r"merge threshold must be in \(0, 1\], got 1.5"):
        merge([("a", 1.0)], threshold=1.5)


def test_merge_order_survives_when_scores_are_similarities():
    """The llama-index bug: a parent must not jump ahead of better-scored hits."""
    ranked = [("x", 0.95), ("y", 0.94), ("a", 0.2), ("b", 0.1), ("c", 0.05)]
    out = merge(ranked, threshold=0.6)
    assert out == [("x", 0.95), ("y", 0.94), ("P1", 0.2)]


LEAVES = ["a", "b", "c", "d", "e"]


@given(st.lists(st.sampled_from([*LEAVES, "x", "y"]), unique=True, min_size=1),
       st.floats(min_value=0.05, max_value=1.0))
def test_merge_properties(order, threshold):
    ranked = [(k, 1.0 - i / 10) for i, k in enumerate(order)]
    out = merge(ranked, threshold)
    ids = [k for k, _ in out]
    assert len(ids) == len(set(ids))
    scores = [s for _, s in out]
    assert scores == sorted(scores, reverse=True)
    # every retrieved node is represented by itself or by one of its ancestors, exactly once
    def ancestors(n):
        while n is not None:
            yield n
            n = PARENT.get(n)
    for k in order:
        assert sum(1 for a in ancestors(k) if a in ids) == 1
    # the best retrieved node keeps the top score
    assert scores[0] == ranked[0][1]


@given(st.lists(st.lists(st.integers(0, 20), unique=True, max_size=10), min_size=1, max_size=4))
def test_rrf_properties(rankings):
    fused = rrf(rankings)
    keys = [k for k, _ in fused]
    assert set(keys) == {x for r in rankings for x in r}
    assert [s for _, s in fused] == sorted((s for _, s in fused), reverse=True)
    if rankings[0] and all(r == rankings[0] for r in rankings):
        assert keys == rankings[0]  # identical rankings fuse to the same ranking


def test_mix_rerank_by_hand():
    import math

    import numpy as np

    from index.search.retriever import mix_rerank

    head = [("a", 0.4), ("b", 0.3), ("c", 0.2)]
    logits = np.array([-2.0, 0.0, 2.0], dtype=np.float32)
    sig = [1 / (1 + math.exp(2.0)), 0.5, 1 / (1 + math.exp(-2.0))]  # 0.119, 0.5, 0.881
    # weight 1: the cross-encoder's order; every score lifted above the rest's best (0.1)
    alone = mix_rerank(head, logits, 1.0, base=0.1)
    assert [n for n, _ in alone] == ["c", "b", "a"]
    assert alone[0][1] == pytest.approx(0.1 + 1 + sig[2])
    # weight 0.5: 0.5 * sigmoid + 0.5 * score / 0.4 -> a 0.560, b 0.625, c 0.690
    half = dict(mix_rerank(head, logits, 0.5))
    assert half["a"] == pytest.approx(1 + 0.5 * sig[0] + 0.5 * 1.0)
    assert half["b"] == pytest.approx(1 + 0.5 * 0.5 + 0.5 * 0.75)
    assert half["c"] == pytest.approx(1 + 0.5 * sig[2] + 0.5 * 0.5)
    # weight 0.2: the fused order wins (a 0.824, b 0.700, c 0.576)
    assert [n for n, _ in mix_rerank(head, logits, 0.2)] == ["a", "b", "c"]
    # weight 0 keeps the fused order exactly
    assert [n for n, _ in mix_rerank(head, logits, 0.0)] == ["a", "b", "c"]
