"""Inputs of the golden-file tests, made with numpy alone so they are the same
bits on every machine (no JPEG codec or drawing code whose output may change)."""

from __future__ import annotations

import numpy as np

from tests.support.samples import TEXTS

GOLDEN_SEEDS = {"hf": 0, "open_clip": 1}
GOLDEN_TEXTS = TEXTS


def golden_images() -> list[np.ndarray]:
    """uint8 RGB arrays of several shapes: gradients plus seeded noise."""
    out = []
    for i, (h, w) in enumerate([(48, 64), (64, 48), (40, 40), (33, 97), (120, 80)]):
        rng = np.random.default_rng(100 + i)
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([255 * x / w, 255 * y / h, 128 + 100 * np.sin(x / 5 + y / 7)], axis=-1)
        out.append(np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8))
    return out
