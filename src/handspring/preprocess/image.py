"""Decode images and turn them into CLIP pixel tensors, equal to the transformers PIL reference.

What the reference does (transformers 5.x `CLIPImageProcessorPil`, read from its code):

- RGB: any alpha (an "A" band, or a `transparency` entry as in P, L or RGB PNGs with tRNS) is
  composited onto white; every other mode goes through `Image.convert("RGB")`. CMYK, 1, L and P
  are plain PIL conversions. `load_image(path)` applies the EXIF orientation and calls
  `convert("RGB")`, which drops alpha without compositing; the processor given an opened PIL image
  composites but ignores EXIF. We apply EXIF (when asked) and composite.
- 16-bit grayscale (I;16, e.g. 16-bit PNG), I and F: `convert("RGB")` clips at 255, so most such
  images come out white. We match that by default; `scale_16bit=True` keeps the top byte instead.
- Resize: the shortest side to N, the other to `int(N * long / short)`, PIL on uint8.
- Centre crop: offset `(n - c) // 2`; a side shorter than the crop is padded with 0 and the odd
  pixel of padding goes first (top/left). torchvision (open_clip) rounds the offset with `round`
  and puts the odd pixel last.
- Rescale in float64 then cast to float32, normalize in float32. A uint8 pixel has 256 values, so
  a [3, 256] table computed the same way gives the very same bits (torchvision's `x / 255` in
  float32 gives the same table too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from handspring.preprocess.decode import DEFAULT_MAX_PIXELS, DRAFT_KEY, Draft, to_rgb

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_RESAMPLE = {
    name: Image.Resampling[name.upper()]
    for name in ("nearest", "lanczos", "bilinear", "bicubic", "box", "hamming")
}
_RESAMPLE_NAMES = {int(code): name for name, code in _RESAMPLE.items()}
_CONVENTIONS = ("transformers", "torchvision", "immich")

# A 1 x 100000 image resized to a shortest side of 224 would take 15 GB. Past the decoding limit
# only the part that survives the crop is resized: same geometry, within an 8-bit level.
_MAX_RESIZED_PIXELS = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class ImageTransform:
    """Resize -> centre crop -> rescale -> normalize, producing float32 [3, H, W].

    Beyond the transformers fields: `scale_to` (h, w) scales by one rounded ratio so the image
    covers that box, or fits inside it with `scale_longest` (open_clip's ResizeKeepRatio); `fill`
    pads a crop larger than the image; `convention` picks the crop rounding of "transformers",
    "torchvision" (open_clip) or "immich" (Immich's ML service: the long side resized to
    `int((long / short) * N)`, which can be one pixel off `int(N * long / short)`, and the
    crop offset floored, as transformers does).
    """

    shortest_edge: int | None
    resize_to: tuple[int, int] | None
    crop_size: tuple[int, int] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: str = "bicubic"
    rescale_factor: float = 1 / 255
    scale_to: tuple[int, int] | None = None
    scale_longest: bool = False
    fill: int = 0
    convention: str = "transformers"
    _table: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.shortest_edge, self.resize_to, self.scale_to)) > 1:
            raise ValueError("give at most one of shortest_edge, resize_to and scale_to")
        if self.resample not in _RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, not {self.resample!r}")
        if self.convention not in _CONVENTIONS:
            raise ValueError(f"convention must be one of {_CONVENTIONS}, not {self.convention!r}")
        for name in ("resize_to", "crop_size", "scale_to"):
            if (value := getattr(self, name)) is not None:
                object.__setattr__(self, name, (int(value[0]), int(value[1])))
        object.__setattr__(self, "mean", _triple(self.mean))
        object.__setattr__(self, "std", _triple(self.std))
        object.__setattr__(
            self, "_table", _normalize_table(self.rescale_factor, self.mean, self.std)
        )

    @classmethod
    def from_hf(cls, preprocessor_config: Mapping[str, Any]) -> ImageTransform:
        """From the preprocessor_config.json of a transformers CLIP checkpoint."""
        cfg = {key: value for key, value in preprocessor_config.items() if value is not None}
        shortest = resize_to = crop = None
        if cfg.get("do_resize", True):
            size = cfg.get("size", 224)
            if cfg.get("use_square_size"):  # KOSMOS-2, as the transformers processor
                size = {"height": size["shortest_edge"], "width": size["shortest_edge"]}
            shortest, resize_to = _hf_size(size, square=cfg.get("default_to_square", False))
        if cfg.get("do_center_crop", True):
            edge, crop = _hf_size(cfg.get("crop_size", 224), square=True)
            crop = crop or (edge, edge)
        normalize = cfg.get("do_normalize", True)
        resample = cfg.get("resample", Image.Resampling.BICUBIC)
        return cls(
            shortest_edge=shortest,
            resize_to=resize_to,
            crop_size=crop,
            mean=cfg.get("image_mean", OPENAI_CLIP_MEAN) if normalize else (0.0, 0.0, 0.0),
            std=cfg.get("image_std", OPENAI_CLIP_STD) if normalize else (1.0, 1.0, 1.0),
            resample=resample if isinstance(resample, str) else _RESAMPLE_NAMES[int(resample)],
            rescale_factor=cfg.get("rescale_factor", 1 / 255)
            if cfg.get("do_rescale", True)
            else 1.0,
        )

    @classmethod
    def from_open_clip(cls, cfg: Mapping[str, Any]) -> ImageTransform:
        """From open_clip's preprocess_cfg (or Immich's visual/preprocess_cfg.json), eval mode."""
        cfg = cfg.get("preprocess_cfg", cfg)
        size = cfg.get("size") or 224
        h, w = (size, size) if isinstance(size, int) else (size[0], size[-1])
        mode = cfg.get("resize_mode") or "shortest"
        # open_clip uses bilinear when asked for it and bicubic for anything else ("random").
        resample = "bilinear" if cfg.get("interpolation") == "bilinear" else "bicubic"
        mean, std = cfg.get("mean") or OPENAI_CLIP_MEAN, cfg.get("std") or OPENAI_CLIP_STD
        common: dict[str, Any] = {"mean": mean, "std": std, "convention": "torchvision"}
        if mode == "squash":
            return cls(None, (h, w), None, resample=resample, **common)
        if mode == "longest":
            fill = int(cfg.get("fill_color") or 0)
            return cls(None, None, (h, w), resample=resample, scale_to=(h, w), scale_longest=True,
                       fill=fill, **common)  # fmt: skip
        if mode != "shortest":
            raise ValueError(f"unknown open_clip resize_mode {mode!r}")
        if h == w:
            return cls(h, None, (h, w), resample=resample, **common)
        # A non-square target goes through ResizeKeepRatio, which open_clip leaves at bicubic.
        return cls(None, None, (h, w), resample="bicubic", scale_to=(h, w), **common)

    @classmethod
    def from_immich(cls, cfg: Mapping[str, Any]) -> ImageTransform:
        """As Immich's ML service preprocesses an Immich-layout folder (visual/
        preprocess_cfg.json): the shortest side resized and a centre crop, with its
        rounding, whatever `resize_mode` says (see README "Immich")."""
        size = cfg.get("size") or 224
        edge = size if isinstance(size, int) else size[0]
        return cls(
            edge,
            None,
            (edge, edge),
            mean=cfg.get("mean") or OPENAI_CLIP_MEAN,
            std=cfg.get("std") or OPENAI_CLIP_STD,
            resample=str(cfg.get("interpolation") or "bicubic").lower(),
            convention="immich",
        )

    @property
    def output_size(self) -> tuple[int, int]:
        """(h, w) of every output."""
        size = self.crop_size or self.resize_to
        if size is None:
            raise ValueError("the output size depends on the image: no crop and no fixed resize")
        return size

    def draft_size(self) -> int | None:
        """The shortest side JPEG draft mode must keep (2x the target), None when nothing is resized."""
        target = self.shortest_edge or max(self.resize_to or self.scale_to or (0,))
        return 2 * target if target else None

    def __call__(self, image: Image.Image) -> np.ndarray:
        """RGB PIL image in (another mode is converted as the reference does), float32 [3, H, W] out."""
        pixels = self._resize_and_crop(image if image.mode == "RGB" else to_rgb(image))
        return np.stack([self._table[c][pixels[..., c]] for c in range(3)])

    def _resize_and_crop(self, image: Image.Image) -> np.ndarray:
        draft: Draft | None = image.info.get(DRAFT_KEY)
        draft = draft if draft and draft.size == image.size else None
        full_size = draft.full_size if draft else image.size
        box = draft.box if draft else None
        size = self._resized_size(full_size) or (full_size if draft else None)
        if size is None:
            return self._crop(np.asarray(image))
        if self.crop_size is not None and size[0] * size[1] > _MAX_RESIZED_PIXELS:
            return self._resize_crop_region(image, box or (0, 0, *image.size), size)
        return self._crop(np.asarray(image.resize(size, _RESAMPLE[self.resample], box=box)))

    def _resized_size(self, size: tuple[int, int]) -> tuple[int, int] | None:
        """(w, h) after the resize step, rounded as the reference rounds."""
        w, h = size
        if self.shortest_edge is not None:
            short, long = (w, h) if w <= h else (h, w)
            if self.convention == "immich":
                new_long = int((long / short) * self.shortest_edge)
            else:
                new_long = int(self.shortest_edge * long / short)
            return (self.shortest_edge, new_long) if w <= h else (new_long, self.shortest_edge)
        if self.resize_to is not None:
            return self.resize_to[1], self.resize_to[0]
        if self.scale_to is not None:
            ratios = (h / self.scale_to[0], w / self.scale_to[1])
            ratio = max(ratios) if self.scale_longest else min(ratios)
            # max(1, ...): open_clip fails on a 1 x 500 image here; we keep one pixel.
            return max(1, round(w / ratio)), max(1, round(h / ratio))
        return None

    def _crop(self, pixels: np.ndarray) -> np.ndarray:
        if self.crop_size is None:
            return pixels
        (sy, dy, ny), (sx, dx, nx) = self._crop_plan(pixels.shape[:2])
        return self._place(pixels[sy : sy + ny, sx : sx + nx], dy, dx)

    def _resize_crop_region(
        self, image: Image.Image, box: tuple[float, float, float, float], size: tuple[int, int]
    ) -> np.ndarray:
        (sy, dy, ny), (sx, dx, nx) = self._crop_plan((size[1], size[0]))
        sw, sh = (box[2] - box[0]) / size[0], (box[3] - box[1]) / size[1]
        x0, y0 = box[0] + sx * sw, box[1] + sy * sh
        region = (x0, y0, x0 + nx * sw, y0 + ny * sh)
        resized = image.resize((nx, ny), _RESAMPLE[self.resample], box=region)
        return self._place(np.asarray(resized), dy, dx)

    def _crop_plan(self, shape: tuple[int, int]) -> list[tuple[int, int, int]]:
        """Per axis (rows, columns): (source start, destination start, length) of the centre crop."""
        assert self.crop_size is not None
        plan = []
        for n, c in zip(shape, self.crop_size, strict=True):
            if n >= c:
                start = (n - c) // 2 if self.convention != "torchvision" else round((n - c) / 2)
                plan.append((start, 0, c))
            else:
                pad = c - n
                plan.append(
                    (0, (pad + 1) // 2 if self.convention != "torchvision" else pad // 2, n)
                )
        return plan

    def _place(self, pixels: np.ndarray, top: int, left: int) -> np.ndarray:
        """The crop itself, or the crop padded with `fill` where the image is smaller."""
        assert self.crop_size is not None
        if pixels.shape[:2] == self.crop_size:
            return pixels
        canvas = np.full((*self.crop_size, 3), self.fill, dtype=np.uint8)
        canvas[top : top + pixels.shape[0], left : left + pixels.shape[1]] = pixels
        return canvas


def _triple(values: float | Any) -> tuple[float, float, float]:
    if isinstance(values, int | float):
        return (float(values),) * 3
    a, b, c = (float(v) for v in values)
    return a, b, c


def _hf_size(size: Any, *, square: bool) -> tuple[int | None, tuple[int, int] | None]:
    """(shortest_edge, (h, w)) from a transformers size: an int, [h, w] or a dict."""
    if isinstance(size, int):
        return (None, (size, size)) if square else (size, None)
    if isinstance(size, list | tuple):
        return None, (size[0], size[1])
    if set(size) == {"shortest_edge"}:
        return size["shortest_edge"], None
    if set(size) == {"height", "width"}:
        return None, (size["height"], size["width"])
    raise ValueError(
        f"unsupported image size {size!r}: expected an int, shortest_edge or height/width"
    )


def _normalize_table(
    rescale_factor: float, mean: tuple[float, ...], std: tuple[float, ...]
) -> np.ndarray:
    """[3, 256] float32: the normalized value of each uint8 level, rounded as the reference rounds."""
    levels = (np.arange(256, dtype=np.float64) * rescale_factor).astype(np.float32)
    mean32 = np.asarray(mean, dtype=np.float32)[:, None]
    std32 = np.asarray(std, dtype=np.float32)[:, None]
    return (levels[None, :] - mean32) / std32
