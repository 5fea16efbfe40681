"""What the index records of a photo besides its embedding: displayed size, every
EXIF tag as JSON, the time it was taken, and where.

Timestamps follow the original photo-search tool: EXIF DateTimeOriginal, then
CreateDate (DateTimeDigitized), then ModifyDate (DateTime), and failing those a
date in the file name. Times stay naive: what the camera's clock said.
"""

from __future__ import annotations

import datetime
import io
import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from PIL import ExifTags, Image, TiffImagePlugin

from handspring.photos.scanning.filename_dates import date_from_file_name

_ORIENTATION = 0x0112
_POINTERS = {int(ExifTags.IFD.Exif), int(ExifTags.IFD.GPSInfo), int(ExifTags.IFD.Interop)}
_TIMESTAMP_TAGS = (  # (IFD, tag) in order of preference
    (ExifTags.IFD.Exif, ExifTags.Base.DateTimeOriginal),
    (ExifTags.IFD.Exif, ExifTags.Base.DateTimeDigitized),
    (None, ExifTags.Base.DateTime),
)
# Binary tags beyond this (MakerNote often runs to tens of KB of vendor data) are
# recorded by size only, so one photo cannot bloat the index.
MAX_BINARY_BYTES = 1024
_EXIF_DATE = re.compile(
    r"^\s*(\d{4})[:\-/](\d{1,2})[:\-/](\d{1,2})(?:[ T](\d{1,2}):(\d{1,2})(?::(\d{1,2}))?)?"
)
_CHARSET_PREFIXES = (b"ASCII\x00\x00\x00", b"UNICODE\x00", b"JIS\x00\x00\x00\x00\x00", b"\x00" * 8)

_heif_registered = False


def enable_heif() -> bool:
    """Let Pillow open HEIC/HEIF through pillow-heif (once per process). False if it
    is not installed: such files are then recorded with a clear error."""
    global _heif_registered
    if not _heif_registered:
        try:
            from pillow_heif import register_heif_opener
        except ImportError:
            return False
        register_heif_opener()
        _heif_registered = True
    return True


@dataclass(frozen=True)
class ImageMetadata:
    width: int | None = None  # as displayed, after EXIF orientation
    height: int | None = None
    taken_at: datetime.datetime | None = None
    gps: tuple[float, float] | None = None
    exif: dict[str, Any] = field(default_factory=dict)


