"""Near-duplicate photos: every pair of indexed photos whose embeddings' cosine is at
least a threshold, joined into groups (a photo like one in a group is in that group).

It is the exact scan's idea run all against all: an int8 copy of every vector, scored
in blocks of rows by ONNX Runtime's int8 GEMM, keeps the pairs whose int8 score could
reach the threshold given the proven bound on the int8 error (see exact_scan.py);
those are scored again in float32. So the pairs are exactly those of a float32
comparison of all pairs, at int8 speed. It only reads the index: nothing is deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from handspring.photos.search.exact_scan import quantize_rows
from handspring.photos.stores.records import SearchFilter
from handspring.photos.stores.store import PhotoStore
from handspring.runtime.session import default_threads

DEFAULT_THRESHOLD = 0.97
_ZERO_POINT = 128
_SLACK = 1e-5  # float32 rounding of the scaled int32 dot products
_BLOCK = 256  # rows scored per run: [256, N] booleans stay small next to the int8 copy

# Exact float32 vectors for these ids, in this order ([len(ids), dim]; NaN rows: gone).
VectorFetch = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class DuplicateGroup:
    photo_ids: list[int]  # ascending
    pairs: list[tuple[int, int, float]]  # (id, id, cosine) at or above the threshold

    @property
    def closest(self) -> float:
        return max(score for _, _, score in self.pairs)

    @property
    def loosest(self) -> float:
        return min(score for _, _, score in self.pairs)


def find_duplicates(
    store: PhotoStore, threshold: float = DEFAULT_THRESHOLD, flt: SearchFilter | None = None
) -> list[DuplicateGroup]:
    """Groups of near-duplicate photos among those `flt` lets through."""
    for attempt in (1, 2):
        try:
            pairs = near_duplicate_pairs(
                store.count(flt), store.vector_chunks(flt), _fetch_from(store), threshold
            )
            break
        except IndexChanged:
            if attempt == 2:
                raise
    return group_pairs(pairs)


class IndexChanged(RuntimeError):
    """Photos came or went while the vectors were read (an index run committed)."""


def _fetch_from(store: PhotoStore) -> VectorFetch:
    def fetch(ids: np.ndarray) -> np.ndarray:
        vectors = [store.vector(int(i)) for i in ids]
        dim = next((len(v) for v in vectors if v is not None), 0)
        gone = np.full(dim, np.nan, dtype=np.float32)
        return np.stack([gone if v is None else v for v in vectors])

    return fetch


def near_duplicate_pairs(
    count: int,
    chunks: Iterable[tuple[np.ndarray, np.ndarray]],
    fetch: VectorFetch,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[tuple[int, int, float]]:
    """(id, id, cosine) with the smaller id first, for every pair of the `count` unit
    vectors in `chunks` ((ids, float32 [n, dim]) by ascending id) whose float32 cosine is
    >= threshold, best first."""
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine in [-1, 1], got {threshold}")
    ids, rows, scales, errors = _int8_copy(count, chunks)
    if count < 2:
        return []
    worst = float(errors.max())
    # |true - int8 score| <= e_i + e_j + 3 e_i e_j for unit vectors (exact_scan.py's bound
    # with both sides quantized): a pair below this int8 score cannot reach the threshold.
    floor = np.array(threshold - (2 * worst + 3 * worst * worst + _SLACK), dtype=np.float32)
    session, inputs = _block_session(rows, scales)
    candidates: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, count, _BLOCK):
        block = rows[start : start + _BLOCK]
        feeds = {
            "rows": (block.astype(np.int16) + _ZERO_POINT).astype(np.uint8),
            "row_scales": scales[start : start + _BLOCK, None],
            "floor": floor,
        }
        (mask,) = session.run(None, feeds)
        left, right = np.nonzero(mask)
        left += start
        upper = right > left  # each pair once, and never a photo with itself
        candidates.append((left[upper], right[upper]))
    del inputs
    left = np.concatenate([c[0] for c in candidates])
    right = np.concatenate([c[1] for c in candidates])
    return _exact(ids, left, right, fetch, threshold)


def _int8_copy(
    count: int, chunks: Iterable[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ids = np.empty(count, dtype=np.int64)
    rows = np.empty((count, 0), dtype=np.int8)  # sized at the first chunk
    scales = np.empty(count, dtype=np.float32)
    errors = np.empty(count, dtype=np.float32)
    start = 0
    for chunk_ids, vectors in chunks:
        end = start + len(chunk_ids)
        if end > count:
            raise IndexChanged(f"more vectors than the {count} announced: the index changed")
        if start == 0:
            rows = np.empty((count, vectors.shape[1]), dtype=np.int8)
        ids[start:end] = chunk_ids
        rows[start:end], scales[start:end], errors[start:end] = quantize_rows(vectors)
        start = end
    if start != count:
        raise IndexChanged(f"{start} vectors read, {count} announced: the index changed")
    return ids, rows, scales, errors


def _exact(
    ids: np.ndarray, left: np.ndarray, right: np.ndarray, fetch: VectorFetch, threshold: float
) -> list[tuple[int, int, float]]:
    if len(left) == 0:
        return []
    involved = np.unique(np.concatenate([left, right]))
    vectors = fetch(ids[involved]).astype(np.float32, copy=False)
    where = {int(row): n for n, row in enumerate(involved)}
    a = vectors[[where[int(r)] for r in left]]
    b = vectors[[where[int(r)] for r in right]]
    scores = np.einsum("ij,ij->i", a, b)
    keep = np.isfinite(scores) & (scores >= threshold)
    pairs = [
        (int(ids[i]), int(ids[j]), float(s))
        for i, j, s in zip(left[keep], right[keep], scores[keep], strict=True)
    ]
    pairs.sort(key=lambda pair: (-pair[2], pair[0], pair[1]))
    return pairs


def group_pairs(pairs: Iterable[tuple[int, int, float]]) -> list[DuplicateGroup]:
    """Photos joined by pairs into groups (connected components), largest first, then the
    closest."""
    parent: dict[int, int] = {}

    def root(node: int) -> int:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    listed = list(pairs)
    for a, b, _ in listed:
        parent[root(a)] = root(b)
    members: dict[int, list[int]] = {}
    for node in list(parent):
        members.setdefault(root(node), []).append(node)
    edges: dict[int, list[tuple[int, int, float]]] = {}
    for pair in listed:
        edges.setdefault(root(pair[0]), []).append(pair)
    groups = [DuplicateGroup(sorted(members[r]), edges[r]) for r in members]
    groups.sort(key=lambda g: (-len(g.photo_ids), -g.closest, g.photo_ids[0]))
    return groups


def _block_session(
    rows: np.ndarray, scales: np.ndarray
) -> tuple[ort.InferenceSession, list[ort.OrtValue]]:
    """rows_block @ rows.T, scaled per row and column, compared with `floor`: [B, N] bools.
    The int8 copy goes in by add_initializer (no copy into a protobuf), packed once."""
    count, dim = rows.shape
    inputs = [
        ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(rows.T)),
        ort.OrtValue.ortvalue_from_numpy(scales),
    ]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        [
            helper.make_node(
                "MatMulIntegerToFloat",
                ["rows", "packed", "one", "scales", "zero_point"],
                ["scores"],
                domain="com.microsoft",
            ),
            helper.make_node("Mul", ["scores", "row_scales"], ["scaled"]),
            helper.make_node("GreaterOrEqual", ["scaled", "floor"], ["mask"]),
        ],
        "int8_pairs",
        [
            value("rows", TensorProto.UINT8, [None, dim]),
            value("row_scales", TensorProto.FLOAT, [None, 1]),
            value("floor", TensorProto.FLOAT, []),
        ],
        [value("mask", TensorProto.BOOL, [None, count])],
        [
            helper.make_tensor("packed", TensorProto.INT8, [dim, 1], [0] * dim),
            helper.make_tensor("scales", TensorProto.FLOAT, [1], [1.0]),
            helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
            helper.make_tensor("zero_point", TensorProto.UINT8, [], [_ZERO_POINT]),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
        ir_version=9,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = default_threads()
    options.log_severity_level = 3
    options.add_initializer("packed", inputs[0])
    options.add_initializer("scales", inputs[1])
    session = ort.InferenceSession(
        model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return session, inputs
