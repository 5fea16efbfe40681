"""Thumbnails for the web UI: photos resized on the server, upright as their EXIF
says, and cached on disk by content (sha256) and size.

Keying by content rather than by path or id means a moved photo keeps its
thumbnail and a changed one never shows a stale picture. Requested sizes are
rounded up to a few fixed sizes so a client cannot fill the cache with one
file per pixel width.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from PIL import Image

from handspring.errors import ImageError
from handspring.preprocess.decode import DEFAULT_MAX_PIXELS, decode_image

THUMBNAIL_SIZES = (128, 256, 512, 1024, 2048)  # longest side, in pixels
JPEG_QUALITY = 85
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _register_heif() -> None:
    try:
        import pillow_heif
    except ImportError:  # HEIC photos then fail with a message naming the missing plugin
        return
    pillow_heif.register_heif_opener()


_register_heif()


def bucket_size(requested: int) -> int:
    """The smallest cached size that is at least `requested` (the largest if none is)."""
    if requested < 1:
        raise ValueError(f"thumbnail size must be a positive number of pixels, got {requested}")
    return next((s for s in THUMBNAIL_SIZES if s >= requested), THUMBNAIL_SIZES[-1])


def render_thumbnail(
    source: Path, size: int, *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """An RGB image of `source` whose longest side is at most `size`, upright.

    Raises ImageError naming the file and the reason (missing, corrupt, over the
    pixel limit, ...). JPEGs decode at reduced DCT scale when that still leaves
    at least `size` pixels, which makes large photos several times cheaper.
    """
    image = decode_image(
        source,
        item=str(source),
        max_pixels=max_pixels,
        exif_orientation=True,
        draft_shortest=size,
    )
    # reducing_gap: a cheap box reduction first, then Lanczos over the last 3x.
    image.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return image


class ThumbnailCache:
    """JPEG thumbnails under `folder`, one file per (sha256, size), written atomically."""

    def __init__(
        self,
        folder: Path,
        *,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        quality: int = JPEG_QUALITY,
    ) -> None:
        self.folder = Path(folder)
        self.max_pixels = max_pixels
        self.quality = quality

    def path_for(self, sha256: str, size: int) -> Path:
        # The hash becomes a file name: accept only what a sha256 hex digest looks like.
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.folder / sha256[:2] / f"{sha256}-{size}.jpg"

    def get(self, source: Path, sha256: str, size: int) -> Path:
        """The cached thumbnail of `source` (whose content hash is `sha256`), made if missing.

        `size` is rounded up with `bucket_size`. Raises ImageError if the photo cannot be read.
        """
        size = bucket_size(size)
        target = self.path_for(sha256, size)
        if target.is_file():
            return target
        image = render_thumbnail(Path(source), size, max_pixels=self.max_pixels)
        self._write_atomically(image, target)
        return target

    def _write_atomically(self, image: Image.Image, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written beside the target and renamed, so a reader (or a second request
        # making the same thumbnail) never sees half a file.
        fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".jpg")
        try:
            with os.fdopen(fd, "wb") as out:
                params: dict[str, object] = {"quality": self.quality, "optimize": True}
                if icc := image.info.get("icc_profile"):
                    params["icc_profile"] = icc  # keeps wide-gamut photos' colours right
                image.save(out, format="JPEG", **params)
            os.replace(temp_name, target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise


__all__ = ["THUMBNAIL_SIZES", "ImageError", "ThumbnailCache", "bucket_size", "render_thumbnail"]
