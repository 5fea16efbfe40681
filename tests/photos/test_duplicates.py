"""Near-duplicates: exactly the pairs a float32 comparison of all pairs finds at the
threshold, though scored in int8 first (planted pairs straddle the threshold by less
than the int8 error), grouped by connection, from SQLite and Qdrant alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from handspring.photos.search.duplicates import (
    find_duplicates,
    group_pairs,
    near_duplicate_pairs,
)
from handspring.photos.stores.records import SearchFilter
from handspring.photos.stores.store import open_store
from tests.support.photo_records import TEST_MODEL, record

THRESHOLD = 0.97


def _planted(count: int, dim: int, seed: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Random unit vectors, and every 10th one copied with noise that puts its cosine to the
    original within +-0.004 of the threshold (inside the int8 error) or clearly above it."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    planted = []
    for i in range(0, count - 1, 10):
        target = THRESHOLD + rng.uniform(-0.004, 0.004) if i % 20 else 0.995
        noise = rng.standard_normal(dim).astype(np.float32)
        noise -= noise @ vectors[i] * vectors[i]
        noise /= np.linalg.norm(noise)
        vectors[i + 1] = target * vectors[i] + np.sqrt(1 - target**2) * noise
        planted.append((i, i + 1))
    return vectors, planted


def test_pairs_are_exactly_the_float32_ones() -> None:
    count, dim = 700, 64
    vectors, planted = _planted(count, dim, seed=3)
    ids = np.arange(1, count + 1, dtype=np.int64) * 3  # ids are not row numbers
    chunks = [(ids[s : s + 128], vectors[s : s + 128]) for s in range(0, count, 128)]
    lookup = {int(i): n for n, i in enumerate(ids)}

    def fetch(wanted: np.ndarray) -> np.ndarray:
        return vectors[[lookup[int(i)] for i in wanted]]

    got = near_duplicate_pairs(count, iter(chunks), fetch, THRESHOLD)
    scores = vectors @ vectors.T
    expected = {
        (int(ids[i]), int(ids[j]))
        for i in range(count)
        for j in range(i + 1, count)
        if scores[i, j] >= THRESHOLD
    }
    near_threshold = sum(abs(scores[i, j] - THRESHOLD) < 0.004 for i, j in planted)
    assert near_threshold >= 10, "the test must probe inside the int8 error"
    assert 10 < len(expected) < len(planted)
    assert {(a, b) for a, b, _ in got} == expected
    for a, b, score in got:
        assert score == pytest.approx(float(scores[lookup[a], lookup[b]]), abs=1e-6)
    assert [s for _, _, s in got] == sorted((s for _, _, s in got), reverse=True)


def test_groups_join_chains_of_pairs() -> None:
    groups = group_pairs([(1, 2, 0.99), (2, 3, 0.98), (7, 9, 0.995), (4, 5, 0.971)])
    assert [g.photo_ids for g in groups] == [[1, 2, 3], [7, 9], [4, 5]]
    assert (groups[0].closest, groups[0].loosest) == (0.99, 0.98)


@pytest.mark.parametrize("kind", ["sqlite", "qdrant"])
def test_from_a_store(tmp_path: Path, kind: str) -> None:
    url = f"sqlite://{tmp_path / 'i.db'}" if kind == "sqlite" else f"qdrant://{tmp_path / 'q'}"
    vectors, _ = _planted(60, TEST_MODEL.dim, seed=8)
    with open_store(url) as store:
        store.set_model(TEST_MODEL)
        ids = []
        for i, vector in enumerate(vectors):
            folder = "/lib/a" if i < 30 else "/lib/b"
            ids.append(store.put(record(f"{folder}/{i:02d}.jpg", i), vector))
        store.commit()
        scores = vectors @ vectors.T
        expected = sorted(
            [ids[i], ids[j]] for i in range(60) for j in range(i + 1, 60) if scores[i, j] >= 0.97
        )
        groups = find_duplicates(store, THRESHOLD)
        assert sorted(g.photo_ids for g in groups) == expected
        in_a = find_duplicates(store, THRESHOLD, SearchFilter(folder="/lib/a"))
        assert sorted(g.photo_ids for g in in_a) == [p for p in expected if p[1] <= ids[29]]
    with pytest.raises(ValueError, match="threshold must be a cosine"):
        near_duplicate_pairs(0, iter([]), lambda ids: ids, 1.5)
