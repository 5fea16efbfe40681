"""Decoding images into RGB PIL images: paths, bytes, PIL images and arrays.

Every failure becomes an ImageError naming the item and a human reason. See
`handspring.preprocess.image` for what the reference does with each mode.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from handspring.errors import ImageError
from handspring.runtime.malloc_tuning import hold_mmap_threshold

ImageInput = str | os.PathLike[str] | bytes | Image.Image | np.ndarray

DEFAULT_MAX_PIXELS = 100_000_000

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
DRAFT_KEY = "handspring.draft"

hold_mmap_threshold()  # large decode buffers give their memory back (see the module)


class Draft(NamedTuple):
    """Geometry of a JPEG decoded at reduced scale, kept in `image.info` for the transform."""

    size: tuple[int, int]  # (w, h) of the decoded image: the geometry holds only for that size
    full_size: tuple[int, int]  # (w, h) at full resolution, after EXIF rotation
    box: tuple[float, float, float, float]  # the region of the small image that is the full one


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
    composite_alpha: bool = True,
) -> Image.Image:
    """Return an RGB image, fully loaded, or raise ImageError(item, reason).

    max_pixels is checked from the header, before decoding; None leaves only Pillow's own
    decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS). draft_shortest: a JPEG is decoded at
    the smallest DCT scale that keeps its shortest side >= this; the transform then resizes from
    the matching box. scale_16bit: see the module notes. composite_alpha: transparency onto
    white, as transformers does; False drops it, as `convert("RGB")` in torchvision-based
    pipelines (open_clip, ImageBind) does.
    """
    rgb = {"scale_16bit": scale_16bit, "composite_alpha": composite_alpha}
    if isinstance(source, np.ndarray):
        return _convert(_from_array(source, item, max_pixels), item, **rgb)
    if isinstance(source, Image.Image):  # the caller's image: never drafted nor modified
        check_pixels(source.size, item, max_pixels)
        load_pixels(source, item)
        return _orient_and_convert(source, item, None, exif_orientation, **rgb)
    with open_image(source, item, max_pixels) as image:
        check_pixels(image.size, item, max_pixels)
        draft = _draft(image, draft_shortest) if draft_shortest else None
        load_pixels(image, item)
        return _orient_and_convert(image, item, draft, exif_orientation, **rgb)


def _orient_and_convert(
    image: Image.Image,
    item: str,
    draft: Draft | None,
    exif_orientation: bool,
    **rgb: bool,
) -> Image.Image:
    method = _EXIF_TRANSPOSE.get(_orientation(image)) if exif_orientation else None
    if method is not None:
        if draft is not None:
            draft = _transpose_draft(draft, method, image.size)
        # Pillow's own function also drops the tag, so the result is never rotated twice.
        image = ImageOps.exif_transpose(image)
    converted = _convert(image, item, **rgb)
    if draft is not None:
        converted.info[DRAFT_KEY] = draft
    return converted


def open_image(source: ImageInput, item: str, max_pixels: int | None) -> Image.Image:
    if isinstance(source, bytes | bytearray | memoryview):
        fp: str | io.BytesIO = io.BytesIO(source)
    elif isinstance(source, str | os.PathLike):
        fp = str(os.fspath(source))
        _refuse_special_file(fp, item)
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
        raise ImageError(item, too_large_for_pillow(exc, max_pixels), str(exc)) from exc
    except FileNotFoundError as exc:
        raise ImageError(item, "file not found") from exc
    except IsADirectoryError as exc:
        raise ImageError(item, "is a directory, not an image file") from exc
    except OSError as exc:
        if exc.errno is None:  # Pillow's parse errors are OSErrors without an errno
            raise ImageError(item, "corrupt image header", str(exc)) from exc
        raise ImageError(item, "cannot read the file", exc.strerror or str(exc)) from exc
    except Exception as exc:  # a decoder's parse error in the header
        raise ImageError(item, "corrupt image header", f"{type(exc).__name__}: {exc}") from exc


def _refuse_special_file(path: str, item: str) -> None:
    # Opening a FIFO waits for a writer that may never come; a device reads forever.
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # Image.open says why (not found, permission...)
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise ImageError(item, f"not a regular file ({kind})")


def _unknown_format_reason(fp: str | io.BytesIO) -> str:
    if isinstance(fp, str):
        with open(fp, "rb") as f:
            head = f.read(64)
    else:
        head = fp.getvalue()[:64]
    if not head:
        return f"empty {'file' if isinstance(fp, str) else 'data'} (0 bytes)"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        if "HEIF" in Image.ID:  # pillow-heif is registered and could not read it
            return "corrupt or truncated HEIC/HEIF image"
        return "HEIC/HEIF image: Pillow reads it only with the pillow-heif plugin registered"
    if len(head) < 16:
        return f"not an image: only {len(head)} bytes ({head!r})"
    if all(32 <= byte < 127 or byte in b"\t\n\r" for byte in head):
        return f"not an image: looks like a text file (starts with {head[:24]!r})"
    return "not an image, or in a format Pillow cannot read"


def too_large_for_pillow(
    exc: Image.DecompressionBombError | Image.DecompressionBombWarning, max_pixels: int | None
) -> str:
    """The reason for an image Pillow refused from its header size: that size, and the
    lowest limit it is over (ours when it is the lower, as `check_pixels` words it)."""
    pillow = Image.MAX_IMAGE_PIXELS or 0
    if isinstance(exc, Image.DecompressionBombError):
        pillow *= 2  # Pillow warns past its limit and refuses past twice that
    if max_pixels is not None and max_pixels < pillow:
        limit = f"the limit of {max_pixels:,} pixels"
    else:
        limit = f"Pillow's decompression-bomb limit of {pillow:,} pixels"
    size = _size_pillow_checked(exc)
    if size is None:
        return f"too large: over {limit}"
    w, h = size
    return f"too large: {w}x{h} = {w * h:,} pixels is over {limit}"


def _size_pillow_checked(exc: BaseException) -> tuple[int, int] | None:
    # Pillow's message gives only a pixel count; the (w, h) it checked is a local of the
    # check that raised, which is in the traceback.
    traceback = exc.__traceback__
    while traceback is not None:
        frame = traceback.tb_frame
        if frame.f_code.co_name == "_decompression_bomb_check":
            size = frame.f_locals.get("size")
            if isinstance(size, tuple) and len(size) == 2 and all(isinstance(n, int) for n in size):
                return size
        traceback = traceback.tb_next
    return None


def check_pixels(size: tuple[int, ...], item: str, max_pixels: int | None) -> None:
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        limit = f"over the limit of {max_pixels:,} pixels"
        raise ImageError(item, f"too large: {w}x{h} = {w * h:,} pixels is {limit}")


def load_pixels(image: Image.Image, item: str) -> None:
    try:
        image.load()
    except MemoryError:
        raise
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        if "truncated" in text.lower():
            raise ImageError(item, "truncated: the image data ends early", text) from exc
        raise ImageError(item, "corrupt image data", text) from exc


def _draft(image: Image.Image, shortest: int) -> Draft | None:
    """Ask a JPEG decoder for the smallest DCT scale (1/2, 1/4, 1/8) keeping `shortest` pixels."""
    w, h = image.size
    scale = next((s for s in (8, 4, 2) if min(w, h) / s >= shortest), 1)
    if scale == 1:
        return None
    # Pillow picks the largest scale s with both sides // request >= s: exactly `scale` here.
    result = image.draft("RGB", (w // scale, h // scale))
    if result is None or image.size == (w, h):
        return None
    return Draft(image.size, (w, h), result[1])


def _transpose_draft(draft: Draft, method: Image.Transpose, size: tuple[int, int]) -> Draft:
    move = _MOVE_POINT[method]
    (x0, y0), (x1, y1) = (move(x, y, *size) for x, y in (draft.box[:2], draft.box[2:]))
    box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    if method in _SWAPS_SIDES:
        return Draft(size[::-1], draft.full_size[::-1], box)
    return Draft(size, draft.full_size, box)


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
    check_pixels(array.shape[1::-1], item, max_pixels)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    return Image.fromarray(np.ascontiguousarray(array))


def _convert(image: Image.Image, item: str, **rgb: bool) -> Image.Image:
    try:
        return to_rgb(image, **rgb)
    except (ValueError, OSError) as exc:
        raise ImageError(item, f"cannot convert image mode {image.mode} to RGB", str(exc)) from exc


def to_rgb(
    image: Image.Image, *, scale_16bit: bool = False, composite_alpha: bool = True
) -> Image.Image:
    """As transformers' convert_to_rgb: alpha composited onto white, the rest `convert("RGB")`;
    without `composite_alpha`, everything `convert("RGB")`, as torchvision pipelines do."""
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if image.mode == "RGB" and not has_alpha:
        return image
    if scale_16bit and image.mode.startswith("I;16"):
        image, has_alpha = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8)), False
    if has_alpha and composite_alpha:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")
