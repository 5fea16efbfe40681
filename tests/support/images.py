"""Test images made on the fly: photo-like content in every mode and container we read.

Nothing binary is committed; every image comes from a seeded generator, so a failure
reproduces on any machine.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ORIENTATION_TAG = 0x0112


def photo_array(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 H x W x 3 with the structure of a photo: gradients, shapes, edges and sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y /= max(height - 1, 1)
    x /= max(width - 1, 1)
    base = np.stack(
        [200 * x + 30, 180 * y + 40 * np.sin(9 * x), 120 * (1 - x) * (1 - y) + 60], axis=-1
    )
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, x1 = sorted(rng.integers(0, max(width, 2), 2))
        y0, y1 = sorted(rng.integers(0, max(height, 2), 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
    noise = rng.normal(0, 6, (height, width, 3))
    return np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)


def alpha_array(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 H x W alpha with fully clear, fully opaque and partial regions."""
    rng = np.random.default_rng(seed + 1000)
    alpha = np.tile(np.linspace(0, 255, width, dtype=np.float32), (height, 1))
    alpha[: height // 3] = 0
    alpha[-height // 4 :] = 255
    return np.clip(alpha + rng.normal(0, 20, alpha.shape), 0, 255).astype(np.uint8)


def save(image: Image.Image, path: Path, **params: object) -> Path:
    image.save(path, **params)
    return path


def jpeg(
    path: Path,
    height: int,
    width: int,
    *,
    seed: int = 0,
    orientation: int | None = None,
    quality: int = 90,
    progressive: bool = False,
) -> Path:
    """An RGB JPEG, with the EXIF orientation tag when given."""
    image = Image.fromarray(photo_array(height, width, seed))
    params: dict[str, object] = {"quality": quality, "progressive": progressive}
    if orientation is not None:
        exif = Image.Exif()
        exif[ORIENTATION_TAG] = orientation
        params["exif"] = exif.tobytes()
    return save(image, path, format="JPEG", **params)


def cmyk_jpeg(path: Path, height: int, width: int, seed: int = 0) -> Path:
    return save(
        Image.fromarray(photo_array(height, width, seed)).convert("CMYK"), path, format="JPEG"
    )


def png_rgba(path: Path, height: int, width: int, seed: int = 0) -> Path:
    rgba = np.dstack([photo_array(height, width, seed), alpha_array(height, width, seed)])
    return save(Image.fromarray(rgba), path, format="PNG")


def png_la(path: Path, height: int, width: int, seed: int = 0) -> Path:
    gray = Image.fromarray(photo_array(height, width, seed)).convert("L")
    la = Image.merge("LA", (gray, Image.fromarray(alpha_array(height, width, seed))))
    return save(la, path, format="PNG")


def png_gray(path: Path, height: int, width: int, seed: int = 0) -> Path:
    return save(Image.fromarray(photo_array(height, width, seed)).convert("L"), path, format="PNG")


def png_palette(path: Path, height: int, width: int, *, transparent: bool, seed: int = 0) -> Path:
    image = Image.fromarray(photo_array(height, width, seed)).quantize(64)
    params: dict[str, object] = {"transparency": 0} if transparent else {}
    return save(image, path, format="PNG", **params)


def png_16bit(path: Path, height: int, width: int, seed: int = 0) -> Path:
    """16-bit grayscale: Pillow opens it as I;16."""
    gray = np.asarray(Image.fromarray(photo_array(height, width, seed)).convert("L"), np.uint16)
    return save(Image.fromarray(gray * 257), path, format="PNG")


def bilevel_png(path: Path, height: int, width: int, seed: int = 0) -> Path:
    return save(Image.fromarray(photo_array(height, width, seed)).convert("1"), path, format="PNG")


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def png_photo(path: Path, height: int, width: int, seed: int) -> Path:
    """A lossless photo-like PNG (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo_array(height, width, seed)).save(path, format="PNG")
    return path
