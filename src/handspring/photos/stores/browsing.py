"""Browsing the library without a query: its order, a place in it, and what a store
tells of it as a whole (months, folders, totals).

The library's order is newest first: photos with a date by the time they were taken,
then photos without one by their file's modification time, each time tie broken by id,
all descending. A page is the `limit` photos after a BrowseKey (keyset paging), so the
500th page costs what the first does.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from handspring.photos.stores.records import Photo, timestamp

UNDATED = "undated"
_EPOCH = datetime.datetime(1970, 1, 1)
_MONTH = re.compile(r"^\d{4}-\d{2}$")


@dataclass(frozen=True)
class BrowseKey:
    """A place in the library's order; a page starts with the first photo after it.

    In the dated part: `taken_ts` (seconds, see records.timestamp) and `photo_id`; in the
    undated part (`undated`): `mtime_ns` and `photo_id`. With `photo_id` None the place is
    before every photo of that time; `undated` with no `mtime_ns` is the start of the
    undated part."""

    taken_ts: float | None = None
    mtime_ns: int | None = None
    photo_id: int | None = None
    undated: bool = False

    def __post_init__(self) -> None:
        if self.undated and self.taken_ts is not None:
            raise ValueError("a place in the undated part has no taken time")
        if not self.undated and self.taken_ts is None:
            raise ValueError("a place in the dated part needs a taken time")
        if self.photo_id is not None and self.undated and self.mtime_ns is None:
            raise ValueError("a photo id in the undated part needs its file time")

    @classmethod
    def before_day(cls, day: datetime.date) -> BrowseKey:
        """Photos taken before this day, newest first: the place to jump to a date."""
        return cls(taken_ts=timestamp(datetime.datetime.combine(day, datetime.time())))

    @classmethod
    def parse(cls, text: str) -> BrowseKey:
        """The text form (`str(key)`), or a date to jump to: `2019-03-01` (photos taken
        before that day), `2019-03` (before that month), `2019-03-01T12:00:00`."""
        text = text.strip()
        if text == UNDATED:
            return cls(undated=True)
        try:
            if text.startswith(UNDATED + "~"):
                _, mtime, *rest = text.split("~")
                photo_id = _photo_id(rest[0]) if rest else None
                if len(rest) > 1:
                    raise ValueError("too many parts")
                return cls(mtime_ns=int(mtime), photo_id=photo_id, undated=True)
            moment, _, photo = text.partition("~")
            if _MONTH.match(moment):
                moment += "-01"
            taken = datetime.datetime.fromisoformat(moment)
            if taken.tzinfo is not None:
                raise ValueError("taken times are naive (the camera's local time)")
            return cls(taken_ts=timestamp(taken), photo_id=_photo_id(photo) if photo else None)
        except ValueError as exc:
            raise ValueError(
                f"{text!r} is not a place in the library: expected a date (2019-03-01, "
                f"2019-03), a time, or a page's nextBefore ({exc})"
            ) from None

    def __str__(self) -> str:
        if self.undated:
            if self.mtime_ns is None:
                return UNDATED
            tail = f"~{self.photo_id}" if self.photo_id is not None else ""
            return f"{UNDATED}~{self.mtime_ns}{tail}"
        assert self.taken_ts is not None
        moment = taken_at_of(self.taken_ts).isoformat()
        return moment if self.photo_id is None else f"{moment}~{self.photo_id}"


def _photo_id(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"photo id {value} is below 1")
    return value


def taken_at_of(taken_ts: float) -> datetime.datetime:
    """The naive time a `timestamp` stands for."""
    return _EPOCH + datetime.timedelta(seconds=taken_ts)


def key_after(photo: Photo, mtime_ns: int) -> BrowseKey:
    """The place just after this photo (its file time in ns, which Photo holds rounded)."""
    if photo.taken_at is not None:
        return BrowseKey(taken_ts=timestamp(photo.taken_at), photo_id=photo.id)
    return BrowseKey(mtime_ns=mtime_ns, photo_id=photo.id, undated=True)


@dataclass(frozen=True)
class BrowsePage:
    photos: list[Photo]
    next: BrowseKey | None  # where the next page starts; None after the last photo


@dataclass(frozen=True)
class Timeline:
    """How many photos a filter lets through, by month (newest first), and how many have
    no date. Date filters leave undated photos out: `undated` still counts those the
    other filters let through, so a page can say how many a date filter hides."""

    months: list[tuple[str, int]]  # ("2024-07", count), newest first
    undated: int
    undated_included: bool

    @property
    def total(self) -> int:
        return sum(count for _, count in self.months) + (
            self.undated if self.undated_included else 0
        )


def month_of(taken_ts: float) -> str:
    return taken_at_of(taken_ts).strftime("%Y-%m")


def months_newest_first(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), reverse=True)


@dataclass(frozen=True)
class FolderCount:
    path: str
    photos: int  # in it and every folder below it
    depth: int  # below the library's top folder (0: a top folder)


def folder_tree(direct: dict[str, int]) -> list[FolderCount]:
    """Each folder holding photos, and each folder above those up to their common top
    folder, with the photos in and below it; in path order (a folder before its
    subfolders)."""
    if not direct:
        return []
    totals: dict[str, int] = {}
    top = os.path.commonpath(list(direct)) if len(direct) > 1 else next(iter(direct))
    for folder, count in direct.items():
        for above in _folders_up_to(folder, top):
            totals[above] = totals.get(above, 0) + count
    base = top.rstrip("/").count("/")
    return [
        FolderCount(path, count, path.rstrip("/").count("/") - base)
        for path, count in sorted(totals.items(), key=lambda item: _sort_key(item[0]))
    ]


def _folders_up_to(folder: str, top: str) -> Iterable[str]:
    while True:
        yield folder
        if folder == top or len(folder) <= len(top):
            return
        folder = os.path.dirname(folder)


def _sort_key(path: str) -> list[str]:
    # By component, so "/a/b" and its subfolders come before "/a/b-2".
    return path.rstrip("/").split("/")


@dataclass(frozen=True)
class LastRun:
    """What the last `photos index` run did, kept by the store (`record_run`)."""

    finished: float  # Unix seconds
    seconds: float
    added: int = 0
    updated: int = 0  # embedded again, or moved, touched or copied
    deleted: int = 0
    failed: int = 0  # files that could not be read
    unchanged: int = 0
    completed: bool = True  # False: interrupted (Ctrl-C, an error); its commits are kept

    def as_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str | dict[str, Any] | None) -> LastRun | None:
        """None for nothing recorded, or a record this version cannot read."""
        if text is None:
            return None
        try:
            fields = json.loads(text) if isinstance(text, str) else dict(text)
            return cls(**{f.name: fields[f.name] for f in dataclasses.fields(cls)})
        except (ValueError, TypeError, KeyError):
            return None


@dataclass(frozen=True)
class IndexStats:
    """What `photos status` and the page's header say of an index."""

    kind: str  # "SQLite", "Qdrant (embedded)", "Qdrant server"
    location: str  # a file, a folder or a URL (with the collection)
    photos: int  # searchable: read and embedded
    errors: int  # files that could not be read
    bytes_on_disk: int | None  # None: not known (a server's collection)
    last_change: float | None  # Unix seconds of the last commit that changed something
    last_run: LastRun | None = None  # None: no run recorded (an index of an older version)
