"""Metadata the index records: EXIF as JSON, the timestamp's order of sources,
displayed size after EXIF orientation, GPS, and dates in file names."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from PIL import ExifTags
from PIL.TiffImagePlugin import IFDRational

from handspring.photos.scanning.filename_dates import date_from_file_name
from handspring.photos.scanning.metadata import (
    MAX_BINARY_BYTES,
    enable_heif,
    parse_exif_date,
    read_metadata,
)
from tests.support.photo_library import encoded_photo, exif_block, write_photo

D = datetime.datetime


def _metadata(tmp_path: Path, name: str, **tags: object):
    path = write_photo(tmp_path / name, seed=1, size=(40, 30), exif=exif_block(**tags))
    return read_metadata(path.read_bytes(), str(path))


def test_timestamp_sources_in_order(tmp_path: Path) -> None:
    taken, created, modified = D(2020, 1, 2, 3, 4, 5), D(2021, 1, 1), D(2022, 1, 1)
    name = "IMG_19990101_000000.jpg"
    both = dict(taken=taken, created=created, modified=modified)
    assert _metadata(tmp_path, name, **both).taken_at == taken
    assert _metadata(tmp_path, name, created=created, modified=modified).taken_at == created
    assert _metadata(tmp_path, name, modified=modified).taken_at == modified
    assert _metadata(tmp_path, name, make="Acme").taken_at == D(1999, 1, 1)
    assert _metadata(tmp_path, "DSC0001.jpg", make="Acme").taken_at is None


@pytest.mark.parametrize(
    ("orientation", "displayed"), [(1, (40, 30)), (3, (40, 30)), (6, (30, 40)), (8, (30, 40))]
)
def test_displayed_size_follows_orientation(
    tmp_path: Path, orientation: int, displayed: tuple[int, int]
) -> None:
    meta = _metadata(tmp_path, "x.jpg", orientation=orientation)
    assert (meta.width, meta.height) == displayed
    assert meta.exif["Orientation"] == orientation


def test_gps_in_every_hemisphere(tmp_path: Path) -> None:
    for lat, lon in [(48.8568, 2.3521), (-33.8688, -151.2093), (64.1466, -21.9426)]:
        gps = _metadata(tmp_path, "g.jpg", gps=(lat, lon)).gps
        assert gps == pytest.approx((lat, lon), abs=1e-4)
    assert _metadata(tmp_path, "g.jpg", gps=(0.0, 0.0)).gps is None  # no fix


def test_every_tag_as_json(tmp_path: Path) -> None:
    exif = exif_block(taken=D(2023, 7, 4, 15, 30, 12), gps=(10.5, 20.25), make="Acme\x00")
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    sub[ExifTags.Base.UserComment] = b"ASCII\x00\x00\x00a day at the beach"
    sub[ExifTags.Base.MakerNote] = bytes(range(256)) * 8
    sub[ExifTags.Base.ExposureTime] = IFDRational(1, 250)
    sub[ExifTags.Base.ISOSpeedRatings] = (100, 200)  # a list
    sub[ExifTags.Base.ComponentsConfiguration] = b"\x01\x02\x03\x00"
    path = write_photo(tmp_path / "tags.jpg", seed=2, exif=exif)
    tags = read_metadata(path.read_bytes(), str(path)).exif
    assert json.loads(json.dumps(tags, allow_nan=False)) == tags
    assert tags["Make"] == "Acme"
    assert tags["DateTimeOriginal"] == "2023:07:04 15:30:12"
    assert tags["UserComment"] == "a day at the beach"
    assert tags["MakerNote"] == f"<{256 * 8} bytes>" and MAX_BINARY_BYTES < 256 * 8
    assert tags["ExposureTime"] == pytest.approx(1 / 250)
    assert tags["ISOSpeedRatings"] == [100, 200]
    assert tags["ComponentsConfiguration"] == "01020300"
    assert tags["GPSInfo"]["GPSLatitudeRef"] == "N"
    assert tags["GPSInfo"]["GPSLatitude"] == pytest.approx([10.0, 30.0, 0.0])


@pytest.mark.parametrize("suffix", [".png", ".webp", ".heic"])
def test_exif_in_other_containers(tmp_path: Path, suffix: str) -> None:
    if suffix == ".heic" and not enable_heif():
        pytest.skip("pillow-heif is not installed")
    taken = D(2024, 2, 29, 23, 59, 59)
    meta = _metadata(tmp_path, "p" + suffix, taken=taken, orientation=6, gps=(1.5, 2.5))
    assert (meta.taken_at, (meta.width, meta.height)) == (taken, (30, 40))
    assert meta.gps == pytest.approx((1.5, 2.5), abs=1e-4)


def test_unreadable_input_gives_empty_metadata() -> None:
    meta = read_metadata(b"not an image", "/x/2021-05-06 07.08.09.jpg")
    assert (meta.width, meta.exif, meta.taken_at) == (None, {}, D(2021, 5, 6, 7, 8, 9))
    plain = read_metadata(encoded_photo(3, (20, 10)), "/x/a.jpg")
    assert (plain.width, plain.height, plain.exif, plain.gps) == (20, 10, {}, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2023:07:04 15:30:12", D(2023, 7, 4, 15, 30, 12)),
        ("2023-07-04 15:30", D(2023, 7, 4, 15, 30)),
        ("2023:07:04", D(2023, 7, 4)),
        ("2023:07:04 15:30:12\x00", D(2023, 7, 4, 15, 30, 12)),
        (b"2023:07:04 15:30:12", D(2023, 7, 4, 15, 30, 12)),
        ("0000:00:00 00:00:00", None),
        ("    :  :     :  :  ", None),
        ("2023:02:30 10:00:00", None),
        (12345, None),
    ],
)
def test_exif_date_strings(value: object, expected: D | None) -> None:
    assert parse_exif_date(value) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("IMG_20230704_153012.jpg", D(2023, 7, 4, 15, 30, 12)),
        ("PXL_20230704_153012345.jpg", D(2023, 7, 4, 15, 30, 12)),
        ("2023-07-04 15.30.12.png", D(2023, 7, 4, 15, 30, 12)),
        ("Screenshot 2023-07-04 at 15.30.12.png", D(2023, 7, 4, 15, 30, 12)),
        ("IMG-20230704-WA0001.jpg", D(2023, 7, 4)),
        ("/photos/2019-01-01/DSC0001.jpg", None),  # folders do not count
        ("IMG_1234.jpg", None),
        ("20231304.jpg", None),
        ("2023-02-30 then 2023-03-01.jpg", D(2023, 3, 1)),
    ],
)
def test_dates_in_file_names(name: str, expected: D | None) -> None:
    assert date_from_file_name(name) == expected
