"""Records and vectors for store-level tests, without images or models."""

from __future__ import annotations

import datetime

import numpy as np

from handspring.photos.stores.records import ModelInfo, PhotoRecord

DIM = 16
TEST_MODEL = ModelInfo("tiny-test-model", DIM, "fp32")


def record(path: str, seed: int, taken: datetime.datetime | None = None, **changes) -> PhotoRecord:
    """A plausible record: size, mtime and sha256 follow from the seed."""
    return PhotoRecord(
        path=path,
        size=1000 + seed,
        mtime_ns=1_600_000_000_000_000_000 + seed,
        sha256=f"{seed:064x}",
        width=64,
        height=48,
        taken_at=taken,
        gps=(1.5, -2.25) if seed % 2 else None,
        exif={"Make": "Acme", "ISOSpeedRatings": [100, 200], "seed": seed},
        **changes,
    )


def unit_vector(seed: int, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)
