"""`photos duplicates` at scale: one exact all-pairs pass (int8 blocks through ONNX
Runtime, then float32 for the pairs near the threshold) over N unit vectors, timed.

The vectors are random in 512 dimensions with planted near-duplicates (one photo in 50
gets a copy at cosine 0.96-0.999), so the answer is known: every planted pair at or
above the threshold must come back, and a random sample of other pairs is checked in
float32 to score below it.

    python bench/duplicates_bench.py             # 100,000 photos
    python bench/duplicates_bench.py --photos 20000 --threshold 0.98
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from handspring.photos.search.duplicates import group_pairs, near_duplicate_pairs


def planted(count: int, dim: int, seed: int) -> tuple[np.ndarray, dict[tuple[int, int], float]]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    pairs: dict[tuple[int, int], float] = {}
    for i in range(0, count - 1, 50):
        cosine = rng.uniform(0.96, 0.999)
        noise = rng.standard_normal(dim).astype(np.float32)
        noise -= noise @ vectors[i] * vectors[i]
        noise /= np.linalg.norm(noise)
        vectors[i + 1] = cosine * vectors[i] + np.sqrt(1 - cosine**2) * noise
        pairs[(i + 1, i + 2)] = float(vectors[i] @ vectors[i + 1])  # ids are rows + 1
    return vectors, pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threshold", type=float, default=0.97)
    args = parser.parse_args()

    vectors, pairs = planted(args.photos, args.dim, seed=1)
    ids = np.arange(1, args.photos + 1, dtype=np.int64)
    chunks = ((ids[s : s + 20_000], vectors[s : s + 20_000]) for s in range(0, args.photos, 20_000))

    def fetch(wanted: np.ndarray) -> np.ndarray:
        return vectors[wanted - 1]

    start = time.perf_counter()
    found = near_duplicate_pairs(args.photos, chunks, fetch, args.threshold)
    seconds = time.perf_counter() - start
    groups = group_pairs(found)

    expected = {pair for pair, cosine in pairs.items() if cosine >= args.threshold}
    got = {(a, b) for a, b, _ in found}
    missing = expected - got
    rng = np.random.default_rng(2)
    sample = rng.integers(0, args.photos, size=(200_000, 2))
    sample = sample[sample[:, 0] < sample[:, 1]]
    scores = np.einsum("ij,ij->i", vectors[sample[:, 0]], vectors[sample[:, 1]])
    above = {
        (int(a) + 1, int(b) + 1)
        for (a, b), s in zip(sample, scores, strict=True)
        if s >= args.threshold
    }
    print(f"photos              {args.photos:,} x {args.dim}")
    print(f"threshold           {args.threshold}")
    print(
        f"full pass           {seconds:.1f} s ({args.photos**2 / 2 / seconds / 1e6:.0f} M pairs/s)"
    )
    print(f"pairs found         {len(found):,} in {len(groups):,} groups")
    print(f"planted >= threshold {len(expected):,}, missing {len(missing)}")
    print(f"random pairs above threshold in the sample, not found: {len(above - got)}")
    assert not missing and not (above - got), "the pass must be exact"


if __name__ == "__main__":
    main()
