"""The few EXIF facts a person reads in a photo viewer (camera, lens, exposure), written
the way cameras and photo apps show them, from the tags the index keeps as JSON."""

from __future__ import annotations

from fractions import Fraction
from typing import Any


def camera(exif: dict[str, Any]) -> str | None:
    """'Canon EOS 5D Mark IV': the model, after the make unless the model names it."""
    make, model = _text(exif.get("Make")), _text(exif.get("Model"))
    if make and model and model.lower().startswith(make.split()[0].lower()):
        return model
    return " ".join(part for part in (make, model) if part) or None


def lens(exif: dict[str, Any]) -> str | None:
    make, model = _text(exif.get("LensMake")), _text(exif.get("LensModel"))
    if make and model and model.lower().startswith(make.lower()):
        return model
    return " ".join(part for part in (make, model) if part) or None


def exposure(exif: dict[str, Any]) -> str | None:
    """'1/250 s · f/2.8 · ISO 100 · 50 mm (75 mm in 35 mm terms)'."""
    parts = []
    if (seconds := _number(exif.get("ExposureTime"))) and seconds > 0:
        parts.append(_shutter(seconds))
    if (aperture := _number(exif.get("FNumber"))) and aperture > 0:
        parts.append(f"f/{aperture:.1f}".replace(".0", ""))
    iso = exif.get("ISOSpeedRatings", exif.get("PhotographicSensitivity"))
    if isinstance(iso, list):
        iso = iso[0] if iso else None
    if (speed := _number(iso)) and speed > 0:
        parts.append(f"ISO {speed:g}")
    if (focal := _number(exif.get("FocalLength"))) and focal > 0:
        full_frame = _number(exif.get("FocalLengthIn35mmFilm"))
        text = f"{focal:g} mm"
        if full_frame and round(full_frame) != round(focal):
            text += f" ({full_frame:g} mm in 35 mm terms)"
        parts.append(text)
    return " · ".join(parts) or None


def _shutter(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:g} s"
    fraction = Fraction(seconds).limit_denominator(100_000)
    if fraction.numerator == 1:
        return f"1/{fraction.denominator} s"
    return f"1/{round(1 / seconds)} s"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = " ".join(value.split())
    return value or None
