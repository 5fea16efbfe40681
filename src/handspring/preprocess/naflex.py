"""SigLIP 2 NaFlex images: resize keeping the aspect ratio to at most `max_num_patches`
patches, then cut into flattened patches, as transformers' `Siglip2ImageProcessorPil` does
(read from its code, transformers 5.x):

- The target (h, w) comes from a binary search on one scale for both sides, each side
  rounded up to a multiple of the patch size and at least one patch
  (`get_image_size_for_max_num_patches`, copied below step for step: its float search
  decides the size).
- PIL resize of the uint8 image to (h, w) with `resample` (bilinear by default), rescale and
  normalize (mean = std = 0.5 by default): `ImageTransform` does both, bit for bit.
- Patches in the processor's order: [rows * cols, p * p * C], each patch row-major over its
  pixels with the channels innermost.
- The processor pads to `max_num_patches` rows and returns a mask and (rows, cols); the
  tower pads a batch (towers/naflex_image.py).

Images are always converted to RGB (alpha onto white), as the processor does with
`do_convert_rgb=True`: without it a grayscale or RGBA image has the wrong channel count
for the model, and an RGB image is the same either way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from handspring.preprocess.decode import DRAFT_KEY, Draft
from handspring.preprocess.image import ImageTransform

DEFAULT_PATCH_SIZE = 16
DEFAULT_MAX_NUM_PATCHES = 256


def image_size_for_max_num_patches(
    image_height: int, image_width: int, patch_size: int, max_num_patches: int, eps: float = 1e-5
) -> tuple[int, int]:
    """(height, width) in pixels, multiples of `patch_size`: transformers'
    `get_image_size_for_max_num_patches`, whose float search this repeats exactly."""

    def scaled(scale: float, size: int) -> int:
        side = math.ceil(size * scale / patch_size) * patch_size
        return int(max(patch_size, side))

    scale_min, scale_max = eps / 10, 100.0
    while (scale_max - scale_min) >= eps:
        scale = (scale_min + scale_max) / 2
        patches = (scaled(scale, image_height) / patch_size) * (
            scaled(scale, image_width) / patch_size
        )
        if patches <= max_num_patches:
            scale_min = scale
        else:
            scale_max = scale
    return scaled(scale_min, image_height), scaled(scale_min, image_width)


def patchify(pixels: np.ndarray, patch_size: int) -> np.ndarray:
    """[C, H, W] -> [H/p * W/p, p * p * C], in the processor's order."""
    c, h, w = pixels.shape
    rows, cols = h // patch_size, w // patch_size
    grid = pixels.reshape(c, rows, patch_size, cols, patch_size)  # [C, rows, p, cols, p]
    grid = grid.transpose(1, 3, 2, 4, 0)  # [rows, cols, p, p, C]
    return np.ascontiguousarray(grid.reshape(rows * cols, -1))  # [rows*cols, p*p*C]


@dataclass(frozen=True)
class NaflexPatches:
    """One image's patches, unpadded."""

    values: np.ndarray  # float32 [rows * cols, p * p * C]
    rows: int
    cols: int


@dataclass(frozen=True)
class NaflexTransform:
    patch_size: int
    max_num_patches: int
    # Resample, rescale and normalize; its `resize_to` is set per image.
    pixels: ImageTransform

    def __post_init__(self) -> None:
        if self.patch_size < 1 or self.max_num_patches < 1:
            raise ValueError(
                f"patch_size ({self.patch_size}) and max_num_patches "
                f"({self.max_num_patches}) must be positive"
            )

    @classmethod
    def from_hf(
        cls,
        preprocessor_config: Mapping[str, Any],
        patch_size: int = DEFAULT_PATCH_SIZE,
        max_num_patches: int = DEFAULT_MAX_NUM_PATCHES,
    ) -> NaflexTransform:
        """From a `Siglip2ImageProcessor` preprocessor_config.json; the defaults stand where
        it says nothing. ValueError for what the processor would not do either."""
        cfg = {key: value for key, value in preprocessor_config.items() if value is not None}
        if not cfg.get("do_resize", True):
            raise ValueError("do_resize=false: NaFlex images must be resized to whole patches")
        defaults = {
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "resample": Image.Resampling.BILINEAR,
        }
        # No resize and no crop here: the size is chosen per image.
        pixels = ImageTransform.from_hf(
            {**defaults, **cfg, "do_resize": False, "do_center_crop": False}
        )
        return cls(
            patch_size=_int(cfg.get("patch_size", patch_size), "patch_size"),
            max_num_patches=_int(cfg.get("max_num_patches", max_num_patches), "max_num_patches"),
            pixels=pixels,
        )

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) in pixels an image of this size is resized to."""
        return image_size_for_max_num_patches(height, width, self.patch_size, self.max_num_patches)

    def draft_size(self) -> int:
        """The shortest side JPEG draft mode must keep: twice the longest shortest side a
        target can have (a square one)."""
        return 2 * math.isqrt(self.max_num_patches) * self.patch_size

    def __call__(self, image: Image.Image) -> NaflexPatches:
        """A decoded image (RGB, or converted as the reference converts) -> its patches."""
        draft: Draft | None = image.info.get(DRAFT_KEY)
        width, height = draft.full_size if draft and draft.size == image.size else image.size
        target = self.target_size(height, width)
        pixels = dataclasses.replace(self.pixels, resize_to=target)(image)  # [C, h, w]
        p = self.patch_size
        return NaflexPatches(patchify(pixels, p), target[0] // p, target[1] // p)


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, not {value!r}")
    return value
