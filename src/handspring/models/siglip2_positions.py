"""SigLIP 2 NaFlex's learned position grid resized to each image's patch grid, in numpy.

transformers resizes the G x G grid of position embeddings to an image's (h, w) patches
as `F.interpolate(mode="bilinear", align_corners=False, antialias=True)` does (newer
versions write the same filter out in closed form). That resize is linear and separable,
so it is two small matrices: out = Wh @ grid @ Ww^T for each channel. The matrices are
computed as PyTorch's antialiased kernel computes its weights (aten UpSampleKernel.cpp,
`_compute_indices_min_size_weights_aa`), in float32 where it works in float32: the
float32 sampling centre alone moves an upsampled value by ~1e-6 relative.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

_F32 = np.float32


@lru_cache(maxsize=1024)
def antialias_bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """float32 [out_size, in_size], read-only: row i holds the weight of every input sample
    in output sample i, for a 1-D bilinear resize with antialiasing, align_corners=False."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    scale = _F32(in_size) / _F32(out_size)
    # Downsampling widens the triangle to cover every input sample under an output one.
    support = float(scale) if scale >= 1.0 else 1.0
    inv_scale = float(_F32(1.0) / scale) if scale >= 1.0 else 1.0
    weights = np.zeros((out_size, in_size), dtype=_F32)
    for i in range(out_size):
        # C++ promotes `scale * (i + 0.5)` to double and stores the centre as float.
        center = _F32(float(scale) * (i + 0.5))
        start = max(int(float(center - _F32(support)) + 0.5), 0)
        stop = min(int(float(center + _F32(support)) + 0.5), in_size)
        offsets = (np.arange(start, stop, dtype=_F32) - center).astype(_F32)  # [k]
        x = ((offsets.astype(np.float64) + 0.5) * inv_scale).astype(_F32)  # [k]
        taps = np.maximum(_F32(1.0) - np.abs(x), _F32(0.0))  # [k] triangle filter
        total = np.cumsum(taps, dtype=_F32)[-1] if len(taps) else _F32(0.0)  # summed in order
        if total != 0:
            weights[i, start:stop] = taps / total
    weights.setflags(write=False)
    return weights


class ResizedPositions:
    """The position table of a NaFlex checkpoint, resized on demand to (rows, cols)."""

    def __init__(self, table: np.ndarray) -> None:
        """table: [G*G, D], `vision_model.embeddings.position_embedding.weight`."""
        cells, width = table.shape
        side = math.isqrt(cells)
        if side * side != cells:
            raise ValueError(f"{cells} position embeddings do not make a square grid")
        self.side = side
        self.width = width
        self._grid = np.asarray(table, dtype=np.float64).reshape(side, side * width)  # [G, G*D]

    def __call__(self, rows: int, cols: int) -> np.ndarray:
        """float32 [rows * cols, D], row-major over the patch grid, as the patches are."""
        g, d = self.side, self.width
        wh = antialias_bilinear_weights(g, rows).astype(np.float64)  # [rows, G]
        ww = antialias_bilinear_weights(g, cols).astype(np.float64)  # [cols, G]
        by_rows = (wh @ self._grid).reshape(rows, g, d)  # [rows, G, D]
        resized = np.matmul(ww, by_rows)  # [rows, cols, D]
        return resized.reshape(rows * cols, d).astype(np.float32)
