"""Token vectors pooled into span vectors: what lets ingestion embed a leaf once and still give
each of its sentences a vector (`encode_spans` of the embedders)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def pool_spans(tokens: np.ndarray, mask: np.ndarray, offsets: np.ndarray,
               spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """L2-normalised mean of the token vectors (rows of `tokens`) whose character offsets
    overlap each span; special and padding tokens (empty offsets, mask 0) never count."""
    real = mask & (offsets[:, 1] > offsets[:, 0])
    out = np.full((len(spans), tokens.shape[1]), np.nan, dtype=np.float32)
    for j, (a, b) in enumerate(spans):
        inside = real & (offsets[:, 0] < b) & (offsets[:, 1] > a)
        if inside.any():
            v = tokens[inside].mean(axis=0)
            out[j] = v / max(float(np.linalg.norm(v)), 1e-12)
    return out


def pool_encoding_spans(hidden: np.ndarray, encoding: Any, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """`pool_spans` for one text run alone: `hidden` its [tokens, dim] states, `encoding` its
    `tokenizers` Encoding (offsets and special-token mask, no padding)."""
    real = np.asarray(encoding.special_tokens_mask, dtype=np.int64) == 0
    return pool_spans(hidden, real, np.asarray(encoding.offsets, dtype=np.int64), spans)
