"""Server-side thumbnails: upright per EXIF, resized, cached by content, written atomically."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from handspring.errors import ImageError
from handspring.photos.web.thumbnails import (
    THUMBNAIL_SIZES,
    ThumbnailCache,
    bucket_size,
    render_thumbnail,
)
from tests.support.images import ORIENTATION_TAG, jpeg, png_rgba

# Four flat quadrants, far apart in colour, so JPEG noise never confuses them.
QUADRANT_COLOURS = np.array(
    [[[230, 30, 30], [30, 200, 30]], [[30, 30, 230], [240, 240, 40]]], dtype=np.uint8
)
# Where each EXIF orientation sends the stored pixels (the EXIF 2.3 definitions).
ORIENTED = {
    1: lambda a: a,
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quadrant_jpeg(path: Path, orientation: int, width: int = 96, height: int = 64) -> Path:
    pixels = np.repeat(np.repeat(QUADRANT_COLOURS, height // 2, axis=0), width // 2, axis=1)
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    Image.fromarray(pixels).save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return path


def quadrant_centres(image: Image.Image) -> np.ndarray:
    """The colour at the centre of each quadrant of `image`, as a 2 x 2 x 3 array."""
    pixels = np.asarray(image.convert("RGB")).astype(int)
    h, w = pixels.shape[:2]
    return np.array([[pixels[h * (2 * r + 1) // 4, w * (2 * c + 1) // 4] for c in (0, 1)]
                     for r in (0, 1)])  # fmt: skip


@pytest.mark.parametrize("orientation", sorted(ORIENTED))
def test_thumbnail_is_upright_for_every_exif_orientation(tmp_path: Path, orientation: int) -> None:
    source = quadrant_jpeg(tmp_path / f"o{orientation}.jpg", orientation)
    cache = ThumbnailCache(tmp_path / "cache")
    thumb = Image.open(cache.get(source, sha256_of(source), 128))
    expected = ORIENTED[orientation](QUADRANT_COLOURS)
    # Rotations by 90 degrees swap the sides; the photo is smaller than 128 so never enlarged.
    assert thumb.size == ((64, 96) if orientation >= 5 else (96, 64))
    assert np.abs(quadrant_centres(thumb) - expected).max() < 24
    assert not thumb.getexif().get(ORIENTATION_TAG)  # never rotated twice by a viewer


def test_large_photo_is_reduced_to_the_asked_size(tmp_path: Path) -> None:
    source = jpeg(tmp_path / "big.jpg", 1200, 1600, seed=3, orientation=6)
    image = render_thumbnail(source, 256)
    assert image.size == (192, 256)  # 1600 x 1200 stored, shown rotated: portrait
    assert image.mode == "RGB"
    # Same picture as a full decode resized the slow way (draft mode only changes the detail).
    with Image.open(source) as full:
        from PIL import ImageOps

        reference = ImageOps.exif_transpose(full).convert("RGB").resize((192, 256))
    diff = np.abs(np.asarray(image, dtype=float) - np.asarray(reference, dtype=float))
    assert diff.mean() < 6


def test_sizes_round_up_to_the_cached_ones() -> None:
    assert bucket_size(1) == THUMBNAIL_SIZES[0]
    assert bucket_size(200) == 256
    assert bucket_size(256) == 256
    assert bucket_size(100_000) == THUMBNAIL_SIZES[-1]
    with pytest.raises(ValueError, match="positive"):
        bucket_size(0)


def test_cache_is_keyed_by_content_and_size(tmp_path: Path) -> None:
    source = jpeg(tmp_path / "a.jpg", 600, 800, seed=1)
    sha = sha256_of(source)
    cache = ThumbnailCache(tmp_path / "cache")
    small = cache.get(source, sha, 200)
    assert small == cache.path_for(sha, 256)
    assert Image.open(small).size == (256, 192)
    first_write = small.stat().st_mtime_ns
    # Served from the cache without reading the photo again: it may even be gone.
    source.unlink()
    assert cache.get(source, sha, 256) == small
    assert small.stat().st_mtime_ns == first_write
    with pytest.raises(ImageError, match="file not found"):
        cache.get(source, sha, 512)  # another size needs the photo
    leftovers = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert leftovers == [small.name]  # no temporary files left behind by the failure


def test_concurrent_requests_for_one_thumbnail_both_get_a_whole_file(tmp_path: Path) -> None:
    source = jpeg(tmp_path / "c.jpg", 900, 1200, seed=2)
    sha = sha256_of(source)
    cache = ThumbnailCache(tmp_path / "cache")
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get(source, sha, 512)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert Image.open(results[0]).size == (512, 384)
    assert sorted(p.name for p in results[0].parent.iterdir()) == [results[0].name]


def test_transparent_png_is_flattened_onto_white(tmp_path: Path) -> None:
    source = png_rgba(tmp_path / "alpha.png", 60, 80, seed=4)
    image = render_thumbnail(source, 128)
    assert image.mode == "RGB"
    alpha = np.asarray(Image.open(source))[..., 3]
    clear = np.argwhere(alpha == 0)[0]  # a fully transparent pixel shows as white
    assert tuple(np.asarray(image)[tuple(clear)]) == (255, 255, 255)


def test_heic_photos_get_thumbnails(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    if not pillow_heif.libheif_info().get("encoders", {}).get("x265"):
        pytest.skip("this pillow-heif wheel cannot encode HEIC")
    source = tmp_path / "photo.heic"
    pixels = np.repeat(np.repeat(QUADRANT_COLOURS, 128, axis=0), 128, axis=1)
    pillow_heif.from_pillow(Image.fromarray(pixels)).save(source, quality=95)
    thumb = Image.open(ThumbnailCache(tmp_path / "cache").get(source, sha256_of(source), 128))
    assert thumb.size == (128, 128)
    assert np.abs(quadrant_centres(thumb) - QUADRANT_COLOURS).max() < 30


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"just some text, not a photo", "not an image"),
        (None, "truncated"),  # the head of a real JPEG
    ],
)
def test_unreadable_photos_raise_an_error_naming_the_file(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    bad = tmp_path / "bad.jpg"
    if content is None:
        whole = jpeg(tmp_path / "whole.jpg", 300, 400, seed=5).read_bytes()
        content = whole[: len(whole) // 2]
    bad.write_bytes(content)
    cache = ThumbnailCache(tmp_path / "cache")
    with pytest.raises(ImageError, match=reason) as caught:
        cache.get(bad, sha256_of(bad), 128)
    assert caught.value.item == str(bad)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.jpg"))


def test_decoder_pixel_limit_is_enforced(tmp_path: Path) -> None:
    source = jpeg(tmp_path / "wide.jpg", 400, 500, seed=6)
    cache = ThumbnailCache(tmp_path / "cache", max_pixels=100_000)
    with pytest.raises(ImageError, match="too large"):
        cache.get(source, sha256_of(source), 128)


def test_only_sha256_digests_become_file_names(tmp_path: Path) -> None:
    cache = ThumbnailCache(tmp_path / "cache")
    with pytest.raises(ValueError, match="sha256"):
        cache.path_for("../../etc/passwd", 128)
