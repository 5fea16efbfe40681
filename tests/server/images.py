"""Encoded test images for request bodies."""

from __future__ import annotations

import base64

from PIL import Image

from tests.support.images import encoded, photo_array


def png_bytes(seed: int, size: tuple[int, int] = (40, 56), fmt: str = "PNG") -> bytes:
    return encoded(Image.fromarray(photo_array(*size, seed=seed)), fmt)


def png_b64(seed: int, size: tuple[int, int] = (40, 56), fmt: str = "PNG") -> str:
    return base64.b64encode(png_bytes(seed, size, fmt)).decode()
