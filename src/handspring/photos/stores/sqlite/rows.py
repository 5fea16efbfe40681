"""How a photo sits in the SQLite index's table: the columns read back, the WHERE clause
for a filter, and a row as a Photo."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator, Sequence

from handspring.photos.stores.records import Photo, SearchFilter, date_bounds, day_index
from handspring.photos.stores.stored_paths import decode_stored, encode_stored

PHOTO_COLUMNS = "id, path, size, mtime_ns, sha256, width, height, taken_at, lat, lon, exif, error"
SEARCHABLE = "vector IS NOT NULL"  # word for word as in the partial indexes' WHERE


def conditions(flt: SearchFilter) -> tuple[str, list[object]]:
    """SQL for the searchable photos `flt` lets through (min_score aside), and its values."""
    where, params = [SEARCHABLE], []
    start, end = date_bounds(flt)
    if start is not None:
        where.append("taken_ts >= ?")
        params.append(start)
    if end is not None:
        where.append("taken_ts < ?")
        params.append(end)
    if flt.on_this_day is not None:
        where.append("month_day = ?")
        params.append(day_index(flt.on_this_day))
    if flt.folder is not None and flt.folder.rstrip("/"):
        where.append("path >= ? AND path < ?")
        params += list(prefix_range(flt.folder))
    return " AND ".join(where), params


def prefix_range(folder: str) -> tuple[str, str]:
    """[low, high) of the stored paths under a folder: '/a/' <= path < '/a0' ('0' follows
    '/'). A stored form keeps every "/" where it was, so this holds for them too."""
    prefix = encode_stored(folder).rstrip("/") + "/"
    return prefix, prefix[:-1] + "0"


def photo_from_row(row: Sequence) -> Photo:
    photo_id, path, size, mtime_ns, sha256, width, height, taken_at, lat, lon, exif, error = row
    return Photo(
        id=int(photo_id),
        path=decode_stored(path),
        size=int(size),
        mtime=mtime_ns / 1e9,
        sha256=sha256,
        width=width,
        height=height,
        taken_at=datetime.datetime.fromisoformat(taken_at) if taken_at else None,
        gps=(lat, lon) if lat is not None and lon is not None else None,
        exif=json.loads(exif) if exif else {},
        error=text_from_store(error),
    )


def text_from_store(stored: str | None) -> str | None:
    return None if stored is None else decode_stored(stored)


IN_CHUNK = 900  # ids per "IN (...)": under SQLite's oldest variable limit


def chunks(items: list[int]) -> Iterator[list[int]]:
    """`items` in runs short enough for one "IN (...)"."""
    for start in range(0, len(items), IN_CHUNK):
        yield items[start : start + IN_CHUNK]
