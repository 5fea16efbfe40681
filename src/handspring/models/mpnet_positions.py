"""MPNet's relative position buckets, ported from transformers to numpy so a
graph can carry them as a constant: the bucket id of every (query, key) pair."""

from __future__ import annotations

import numpy as np

# transformers' MPNetEncoder.compute_position_bias always buckets with its
# default num_buckets=32 (and max_distance=128), whatever the config says; the
# config's relative_attention_num_buckets only sizes the table.
MPNET_BUCKETS = 32
MPNET_MAX_DISTANCE = 128


def relative_position_buckets(positions: int) -> np.ndarray:
    """MPNet's bucket id of every (query i, key j) pair, int32 [P, P]: transformers'
    `MPNetEncoder.relative_position_bucket(j - i)` (32 buckets, max distance
    128, bidirectional), with its float32 log and truncation."""
    idx = np.arange(positions)
    n = idx[:, None] - idx[None, :]  # -(j - i)
    half = MPNET_BUCKETS // 2
    ret = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    max_exact = half // 2
    safe = np.maximum(n, 1).astype(np.float32)  # log(0) is masked out below anyway
    scaled = np.log(safe / np.float32(max_exact)) / np.float32(
        np.log(MPNET_MAX_DISTANCE / max_exact)
    )
    large = max_exact + (scaled * np.float32(half - max_exact)).astype(np.int64)
    large = np.minimum(large, half - 1)
    return (ret + np.where(n < max_exact, n, large)).astype(np.int32)
