"""What a photo is as a Qdrant point: its payload (the Photo fields, plus `taken_ts`,
`month_day` and `folders` for the filters) and the way back. Paths and error reasons
are in their stored form (stored_paths.py): a payload is JSON, which cannot carry the
lone surrogates of a file name that is not valid UTF-8."""

from __future__ import annotations

import datetime
import os
from typing import Any

import numpy as np

from handspring.photos.stores.records import Photo, PhotoRecord, day_index, timestamp
from handspring.photos.stores.stored_paths import decode_stored, encode_stored

VECTOR = "image"  # the collection's named vector (cosine)

# The payload fields a Qdrant server indexes, with their index types: the search
# filters' (dates: `taken_ts`, on this day: `month_day`, folder: `folders`), the
# indexer's lookups by path, by content and of the files that failed, and the library's
# order (`taken_ts`, then `mtime_ns` for undated photos: order_by needs a range index).
INDEXED_FIELDS = {
    "path": "keyword",
    "sha256": "keyword",
    "folders": "keyword",
    "has_vector": "bool",
    "taken_ts": "float",
    "month_day": "integer",
    "mtime_ns": "integer",
}


def folders_above(path: str) -> list[str]:
    """'/a/b/c.jpg' -> ['/', '/a', '/a/b']."""
    parent = os.path.dirname(path)
    out = []
    while True:
        out.append(parent)
        up = os.path.dirname(parent)
        if up == parent:
            return out[::-1]
        parent = up


def payload_of(record: PhotoRecord, has_vector: bool) -> dict[str, Any]:
    taken = record.taken_at
    path = encode_stored(record.path)
    return {
        "path": path,
        "folders": folders_above(path),
        "size": record.size,
        "mtime_ns": record.mtime_ns,
        "sha256": record.sha256,
        "width": record.width,
        "height": record.height,
        "taken_at": taken.isoformat() if taken else None,
        "taken_ts": timestamp(taken) if taken else None,
        "month_day": day_index(taken) if taken else None,
        "gps": list(record.gps) if record.gps else None,
        "exif": record.exif,
        "error": None if record.error is None else encode_stored(record.error),
        "has_vector": has_vector and record.error is None,
    }


def vector_of(point: Any) -> np.ndarray | None:
    vectors = point.vector or {}
    values = vectors.get(VECTOR) if isinstance(vectors, dict) else vectors
    return None if values is None else np.asarray(values, dtype=np.float32)


def photo_of(point: Any) -> Photo:
    p = point.payload
    taken = p.get("taken_at")
    gps = p.get("gps")
    return Photo(
        id=int(point.id),
        path=decode_stored(p["path"]),
        size=int(p["size"]),
        mtime=int(p["mtime_ns"]) / 1e9,
        sha256=p["sha256"],
        width=p.get("width"),
        height=p.get("height"),
        taken_at=datetime.datetime.fromisoformat(taken) if taken else None,
        gps=(float(gps[0]), float(gps[1])) if gps else None,
        exif=p.get("exif") or {},
        error=error_of(p),
    )


def error_of(payload: dict[str, Any]) -> str | None:
    """Why the photo could not be read, as the indexer recorded it; None if it could."""
    error = payload.get("error")
    return None if error is None else decode_stored(error)
