"""Helpers for the array modalities, whose model input the caller builds itself.

ImageBind's repository has no preprocessing for depth, thermal or IMU; its depth tower was
trained on disparity maps (as Omnivore's), so a metric depth map from a sensor or a
stereo rig is usually turned into disparity first. Nothing here is applied implicitly.
"""

from __future__ import annotations

import numpy as np


def disparity_from_depth(
    depth: np.ndarray, focal_length_px: float, baseline_m: float
) -> np.ndarray:
    """float32 disparity (pixels) = baseline * focal length / depth, for a depth map in
    metres. Pixels without a depth reading (0, negative, NaN or inf) get disparity 0,
    which is what a sensor's holes look like in disparity datasets."""
    if focal_length_px <= 0 or baseline_m <= 0:
        raise ValueError("focal_length_px and baseline_m must be positive")
    depth = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    disparity = np.zeros(depth.shape, dtype=np.float64)
    disparity[valid] = baseline_m * focal_length_px / depth[valid]
    return disparity.astype(np.float32)
