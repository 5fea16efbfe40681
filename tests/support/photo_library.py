"""Photo libraries made on the fly for the photo-search tests: photos in every
format we index, with EXIF dates, orientations and GPS, plus the awkward files
(corrupt, empty, not images) and folders (symlink loops, links that leave the
root, hidden and excluded folders) a real library holds.

Everything comes from seeded generators (tests/support/images.py), so a failure
reproduces on any machine.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from handspring.photos.scanning.filename_dates import date_from_file_name
from handspring.photos.scanning.scan import ScannedFile, ScanReport
from tests.support.images import photo_array

EXIF_DATE = "%Y:%m:%d %H:%M:%S"
FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".gif": "GIF",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".heic": "HEIF",
}
EXIF_FORMATS = {"JPEG", "PNG", "WEBP", "HEIF"}  # containers Pillow writes EXIF into


def _dms(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = round(((value - degrees) * 60 - minutes) * 60 * 100)
    return IFDRational(degrees, 1), IFDRational(minutes, 1), IFDRational(seconds, 100)


def exif_block(
    *,
    taken: datetime.datetime | None = None,
    created: datetime.datetime | None = None,
    modified: datetime.datetime | None = None,
    orientation: int | None = None,
    gps: tuple[float, float] | None = None,
    make: str | None = None,
) -> Image.Exif:
    """DateTimeOriginal (taken), DateTimeDigitized (created), DateTime (modified)."""
    exif = Image.Exif()
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    if modified is not None:
        exif[ExifTags.Base.DateTime] = modified.strftime(EXIF_DATE)
    if make is not None:
        exif[ExifTags.Base.Make] = make
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    if taken is not None:
        sub[ExifTags.Base.DateTimeOriginal] = taken.strftime(EXIF_DATE)
    if created is not None:
        sub[ExifTags.Base.DateTimeDigitized] = created.strftime(EXIF_DATE)
    if gps is not None:
        lat, lon = gps
        gps_ifd = exif.get_ifd(ExifTags.IFD.GPSInfo)
        gps_ifd[ExifTags.GPS.GPSLatitudeRef] = "N" if lat >= 0 else "S"
        gps_ifd[ExifTags.GPS.GPSLatitude] = _dms(lat)
        gps_ifd[ExifTags.GPS.GPSLongitudeRef] = "E" if lon >= 0 else "W"
        gps_ifd[ExifTags.GPS.GPSLongitude] = _dms(lon)
    return exif


def write_photo(
    path: Path,
    seed: int,
    size: tuple[int, int] = (64, 48),
    exif: Image.Exif | None = None,
) -> Path:
    """A photo-like image (size: width, height) in the format its suffix names."""
    fmt = FORMATS[path.suffix.lower()]
    if fmt == "HEIF":
        from pillow_heif import register_heif_opener

        register_heif_opener()
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(photo_array(size[1], size[0], seed))
    params: dict[str, object] = {}
    if exif is not None and fmt in EXIF_FORMATS:
        params["exif"] = exif.tobytes()
    if fmt == "GIF":
        image = image.quantize(128)
    image.save(path, format=fmt, **params)
    return path


def encoded_photo(seed: int, size: tuple[int, int] = (64, 48), fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(photo_array(size[1], size[0], seed)).save(buffer, format=fmt)
    return buffer.getvalue()


def truncated_jpeg(path: Path, seed: int = 99) -> Path:
    """A JPEG cut off halfway: its header reads, its data does not."""
    data = encoded_photo(seed, (96, 64))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])
    return path


def symlink_loop(folder: Path, name: str = "loop") -> Path:
    """folder/name -> folder: a walk that follows it naively never ends."""
    link = folder / name
    link.symlink_to(folder, target_is_directory=True)
    return link


PAST_NS = 1_700_000_000_000_000_000  # Nov 2023: library files are old, as real photos are


def age(path: Path, offset_s: int = 0) -> Path:
    """Give a file an mtime long past, as a photo library's files have (the indexer reads
    again files modified within seconds of indexing: see RACY_NS)."""
    os.utime(path, ns=(PAST_NS, PAST_NS + offset_s * 1_000_000_000))
    return path


def touch_later(path: Path, seconds: float = 5.0) -> None:
    """Move the mtime forward, so a change shows even within one clock tick."""
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + int(seconds * 1e9)))


@dataclass(frozen=True)
class LibraryPhoto:
    path: Path
    seed: int
    taken_at: datetime.datetime | None
    displayed: tuple[int, int]  # (width, height) after EXIF orientation
    gps: tuple[float, float] | None = None


@dataclass
class Library:
    root: Path
    photos: dict[str, LibraryPhoto]  # by name
    broken: dict[str, str]  # name -> a word its error must contain
    skipped: list[Path]  # photos the scan must not index (hidden, excluded, outside)

    def path(self, name: str) -> Path:
        return self.photos[name].path if name in self.photos else self.root / name


def build_library(root: Path, *, with_heic: bool = True) -> Library:
    """A small library with one of each case (see the module notes)."""
    d = datetime.datetime
    specs: list[tuple[str, int, dict]] = [
        ("2023/beach.jpg", 1, {"taken": d(2023, 7, 4, 15, 30, 12), "gps": (48.8568, 2.3521)}),
        ("2023/rotated.jpg", 2, {"taken": d(2023, 7, 4, 9, 0, 0), "orientation": 6}),
        ("2023/created_only.jpg", 3, {"created": d(2023, 8, 1, 10, 0, 0)}),
        ("2023/modified_only.png", 4, {"modified": d(2022, 7, 4, 8, 0, 0)}),
        ("2021/IMG_20210704_101500.jpg", 5, {}),  # date from the file name only
        ("2021/PXL_20210101_000001123.webp", 6, {"gps": (-33.8688, -151.2093)}),
        ("misc/undated.gif", 7, {}),
        ("misc/scan.tiff", 8, {}),
        ("misc/old.bmp", 9, {}),
        ("misc/all_dates.jpg", 10, {
            "taken": d(2020, 2, 29, 12, 0, 0),
            "created": d(2020, 3, 1, 12, 0, 0),
            "modified": d(2020, 3, 2, 12, 0, 0),
            "orientation": 8,
            "make": "Acme",
        }),
    ]  # fmt: skip
    if with_heic:
        specs.append(("2023/phone.heic", 11, {"taken": d(2023, 12, 24, 18, 0, 0)}))
    photos: dict[str, LibraryPhoto] = {}
    for name, seed, tags in specs:
        path = write_photo(root / name, seed, (64, 48), exif_block(**tags) if tags else None)
        taken = tags.get("taken") or tags.get("created") or tags.get("modified")
        if taken is None:
            taken = date_from_file_name(name)
        turned = tags.get("orientation") in (5, 6, 7, 8)
        gps = tags.get("gps")
        photos[name] = LibraryPhoto(path, seed, taken, (48, 64) if turned else (64, 48), gps)
    broken = {
        "broken/truncated.jpg": "truncated",
        "broken/notes.jpg": "text file",
        "broken/empty.png": "empty",
    }
    truncated_jpeg(root / "broken/truncated.jpg")
    (root / "broken/notes.jpg").write_text("shopping list: eggs, milk")
    (root / "broken/empty.png").write_bytes(b"")
    symlink_loop(root / "2023")
    skipped = [
        write_photo(root / ".hidden/secret.jpg", 20),
        write_photo(root / "misc/.dotfile.jpg", 21),
        write_photo(root / "node_modules/pkg/icon.png", 22),
        write_photo(root / "@eaDir/thumb.jpg", 23),
    ]
    (root / "misc/readme.txt").write_text("not a photo suffix")
    for i, path in enumerate(sorted(p for p in root.rglob("*") if p.is_file())):
        age(path, i)
    return Library(root, photos, broken, skipped)


def scan_unprivileged(roots: list[str]) -> ScanReport:
    """scan_roots as the `nobody` user, in a subprocess (root reads every folder,
    whatever its mode). Skips the test when it cannot drop privileges."""
    code = (
        "import json, sys; from dataclasses import asdict;"
        "from handspring.photos.scanning.scan import scan_roots;"
        "print(json.dumps(asdict(scan_roots(sys.argv[1:]))))"
    )
    command = [sys.executable, "-c", code, *roots]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv to drop privileges")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    out = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    out["files"] = [ScannedFile(**f) for f in out["files"]]
    out["unreadable"] = [tuple(u) for u in out["unreadable"]]
    return ScanReport(**out)


@contextmanager
def shared_tmp() -> Iterator[Path]:
    """A temporary folder other users may enter (pytest's own is private to its user)."""
    folder = Path(tempfile.mkdtemp(prefix="handspring-photos-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in folder.rglob("*"):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(folder)
