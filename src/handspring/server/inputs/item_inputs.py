"""Images, sounds and arrays as requests carry them: base64, data URLs, http(s) URLs,
uploaded bytes. Each modality's bytes get its own checks before they are decoded.

Never a local path: a string that is not a data URL or an http(s) URL is read as
base64, and nothing here opens a file.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from handspring.preprocess.decode import too_large_for_pillow
from handspring.server.config import ServerConfig
from handspring.server.errors import RequestError

_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w.+-]+=[\w.+-]+)*(?P<b64>;base64)?,", re.I
)


_URLSAFE = str.maketrans("-_", "+/")


@dataclass(frozen=True)
class ItemRef:
    """Bytes in hand, or a URL to fetch (only when the server allows it)."""

    item: str  # how errors name it: "input[2]", "images[0]", "upload 'cat.jpg'"
    data: bytes | None = None
    url: str | None = None
    error: RequestError | None = None  # why the request's string could not be read


ImageRef = ItemRef

# How a data URL's media type is named in messages, per modality.
_MEDIA = {"image": "image", "audio": "audio"}


# The base64 of these files' first bytes: a text input that starts so is a file sent as text.
_BASE64_FILE_STARTS = {
    "/9j/": "JPEG image",
    "iVBORw0KGgo": "PNG image",
    "R0lGOD": "GIF image",
    "UklGR": "RIFF file (WebP image or WAV sound)",
    "ZkxhQw": "FLAC sound",
    "T2dnUw": "Ogg sound",
}
_FILE_TEXT_MIN_CHARS = 128  # shorter strings may be words that start like these


def file_sent_as_text(text: str) -> str | None:
    """What a text input really is when it is a data URL or the base64 of a file (`"a PNG
    image"`), so that it is refused rather than embedded as words; None for a text."""
    if text.startswith("data:") and (match := re.match(r"data:([\w.+-]+/[\w.+-]+)", text)):
        media = match.group(1).lower()
        return None if media.startswith("text/") else f"a {media} data URL"
    if len(text) < _FILE_TEXT_MIN_CHARS or any(c.isspace() for c in text[:_FILE_TEXT_MIN_CHARS]):
        return None
    for start, kind in _BASE64_FILE_STARTS.items():
        if text.startswith(start):
            return f"the base64 of a {kind}"
    return None


def refuse_file_as_text(text: str, name: str, param: str) -> None:
    """A 422 naming what a text input really is, when it is a file (see file_sent_as_text)."""
    if (kind := file_sent_as_text(text)) is None:
        return
    modality = "audio" if "sound" in kind or "audio" in kind else "image"
    raise RequestError(
        422,
        f'{name} is {kind}, not a text: send it with "modality": "{modality}" (OpenAI) or '
        "to /api/embed (native)",
        param=param,
    )


def parse_item(text: str, item: str, *, urls_allowed: bool, modality: str = "image") -> ItemRef:
    """A request's string for one non-text item: base64, a data URL, or an http(s) URL."""
    noun = "an image" if modality == "image" else f"{modality} data"
    expected = f"expected {noun} as base64, a data URL or a URL"
    if not isinstance(text, str):
        raise RequestError(422, f"{item}: {expected}")
    if not text.strip():
        raise RequestError(422, f"{item}: the input is empty ({expected})")
    if text.startswith("data:"):
        match = _DATA_URL.match(text)
        if match is None or not match.group("b64"):
            media = _MEDIA.get(modality, "application")
            raise RequestError(
                422, f"{item}: a data URL must be base64 (data:{media}/...;base64,...)"
            )
        return ItemRef(item, data=_b64(text[match.end() :], item, modality))
    lowered = text[:8].lower()
    if lowered.startswith(("http://", "https://")):
        if not urls_allowed:
            raise RequestError(
                422,
                f"{item}: {modality} URLs are not fetched by this server "
                f"(send the {modality} as base64, or start the server with --fetch-urls)",
            )
        return ItemRef(item, url=text)
    if "://" in text[:16]:
        raise RequestError(422, f"{item}: only http and https URLs are fetched")
    return ItemRef(item, data=_b64(text, item, modality))


def parse_item_or_error(
    text: str, item: str, *, urls_allowed: bool, modality: str = "image"
) -> ItemRef:
    """`parse_item`, with what it refuses kept in the reference rather than raised."""
    try:
        return parse_item(text, item, urls_allowed=urls_allowed, modality=modality)
    except RequestError as exc:
        return ItemRef(item, error=exc)


def parse_image(text: str, item: str, *, urls_allowed: bool) -> ItemRef:
    return parse_item(text, item, urls_allowed=urls_allowed, modality="image")


def _b64(text: str, item: str, modality: str) -> bytes:
    # Line breaks (MIME-style base64) and other whitespace are not data: Weaviate's
    # containers decode leniently, and their clients may send them.
    text = "".join(text.split())
    if "-" in text or "_" in text:  # some clients send the URL-safe alphabet
        text = text.translate(_URLSAFE)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(
            422, f"{item}: not valid base64 (and not a data URL or an http(s) URL)"
        ) from None
    if not data:
        raise empty_input(item)
    return data


def empty_input(item: str) -> RequestError:
    """Zero bytes: said as such, not as a decoder's "not an image"."""
    return RequestError(422, f"{item}: the input is empty (0 bytes)")


def check_image(data: bytes, item: str, config: ServerConfig) -> None:
    check_format(data, item, config.image_formats, config.max_pixels)


def check_audio(data: bytes, item: str, config: ServerConfig) -> None:
    """Sizes are checked before decoding; the duration limit is the decoder's, from the
    file's header (see `handspring.preprocess.audio`)."""
    if len(data) > config.max_audio_bytes:
        raise RequestError(
            413, f"{item}: {len(data):,} bytes of audio is over the limit of "
            f"{config.max_audio_bytes:,}"
        )  # fmt: skip


# Checks on a modality's bytes before they are decoded; modalities without one go
# straight to their tower, whose decoder has limits of its own.
BYTE_CHECKS: dict[str, Callable[[bytes, str, ServerConfig], None]] = {
    "image": check_image,
    "audio": check_audio,
}


def check_format(
    data: bytes, item: str, allowed: tuple[str, ...], max_pixels: int | None = None
) -> None:
    """Refuse formats the server does not take, from the header, before decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt = image.format or "unknown"
    except Image.DecompressionBombError as exc:
        raise RequestError(422, f"{item}: {too_large_for_pillow(exc, max_pixels)}") from None
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
