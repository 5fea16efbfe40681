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

import io
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from handspring.errors import ImageError

ImageInput = str | os.PathLike[str] | bytes | Image.Image | np.ndarray

DEFAULT_MAX_PIXELS = 100_000_000
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_RESAMPLE = {
    name: Image.Resampling[name.upper()]
    for name in ("nearest", "lanczos", "bilinear", "bicubic", "box", "hamming")
}
_RESAMPLE_NAMES = {int(code): name for name, code in _RESAMPLE.items()}
_CONVENTIONS = ("transformers", "torchvision")

# A 1 x 100000 image resized to a shortest side of 224 would take 15 GB. Past the decoding limit
# only the part that survives the crop is resized: same geometry, within an 8-bit level.
_MAX_RESIZED_PIXELS = DEFAULT_MAX_PIXELS

_ORIENTATION_TAG = 0x0112
_EXIF_TRANSPOSE = {  # what PIL.ImageOps.exif_transpose does for each orientation
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Where each transposition sends a point (x, y) of a w x h image.
_MOVE_POINT: dict[Image.Transpose, Callable[[float, float, int, int], tuple[float, float]]] = {
    Image.Transpose.FLIP_LEFT_RIGHT: lambda x, y, w, h: (w - x, y),
    Image.Transpose.FLIP_TOP_BOTTOM: lambda x, y, w, h: (x, h - y),
    Image.Transpose.ROTATE_180: lambda x, y, w, h: (w - x, h - y),
    Image.Transpose.ROTATE_90: lambda x, y, w, h: (y, w - x),
    Image.Transpose.ROTATE_270: lambda x, y, w, h: (h - y, x),
    Image.Transpose.TRANSPOSE: lambda x, y, w, h: (y, x),
    Image.Transpose.TRANSVERSE: lambda x, y, w, h: (h - y, w - x),
}
_SWAPS_SIDES = {Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270, Image.Transpose.TRANSPOSE,
                Image.Transpose.TRANSVERSE}  # fmt: skip
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1")
_DRAFT_KEY = "handspring.draft"


class _Draft(NamedTuple):
    """Geometry of a JPEG decoded at reduced scale, kept in `image.info` for the transform."""

    size: tuple[int, int]  # (w, h) of the decoded image: the geometry holds only for that size
    full_size: tuple[int, int]  # (w, h) at full resolution, after EXIF rotation
    box: tuple[float, float, float, float]  # the region of the small image that is the full one


@dataclass(frozen=True)
class ImageTransform:
    """Resize -> centre crop -> rescale -> normalize, producing float32 [3, H, W].

    Beyond the transformers fields: `scale_to` (h, w) scales by one rounded ratio so the image
    covers that box, or fits inside it with `scale_longest` (open_clip's ResizeKeepRatio); `fill`
    pads a crop larger than the image; `convention` picks the crop rounding of "transformers" or
    "torchvision" (open_clip).
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
        pixels = self._resize_and_crop(image if image.mode == "RGB" else _to_rgb(image))
        return np.stack([self._table[c][pixels[..., c]] for c in range(3)])

    def _resize_and_crop(self, image: Image.Image) -> np.ndarray:
        draft: _Draft | None = image.info.get(_DRAFT_KEY)
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
                start = (n - c) // 2 if self.convention == "transformers" else round((n - c) / 2)
                plan.append((start, 0, c))
            else:
                pad = c - n
                plan.append(
                    (0, (pad + 1) // 2 if self.convention == "transformers" else pad // 2, n)
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


def describe_item(source: ImageInput, index: int) -> str:
    """A name for error messages: the path, or `<bytes #3>`, `<PIL image #3>`, `<array #3>`."""
    if isinstance(source, str | os.PathLike):
        return str(os.fspath(source))
    if isinstance(source, bytes | bytearray | memoryview):
        kind = "bytes"
    elif isinstance(source, Image.Image):
        kind = "PIL image"
    else:
        kind = "array" if isinstance(source, np.ndarray) else type(source).__name__
    return f"<{kind} #{index}>"


def decode_image(
    source: ImageInput,
    *,
    item: str,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    exif_orientation: bool = True,
    draft_shortest: int | None = None,
    scale_16bit: bool = False,
) -> Image.Image:
    """Return an RGB image, fully loaded, or raise ImageError(item, reason).

    max_pixels is checked from the header, before decoding; None leaves only Pillow's own
    decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS). draft_shortest: a JPEG is decoded at
    the smallest DCT scale that keeps its shortest side >= this; the transform then resizes from
    the matching box. scale_16bit: see the module notes.
    """
    if isinstance(source, np.ndarray):
        return _convert(_from_array(source, item, max_pixels), item, scale_16bit)
    if isinstance(source, Image.Image):  # the caller's image: never drafted nor modified
        _check_pixels(source.size, item, max_pixels)
        _load(source, item)
        return _orient_and_convert(source, item, None, exif_orientation, scale_16bit)
    with _open(source, item, max_pixels) as image:
        _check_pixels(image.size, item, max_pixels)
        draft = _draft(image, draft_shortest) if draft_shortest else None
        _load(image, item)
        return _orient_and_convert(image, item, draft, exif_orientation, scale_16bit)


def _orient_and_convert(
    image: Image.Image, item: str, draft: _Draft | None, exif_orientation: bool, scale_16bit: bool
) -> Image.Image:
    method = _EXIF_TRANSPOSE.get(_orientation(image)) if exif_orientation else None
    if method is not None:
        if draft is not None:
            draft = _transpose_draft(draft, method, image.size)
        # Pillow's own function also drops the tag, so the result is never rotated twice.
        image = ImageOps.exif_transpose(image)
    rgb = _convert(image, item, scale_16bit)
    if draft is not None:
        rgb.info[_DRAFT_KEY] = draft
    return rgb


def _open(source: ImageInput, item: str, max_pixels: int | None) -> Image.Image:
    if isinstance(source, bytes | bytearray | memoryview):
        fp: str | io.BytesIO = io.BytesIO(source)
    elif isinstance(source, str | os.PathLike):
        fp = str(os.fspath(source))
    else:
        expected = "expected a path, bytes, a PIL image or a numpy array"
        raise ImageError(item, f"unsupported input type {type(source).__name__}: {expected}")
    try:
        with warnings.catch_warnings():
            # With max_pixels our own check (from the header) decides; without it, Pillow's warning
            # level becomes an error too rather than a message on stderr.
            action = "ignore" if max_pixels is not None else "error"
            warnings.simplefilter(action, Image.DecompressionBombWarning)
            return Image.open(fp)
    except UnidentifiedImageError as exc:
        raise ImageError(item, _unknown_format_reason(fp)) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(
            item, f"too large: over Pillow's decompression-bomb limit ({exc})"
        ) from exc
    except FileNotFoundError as exc:
        raise ImageError(item, "file not found") from exc
    except IsADirectoryError as exc:
        raise ImageError(item, "is a directory, not an image file") from exc
    except OSError as exc:
        raise ImageError(item, f"cannot read the file ({exc.strerror or exc})") from exc
    except Exception as exc:  # a decoder's parse error in the header
        raise ImageError(item, f"corrupt image header ({type(exc).__name__}: {exc})") from exc


def _unknown_format_reason(fp: str | io.BytesIO) -> str:
    if isinstance(fp, str):
        with open(fp, "rb") as f:
            head = f.read(64)
    else:
        head = fp.getvalue()[:64]
    if not head:
        return f"empty {'file' if isinstance(fp, str) else 'data'} (0 bytes)"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "HEIC/HEIF image: Pillow reads it only with the pillow-heif plugin registered"
    if all(32 <= byte < 127 or byte in b"\t\n\r" for byte in head):
        return f"not an image: looks like a text file (starts with {head[:24]!r})"
    return "not an image, or in a format Pillow cannot read"


def _check_pixels(size: tuple[int, ...], item: str, max_pixels: int | None) -> None:
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        limit = f"over the limit of {max_pixels:,} pixels"
        raise ImageError(item, f"too large: {w}x{h} = {w * h:,} pixels is {limit}")


def _load(image: Image.Image, item: str) -> None:
    try:
        image.load()
    except MemoryError:
        raise
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        if "truncated" in text.lower():
            raise ImageError(item, f"truncated: the image data ends early ({text})") from exc
        raise ImageError(item, f"corrupt image data ({text})") from exc


def _draft(image: Image.Image, shortest: int) -> _Draft | None:
    """Ask a JPEG decoder for the smallest DCT scale (1/2, 1/4, 1/8) keeping `shortest` pixels."""
    w, h = image.size
    scale = next((s for s in (8, 4, 2) if min(w, h) / s >= shortest), 1)
    if scale == 1:
        return None
    # Pillow picks the largest scale s with both sides // request >= s: exactly `scale` here.
    result = image.draft("RGB", (w // scale, h // scale))
    if result is None or image.size == (w, h):
        return None
    return _Draft(image.size, (w, h), result[1])


def _transpose_draft(draft: _Draft, method: Image.Transpose, size: tuple[int, int]) -> _Draft:
    move = _MOVE_POINT[method]
    (x0, y0), (x1, y1) = (move(x, y, *size) for x, y in (draft.box[:2], draft.box[2:]))
    box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    if method in _SWAPS_SIDES:
        return _Draft(size[::-1], draft.full_size[::-1], box)
    return _Draft(size, draft.full_size, box)


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # a corrupt EXIF block only costs us the rotation
        return 1


def _from_array(array: np.ndarray, item: str, max_pixels: int | None) -> Image.Image:
    shape_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))
    if array.dtype != np.uint8 or not shape_ok or array.size == 0:
        expected = "expected uint8 H x W (gray), H x W x 3 (RGB) or H x W x 4 (RGBA)"
        raise ImageError(item, f"unsupported array {array.dtype} {array.shape}: {expected}")
    _check_pixels(array.shape[1::-1], item, max_pixels)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    return Image.fromarray(np.ascontiguousarray(array))


def _convert(image: Image.Image, item: str, scale_16bit: bool) -> Image.Image:
    try:
        return _to_rgb(image, scale_16bit=scale_16bit)
    except (ValueError, OSError) as exc:
        raise ImageError(item, f"cannot convert image mode {image.mode} to RGB ({exc})") from exc


def _to_rgb(image: Image.Image, *, scale_16bit: bool = False) -> Image.Image:
    """As transformers' convert_to_rgb: alpha composited onto white, the rest `convert("RGB")`."""
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if image.mode == "RGB" and not has_alpha:
        return image
    if scale_16bit and image.mode.startswith("I;16"):
        image, has_alpha = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8)), False
    if has_alpha:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")
