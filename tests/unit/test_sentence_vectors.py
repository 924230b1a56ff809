"""Sentence vectors pooled from their leaf's one pass, against a pass of their own."""

from __future__ import annotations

import numpy as np

from index.ingestion.pipeline import embed_leaves
from index.models.embedder import pool_spans

ROWS = [  # (vector id, start in the source, what is embedded, where the leaf's own text starts)
    (1, 0, "Loss > Huber\nHuber loss is quadratic for small errors. It is linear for large ones.", 13),
    (2, 500, "Norm\nBatch norm normalizes over the batch. Layer norm normalizes over the features.", 5),
]


def test_pool_spans_by_hand() -> None:
    tokens = np.array([[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    mask = np.array([True, True, True, True, False])
    offsets = np.array([[0, 0], [0, 3], [4, 7], [8, 12], [0, 0]])  # [CLS], 3 words, padding
    got = pool_spans(tokens, mask, offsets, [(0, 7), (8, 12), (2, 5), (20, 30)])
    np.testing.assert_allclose(got[0], np.array([0.5, 0.5]) / np.linalg.norm([0.5, 0.5]))  # not [CLS]
    np.testing.assert_allclose(got[1], [0.6, 0.8])
    np.testing.assert_allclose(got[2], got[0])  # a span touching two tokens takes both
    assert np.isnan(got[3]).all()  # no token there (cut off): the caller encodes it apart


def test_pooled_and_separate_sentences(embedder) -> None:
    ids_p, leaves_p, pooled = embed_leaves(embedder, ROWS, 32, "pooled")
    ids_s, leaves_s, separate = embed_leaves(embedder, ROWS, 32, "separate")
    assert ids_p.tolist() == ids_s.tolist() == [1, 2]
    # the leaves' vectors are the model's own pooling either way
    np.testing.assert_allclose(leaves_p, embedder.encode([r[2] for r in ROWS]), atol=1e-5)
    np.testing.assert_allclose(leaves_p, leaves_s, atol=1e-5)
    # the same sentence rows; each pooled vector close to the sentence encoded alone
    assert pooled.leaf.tolist() == separate.leaf.tolist() == [1, 1, 2, 2]
    assert pooled.start.tolist() == separate.start.tolist()
    assert pooled.end.tolist() == separate.end.tolist()
    cos = (pooled.vectors.astype(np.float32) * separate.vectors.astype(np.float32)).sum(axis=1)
    assert (cos > 0.5).all(), cos  # "It is linear ..." pooled in context is the least alike (0.58)
    # and still tells a question's sentence from its leaf's other one
    q = embedder.encode(["Over which dimension does layer norm normalize?"])[0]
    scores = pooled.vectors.astype(np.float32) @ q
    assert scores[3] > scores[2]