def read_metadata(data: bytes, path: str) -> ImageMetadata:
    """Metadata of an encoded image. Never raises: what cannot be read is left out
    (the embedder reports an unreadable image with its reason)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            exif = _exif_of(image)
    except Exception:
        return ImageMetadata(taken_at=date_from_file_name(path))
    if exif is None:
        return ImageMetadata(width, height, date_from_file_name(path))
    if exif.get(_ORIENTATION) in (5, 6, 7, 8):  # rotated a quarter turn when displayed
        width, height = height, width
    return ImageMetadata(
        width=width,
        height=height,
        taken_at=_taken_at(exif) or date_from_file_name(path),
        gps=_gps(exif),
        exif=exif_to_json(exif),
    )


def _exif_of(image: Image.Image) -> Image.Exif | None:
    try:
        exif = image.getexif()
    except Exception:  # a corrupt EXIF block costs us the tags, not the photo
        return None
    return exif if exif else None


def exif_to_json(exif: Image.Exif) -> dict[str, Any]:
    """Every tag by its readable name: IFD0 and the Exif IFD flat, GPS and
    Interop nested. Lists stay lists, rationals become floats, bytes text or hex."""
    out: dict[str, Any] = {}
    for tag, value in exif.items():
        if tag not in _POINTERS:
            out[_name(tag, ExifTags.TAGS)] = jsonable(value)
    for ifd, names, key in (
        (ExifTags.IFD.Exif, ExifTags.TAGS, None),
        (ExifTags.IFD.GPSInfo, ExifTags.GPSTAGS, "GPSInfo"),
        (ExifTags.IFD.Interop, ExifTags.TAGS, "Interop"),
    ):
        tags = _ifd(exif, ifd)
        converted = {_name(t, names): jsonable(v) for t, v in tags.items() if t not in _POINTERS}
        if key is None:
            out.update(converted)
        elif converted:
            out[key] = converted
    return out


def _ifd(exif: Image.Exif, ifd: int) -> dict[int, Any]:
    try:  # Pillow finds the Interop IFD through the Exif IFD itself
        return dict(exif.get_ifd(ifd))
    except Exception:
        return {}


def _name(tag: int, names: dict[int, str]) -> str:
    return names.get(tag, f"Tag0x{tag:04X}")


def jsonable(value: Any) -> Any:
    """A JSON-able copy of an EXIF value (NaN and 0/0 rationals become None)."""
    if isinstance(value, TiffImagePlugin.IFDRational | Fraction):
        denominator = value.denominator
        return None if denominator == 0 else _finite(float(value.numerator) / denominator)
    if isinstance(value, bool | int | str):
        return value.replace("\x00", "").rstrip() if isinstance(value, str) else value
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, bytes | bytearray):
        return _bytes(bytes(value))
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _bytes(raw: bytes) -> str:
    if len(raw) > MAX_BINARY_BYTES:
        return f"<{len(raw)} bytes>"
    body = raw
    for prefix in _CHARSET_PREFIXES:  # UserComment: an 8-byte charset, then the text
        if raw.startswith(prefix) and len(raw) > 8:
            body = raw[8:]
            if prefix.startswith(b"UNICODE"):
                try:
                    return body.decode("utf-16").rstrip("\x00").rstrip()
                except UnicodeDecodeError:
                    break
            break
    try:
        text = body.decode("utf-8").rstrip("\x00")
    except UnicodeDecodeError:
        return raw.hex()
    if all(ch.isprintable() or ch in "\t\r\n" for ch in text):
        return text.rstrip()
    return raw.hex()


def parse_exif_date(value: Any) -> datetime.datetime | None:
    """'2023:07:04 15:30:12' (and the variants cameras write) -> naive datetime;
    None for blanks and zeros ('0000:00:00 00:00:00')."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    match = _EXIF_DATE.match(value.replace("\x00", ""))
    if not match:
        return None
    numbers = [int(g) if g else 0 for g in match.groups()]
    try:
        return datetime.datetime(*numbers)  # type: ignore[arg-type, misc]
    except ValueError:
        return None


def _taken_at(exif: Image.Exif) -> datetime.datetime | None:
    exif_ifd = _ifd(exif, ExifTags.IFD.Exif)
    for ifd, tag in _TIMESTAMP_TAGS:
        value = (exif_ifd if ifd is not None else exif).get(tag)
        if (moment := parse_exif_date(value)) is not None:
            return moment
    return None


def _gps(exif: Image.Exif) -> tuple[float, float] | None:
    gps = _ifd(exif, ExifTags.IFD.GPSInfo)
    lat = _degrees(gps.get(ExifTags.GPS.GPSLatitude), gps.get(ExifTags.GPS.GPSLatitudeRef), "S")
    lon = _degrees(gps.get(ExifTags.GPS.GPSLongitude), gps.get(ExifTags.GPS.GPSLongitudeRef), "W")
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    if lat == 0 and lon == 0:  # what devices without a fix write
        return None
    return (lat, lon)


def _degrees(dms: Any, ref: Any, negative: str) -> float | None:
    if dms is None:
        return None
    try:
        parts = [float(x) for x in (dms if isinstance(dms, tuple | list) else (dms,))]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not parts or len(parts) > 3 or not all(math.isfinite(p) for p in parts):
        return None
    value = sum(p / 60**i for i, p in enumerate(parts))
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "replace")
    if isinstance(ref, str) and ref.strip().upper().startswith(negative):
        value = -value
    return round(value, 7)
