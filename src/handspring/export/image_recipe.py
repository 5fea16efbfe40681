"""An image tower's preprocessing as preprocess.json's `image` section: every step of
`ImageTransform` and of decoding, with the rounding each reference uses, so that a
consumer in another language can repeat it (docs/export.md defines each field)."""

from __future__ import annotations

from typing import Any

from PIL import Image

from handspring.export.errors import ExportError
from handspring.preprocess.image import ImageTransform
from handspring.towers.base import Tower
from handspring.towers.image import DecodeOptions, ImageTower

# How the long side is computed from the short one, per ImageTransform.convention
# (float64 arithmetic, left to right, then truncated).
LONG_SIDE = {
    "transformers": "floor(size * long / short)",
    "torchvision": "floor(size * long / short)",
    "immich": "floor((long / short) * size)",
}
# Centre-crop offset of a side n >= the crop c, and where the odd pixel of padding goes
# when n < c.
CROP_OFFSET = {"transformers": "floor", "torchvision": "round_half_even", "immich": "floor"}
ODD_PADDING = {"transformers": "before", "torchvision": "after", "immich": "before"}


def image_recipe(tower: Tower, input_name: str) -> dict[str, Any]:
    if not isinstance(tower, ImageTower):
        raise ExportError(
            type(tower).__name__,
            "this image tower (SigLIP 2 NaFlex: positions resized per image outside the graph) "
            "has no export yet",
        )
    transform = tower.transform
    return {
        "input": input_name,
        "layout": "NCHW",
        "dtype": "float32",
        "channel_order": "RGB",
        "decode": _decode(tower.decode, tower.composite_alpha),
        "resize": _resize(transform),
        "crop": _crop(transform),
        "rescale_factor": transform.rescale_factor,
        "mean": list(transform.mean),
        "std": list(transform.std),
        "normalize_arithmetic": (
            "value = float32(level * rescale_factor) with the product in float64; "
            "out = (value - float32(mean[c])) / float32(std[c]) in float32"
        ),
        "output_size": list(transform.output_size),
    }


def _decode(decode: DecodeOptions, composite_alpha: bool) -> dict[str, Any]:
    return {
        "exif_orientation": decode.exif_orientation,
        "alpha": "composite_on_white" if composite_alpha else "drop",
        "to_rgb": "pillow_convert_rgb",
        "max_pixels": decode.max_pixels,
        "jpeg_draft": decode.fast_decode,
    }


def _resize(transform: ImageTransform) -> dict[str, Any]:
    resample = Image.Resampling[transform.resample.upper()]
    common = {
        "interpolation": transform.resample,
        "pil_resample": resample.name,
        "pil_resample_id": int(resample),
        "antialias": True,  # Pillow widens its filters when it shrinks
        "on": "uint8 RGB",
    }
    if transform.shortest_edge is not None:
        return {
            "mode": "shortest_edge",
            "size": transform.shortest_edge,
            "long_side": LONG_SIDE[transform.convention],
            **common,
        }
    if transform.resize_to is not None:
        height, width = transform.resize_to
        return {"mode": "squash", "height": height, "width": width, **common}
    if transform.scale_to is not None:
        height, width = transform.scale_to
        return {
            "mode": "keep_ratio",
            "height": height,
            "width": width,
            # ratio = max (inside) or min (cover) of (h / height, w / width)
            "fit": "inside" if transform.scale_longest else "cover",
            "rounding": "max(1, round_half_even(side / ratio))",
            **common,
        }
    return {"mode": "none"}


def _crop(transform: ImageTransform) -> dict[str, Any] | None:
    if transform.crop_size is None:
        return None
    height, width = transform.crop_size
    return {
        "height": height,
        "width": width,
        "offset": CROP_OFFSET[transform.convention],
        "pad_value": transform.fill,
        "odd_padding_pixel": ODD_PADDING[transform.convention],
    }
