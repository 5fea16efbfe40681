"""The int8 scan with float32 re-scoring returns exactly the float32 top-k
(ids, order and scores), with masks, score floors, ties and near-duplicates."""

from __future__ import annotations

import numpy as np
import pytest

from handspring.photos.search.exact_scan import Int8Scan, quantize_rows


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def _scan(vectors: np.ndarray, ids: np.ndarray, chunk: int = 700) -> Int8Scan:
    chunks = [(ids[i : i + chunk], vectors[i : i + chunk]) for i in range(0, len(ids), chunk)]
    return Int8Scan.build(len(ids), vectors.shape[1], chunks)


def _brute_force(
    vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int, allowed=None, floor=None
) -> list[tuple[int, float]]:
    scores = vectors @ _unit(query)
    keep = np.ones(len(ids), bool) if allowed is None else allowed.copy()
    if floor is not None:
        keep &= scores >= floor
    order = [i for i in np.lexsort((ids, -scores)) if keep[i]][:k]
    return [(int(ids[i]), float(scores[i])) for i in order]


def _check(got: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in expected]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=1e-6)


@pytest.mark.parametrize("spread", [1.0, 0.02], ids=["random", "near-duplicates"])
def test_top_k_equals_float32_brute_force(spread: float) -> None:
    rng = np.random.default_rng(0)
    dim, count = 96, 3000
    # spread 0.02: every vector within a hair of one centre, so int8 alone would
    # scramble the order and the re-scoring has to take many candidates.
    centre = rng.standard_normal(dim)
    vectors = _unit(centre * (1 - spread) + spread * rng.standard_normal((count, dim)))
    ids = np.sort(rng.choice(10 * count, count, replace=False)).astype(np.int64)
    by_id = dict(zip(ids.tolist(), vectors, strict=True))
    fetched: list[int] = []

    def fetch(wanted: np.ndarray) -> np.ndarray:
        fetched.append(len(wanted))
        return np.stack([by_id[int(i)] for i in wanted])

    scan = _scan(vectors, ids)
    for trial in range(6):
        query = rng.standard_normal(dim) if trial % 2 else centre + rng.standard_normal(dim)
        allowed = rng.random(count) < 0.2 if trial >= 3 else None
        floor = 0.5 if trial == 5 else None
        for k in (1, 10, 57):
            expected = _brute_force(vectors, ids, query, k, allowed, floor)
            _check(scan.top_k(query, k, fetch, allowed, floor), expected)
    assert max(fetched) <= count


def test_small_indexes_masks_and_edge_cases() -> None:
    rng = np.random.default_rng(1)
    vectors = _unit(rng.standard_normal((5, 8)))
    ids = np.array([3, 8, 9, 20, 21], dtype=np.int64)
    scan = _scan(vectors, ids, chunk=2)
    fetch = {int(i): v for i, v in zip(ids, vectors, strict=True)}.__getitem__

    def rows(wanted: np.ndarray) -> np.ndarray:
        return np.stack([fetch(int(i)) for i in wanted])

    query = rng.standard_normal(8).astype(np.float32)
    _check(scan.top_k(query, 50, rows), _brute_force(vectors, ids, query, 50))  # k > N
    assert scan.top_k(query, 3, rows, np.zeros(5, bool)) == []
    only = np.array([False, True, False, False, True])
    _check(scan.top_k(query, 3, rows, only), _brute_force(vectors, ids, query, 3, only))
    assert scan.top_k(query, 3, rows, min_score=1.5) == []
    assert scan.top_k(query, 0, rows) == []
    with pytest.raises(ValueError, match="query has 7 values, the index holds 8"):
        scan.top_k(np.ones(7), 3, rows)
    with pytest.raises(ValueError, match="zero"):
        scan.top_k(np.zeros(8), 3, rows)
    with pytest.raises(ValueError, match="ascend"):
        Int8Scan.build(2, 8, [(np.array([5, 4]), vectors[:2])])


def test_ties_come_in_id_order() -> None:
    vector = _unit(np.arange(1, 17, dtype=np.float32))
    vectors = np.stack([vector] * 4 + [-vector])
    ids = np.array([4, 7, 11, 12, 13], dtype=np.int64)
    scan = _scan(vectors, ids)
    got = scan.top_k(vector, 3, lambda wanted: vectors[np.searchsorted(ids, wanted)])
    assert [i for i, _ in got] == [4, 7, 11]


def test_quantization_error_is_what_the_bound_uses() -> None:
    rng = np.random.default_rng(2)
    vectors = _unit(rng.standard_normal((50, 512)))
    quantized, scales, errors = quantize_rows(vectors)
    rebuilt = quantized.astype(np.float32) * scales[:, None]
    np.testing.assert_allclose(np.linalg.norm(vectors - rebuilt, axis=1), errors, rtol=1e-4)
    assert errors.max() < 0.05  # int8 per row: a few hundredths at most for unit vectors


def test_rows_gone_since_the_scan_was_built_are_left_out() -> None:
    rng = np.random.default_rng(3)
    vectors = _unit(rng.standard_normal((40, 8)))
    ids = np.arange(40, dtype=np.int64)
    scan = _scan(vectors, ids)
    query = vectors[5] + 0.01 * rng.standard_normal(8).astype(np.float32)
    best = _brute_force(vectors, ids, query, 5)

    def fetch_without_the_best(wanted: np.ndarray) -> np.ndarray:
        rows = vectors[wanted].copy()
        rows[wanted == best[0][0]] = np.nan  # deleted by another process meanwhile
        return rows

    got = scan.top_k(query, 4, fetch_without_the_best)
    assert [i for i, _ in got] == [i for i, _ in best[1:]]  # the next best fills in
