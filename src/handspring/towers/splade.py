"""SPLADE: a text -> a vocabulary-wide vector of term weights, most of them zero.

The graph gives the dense [N, V] rows; `sparse_entries` keeps the nonzero ones. Runs are
split so that the [rows, T, V] logits one run holds stay within `LOGIT_BUDGET` floats.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from handspring.models.splade import SPARSE_OUTPUT
from handspring.towers.encoder_text import EncoderTextTower
from handspring.towers.text import TextTokens

MODALITY = "sparse"
# 32 Mi floats (128 MiB): 8 items of 128 tokens over BERT's 30,522 terms, one of 512 tokens
# over XLM-R's 250,002.
LOGIT_BUDGET = 32 * 1024 * 1024


class SpladeTower(EncoderTextTower):
    modality = MODALITY
    batch_size = 8
    default_normalize = False  # term weights, compared by dot product

    def run(self, batch: Sequence[TextTokens]) -> np.ndarray:
        out = np.empty((len(batch), self.dim), dtype=np.float32)
        width = max(t.tokens for t in batch)
        rows = max(1, LOGIT_BUDGET // (width * self.dim))
        for start in range(0, len(batch), rows):
            chunk = batch[start : start + rows]
            out[start : start + len(chunk)] = self.session.run([SPARSE_OUTPUT], self.feeds(chunk))[
                0
            ]
        return out


def sparse_entries(row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(term indices int64, weights float32) of one row's nonzero entries, by index."""
    indices = np.flatnonzero(row)
    return indices.astype(np.int64), row[indices].astype(np.float32)
