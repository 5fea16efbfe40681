"""What the photo index holds and what a search returns."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SearchFilter:
    """Conditions a photo must meet to be a search result; they apply before top-k."""

    not_before: datetime.date | None = None  # inclusive, on the photo's taken_at
    not_after: datetime.date | None = None  # inclusive
    on_this_day: datetime.date | None = None  # same month and day, any year
    min_score: float | None = None  # cosine >= min_score
    folder: str | None = None  # path prefix (a folder), absolute

    def __post_init__(self) -> None:
        if self.folder is not None and not self.folder.startswith("/"):
            raise ValueError(f"folder filter must be an absolute path, got {self.folder!r}")
        if self.not_before and self.not_after and self.not_before > self.not_after:
            raise ValueError(
                f"empty date range: not_before {self.not_before} is after not_after {self.not_after}"
            )

    @property
    def folder_prefix(self) -> str | None:
        """The folder with exactly one trailing slash, so /a/b never matches /a/bc."""
        if self.folder is None:
            return None
        return self.folder.rstrip("/") + "/"

    @property
    def needs_taken_at(self) -> bool:
        return bool(self.not_before or self.not_after or self.on_this_day)

    def admits(self, photo: Photo) -> bool:
        """Whether the photo passes the filter's conditions on it (min_score aside)."""
        taken = photo.taken_at
        if taken is None:
            return not self.needs_taken_at
        if (self.not_before and taken.date() < self.not_before) or (
            self.not_after and taken.date() > self.not_after
        ):
            return False
        day = self.on_this_day
        if day is not None and (taken.month, taken.day) != (day.month, day.day):
            return False
        prefix = self.folder_prefix
        return prefix is None or prefix == "/" or photo.path.startswith(prefix)


# Every store gives ids out from 1 up and keeps them in SQLite's signed 64-bit INTEGER.
MAX_PHOTO_ID = 2**63 - 1


def could_be_photo_id(photo_id: int) -> bool:
    """False for an integer no photo can have. Lookups answer "not indexed" for it, as for
    any unknown id, rather than letting the database's integer overflow."""
    return 1 <= photo_id <= MAX_PHOTO_ID


@dataclass(frozen=True)
class Photo:
    id: int  # stable integer id of the indexed photo
    path: str  # absolute path
    size: int
    mtime: float
    sha256: str
    width: int | None  # as displayed (after EXIF orientation)
    height: int | None
    taken_at: datetime.datetime | None  # naive local time as the camera wrote it
    gps: tuple[float, float] | None  # (lat, lon) decimal degrees
    exif: dict[str, Any]  # every tag, JSON-able
    error: str | None  # why it could not be read, else None


@dataclass(frozen=True)
class Hit:
    photo: Photo
    score: float


@dataclass(frozen=True)
class PhotoRecord:
    """A photo as the indexer writes it: a Photo before the store gives it an id.
    mtime_ns, not a float, so "unchanged" is an exact comparison."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    width: int | None = None
    height: int | None = None
    taken_at: datetime.datetime | None = None
    gps: tuple[float, float] | None = None
    exif: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_photo(self, photo_id: int) -> Photo:
        return Photo(
            id=photo_id,
            path=self.path,
            size=self.size,
            mtime=self.mtime_ns / 1e9,
            sha256=self.sha256,
            width=self.width,
            height=self.height,
            taken_at=self.taken_at,
            gps=self.gps,
            exif=self.exif,
            error=self.error,
        )


@dataclass(frozen=True)
class IndexedFile:
    """What an incremental run needs to know of a file already in the index."""

    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str
    has_vector: bool
    error: str | None


@dataclass(frozen=True)
class ModelInfo:
    """The image model an index was built with; one index never mixes models."""

    name: str
    dim: int
    precision: str


def day_index(moment: datetime.date) -> int:
    """Month and day as one integer (July 4th -> 704), for "on this day" filters."""
    return moment.month * 100 + moment.day


def timestamp(moment: datetime.datetime) -> float:
    """Seconds of a naive time read as UTC: a sortable number for date filters, never
    shifted by the machine's time zone (the camera's local time is what the user means)."""
    return (moment - datetime.datetime(1970, 1, 1)).total_seconds()


def date_bounds(flt: SearchFilter) -> tuple[float | None, float | None]:
    """[start, end) in `timestamp` seconds for the filter's inclusive date range."""
    start = (
        timestamp(datetime.datetime.combine(flt.not_before, datetime.time()))
        if flt.not_before
        else None
    )
    end = None
    if flt.not_after:
        after = flt.not_after + datetime.timedelta(days=1)
        end = timestamp(datetime.datetime.combine(after, datetime.time()))
    return start, end
