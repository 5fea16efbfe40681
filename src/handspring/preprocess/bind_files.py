"""Depth, thermal and IMU files read as Weaviate's multi2vec-bind container reads them.

ImageBind's own repository has no loader for these modalities. Weaviate's inference
container (github.com/weaviate/multi2vec-bind-inference, `bind_data.py`) does, and
multi2vec-bind users send what it takes: base64 image files for depth and thermal, base64
CSV for IMU. What it does, read from its code:

- Depth and thermal: `PIL.Image.open`, then `convert("L")` unless the image is already L:
  no EXIF rotation, alpha dropped, and Pillow's conversion clips 16-bit and 32-bit
  values at 255 (a 16-bit depth PNG in millimetres comes out mostly white). Then
  torchvision's Resize(224, bicubic) on the shortest side, CenterCrop(224), ToTensor and
  Normalize with the CLIP mean and std of the first channel: float32 [1, 224, 224].
- IMU: `np.loadtxt(dtype=float32, delimiter=",", skiprows=1)`, the first line skipped
  whatever it holds, one row per time step and one column per channel; that [T, 6] table
  is then *reshaped* (not transposed) to [6, T], so each "channel" is a run of T
  consecutive values of the row-major table; then zero-padded on the right, or cut, to
  2000 steps. We do the same, so vectors equal the container's: an IMU window in
  ImageBind's own [6, 2000] layout should be sent as an array or a `.npy` instead.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import UnidentifiedImageError

from handspring.errors import ImageError, InputError

# decode_image converts to RGB; the container converts to L straight from the file's mode
# (the two differ for YCbCr and LAB), so only decode's opening and limits are reused.
from handspring.preprocess.decode import (
    DEFAULT_MAX_PIXELS,
    check_pixels,
    load_pixels,
    open_image,
)
from handspring.preprocess.image import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ImageTransform

IMU_CHANNELS = 6
IMU_STEPS = 2000

# The container's Resize(224, bicubic) -> CenterCrop(224) -> ToTensor -> Normalize, with the
# first channel's CLIP statistics. ImageTransform works on RGB: a gray image converted to
# RGB has three equal channels that resize identically, so channel 0 is the L result.
GRAY_TRANSFORM = ImageTransform(
    shortest_edge=224,
    resize_to=None,
    crop_size=(224, 224),
    mean=(OPENAI_CLIP_MEAN[0],) * 3,
    std=(OPENAI_CLIP_STD[0],) * 3,
    resample="bicubic",
    convention="torchvision",
)


def gray_image_input(
    source: bytes | str | os.PathLike[str],
    *,
    item: str,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """float32 [1, 224, 224] from an image file (bytes or path), as the container makes a
    depth or thermal input. Raises ImageError(item, reason)."""
    try:
        opened = open_image(source, item, max_pixels)
    except ImageError as exc:
        if isinstance(exc.__cause__, UnidentifiedImageError):
            raise ImageError(item, "neither a .npy array nor an image file", exc.reason) from None
        raise
    with opened as image:
        check_pixels(image.size, item, max_pixels)
        load_pixels(image, item)
        try:
            gray = image if image.mode == "L" else image.convert("L")
            rgb = gray.convert("RGB")
        except (ValueError, OSError) as exc:
            raise ImageError(
                item, f"cannot convert image mode {image.mode} to grayscale", str(exc)
            ) from None
    return GRAY_TRANSFORM(rgb)[:1]


def imu_window_from_csv(data: bytes, *, item: str) -> np.ndarray:
    """float32 [6, 2000] from a CSV file's bytes, as the container makes an IMU input.
    Raises InputError(item, reason)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(item, "neither a .npy array nor a UTF-8 CSV file") from None
    try:
        with warnings.catch_warnings():
            # An empty table is reported below, not as numpy's "input contained no data".
            warnings.simplefilter("ignore", UserWarning)
            # ndmin=2 keeps a one-row table [1, 6], where the container fails on a 1-D array.
            table = np.loadtxt(
                io.StringIO(text), dtype=np.float32, delimiter=",", skiprows=1, ndmin=2
            )
    except ValueError as exc:
        raise InputError(
            item, "not a CSV of numbers (a header line, then one row per time step)", str(exc)
        ) from None
    steps, channels = table.shape
    if steps == 0:
        raise InputError(item, "the CSV has no rows after its header line")
    if channels != IMU_CHANNELS:
        raise InputError(item, f"{channels} columns, but an IMU CSV has {IMU_CHANNELS}")
    window = table.reshape(channels, steps)  # the container's reshape, kept for equal vectors
    out = np.zeros((IMU_CHANNELS, IMU_STEPS), dtype=np.float32)
    kept = min(steps, IMU_STEPS)
    out[:, :kept] = window[:, :kept]
    return out
