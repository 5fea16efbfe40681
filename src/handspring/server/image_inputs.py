"""Images as requests carry them: base64, data URLs, http(s) URLs, uploaded bytes.

Never a local path: a string that is not a data URL or an http(s) URL is read as
base64, and nothing here opens a file.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from handspring.server.errors import RequestError

_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w.+-]+=[\w.+-]+)*(?P<b64>;base64)?,", re.I
)


_URLSAFE = str.maketrans("-_", "+/")


@dataclass(frozen=True)
class ImageRef:
    """Bytes in hand, or a URL to fetch (only when the server allows it)."""

    item: str  # how errors name it: "input[2]", "images[0]", "upload 'cat.jpg'"
    data: bytes | None = None
    url: str | None = None


def parse_image(text: str, item: str, *, urls_allowed: bool) -> ImageRef:
    if not isinstance(text, str) or not text:
        raise RequestError(422, f"{item}: expected an image as base64, a data URL or a URL")
    if text.startswith("data:"):
        match = _DATA_URL.match(text)
        if match is None or not match.group("b64"):
            raise RequestError(
                422, f"{item}: a data URL must be base64 (data:image/...;base64,...)"
            )
        return ImageRef(item, data=_b64(text[match.end() :], item))
    lowered = text[:8].lower()
    if lowered.startswith(("http://", "https://")):
        if not urls_allowed:
            raise RequestError(
                422,
                f"{item}: image URLs are not fetched by this server "
                "(send the image as base64, or start the server with --fetch-urls)",
            )
        return ImageRef(item, url=text)
    if "://" in text[:16]:
        raise RequestError(422, f"{item}: only http and https URLs are fetched")
    return ImageRef(item, data=_b64(text, item))


def _b64(text: str, item: str) -> bytes:
    text = text.strip()
    if "-" in text or "_" in text:  # some clients send the URL-safe alphabet
        text = text.translate(_URLSAFE)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(
            422, f"{item}: not valid base64 (and not a data URL or an http(s) URL)"
        ) from None
    if not data:
        raise RequestError(422, f"{item}: the image is empty")
    return data


def check_format(data: bytes, item: str, allowed: tuple[str, ...]) -> None:
    """Refuse formats the server does not take, from the header, before decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt = image.format or "unknown"
    except Image.DecompressionBombError:
        raise RequestError(422, f"{item}: too large: over the decoder's pixel limit") from None
    except UnidentifiedImageError:
        raise RequestError(
            422, f"{item}: not an image, or in a format that is not supported"
        ) from None
    except Exception:
        raise RequestError(422, f"{item}: corrupt image header") from None
    if fmt.upper() not in allowed:
        raise RequestError(
            422, f"{item}: {fmt} images are not accepted (accepted: {', '.join(allowed)})"
        )
