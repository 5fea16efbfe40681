"""SqliteStore's writes: each opens the transaction (BEGIN IMMEDIATE) if none is open, and
`commit` ends it, bumping the generation that readers reload on."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence

import numpy as np

from handspring.photos.stores.browsing import LastRun
from handspring.photos.stores.records import ModelInfo, PhotoRecord, day_index, timestamp
from handspring.photos.stores.sqlite.rows import chunks
from handspring.photos.stores.store import StoreError
from handspring.photos.stores.stored_paths import encode_stored


class SqliteWrites:
    """set_model, put, move, delete, record_run and commit on SqliteStore's connection."""

    path: str
    read_only: bool
    _db: sqlite3.Connection
    _lock: threading.RLock
    _dirty: bool

    def _write(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        if self.read_only:
            raise StoreError(f"{self.path}: opened read-only")
        with self._lock:
            if not self._db.in_transaction:
                self._db.execute("BEGIN IMMEDIATE")
            self._dirty = True
            return self._db.execute(sql, params)

    def set_model(self, info: ModelInfo) -> None:
        for key, value in (
            ("image_model", info.name),
            ("dim", str(info.dim)),
            ("precision", info.precision),
        ):
            self._write("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def put(self, record: PhotoRecord, vector: np.ndarray | None) -> int:
        row = (*_record_columns(record), None if vector is None else _blob(vector), time.time())
        with self._lock:
            return int(self._write(_UPSERT, row).fetchone()[0])

    def move(self, photo_id: int, record: PhotoRecord) -> None:
        self._write(_MOVE, (*_record_columns(record), time.time(), int(photo_id)))

    def delete(self, photo_ids: Sequence[int]) -> None:
        for chunk in chunks([int(i) for i in photo_ids]):
            self._write(f"DELETE FROM photos WHERE id IN ({','.join('?' * len(chunk))})", chunk)

    def record_run(self, run: LastRun) -> None:
        if self.read_only:
            raise StoreError(f"{self.path}: opened read-only")
        with self._lock:  # outside a transaction: committed at once, and not a change
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_run', ?)", (run.as_json(),)
            )

    def commit(self) -> None:
        with self._lock:
            if not self._db.in_transaction:
                return
            if self._dirty:
                # Readers (a server's in-memory scan) reload when this changes.
                self._db.execute(
                    "INSERT INTO meta (key, value) VALUES ('generation', '1')"
                    " ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_commit', ?)",
                    (repr(time.time()),),
                )
            self._db.execute("COMMIT")
            self._dirty = False


_RECORD_COLUMNS = (
    "path", "size", "mtime_ns", "sha256", "width", "height", "taken_at", "taken_ts",
    "month_day", "lat", "lon", "exif", "error",
)  # fmt: skip


_UPSERT = f"""
    INSERT INTO photos ({", ".join(_RECORD_COLUMNS)}, vector, indexed_at)
    VALUES ({", ".join("?" * (len(_RECORD_COLUMNS) + 2))})
    ON CONFLICT (path) DO UPDATE SET
        {", ".join(f"{c} = excluded.{c}" for c in _RECORD_COLUMNS[1:])},
        vector = excluded.vector, indexed_at = excluded.indexed_at
    RETURNING id
"""
# Same content under a new path or mtime: every column but the vector (and the id).
_MOVE = f"""
    UPDATE photos SET {", ".join(f"{c} = ?" for c in _RECORD_COLUMNS)},
        indexed_at = ? WHERE id = ?
"""


def _record_columns(record: PhotoRecord) -> tuple[object, ...]:
    """A record's values in _RECORD_COLUMNS order."""
    taken = record.taken_at
    lat, lon = record.gps if record.gps else (None, None)
    return (
        encode_stored(record.path),
        record.size,
        record.mtime_ns,
        record.sha256,
        record.width,
        record.height,
        taken.isoformat() if taken else None,
        timestamp(taken) if taken else None,
        day_index(taken) if taken else None,
        lat,
        lon,
        json.dumps(record.exif, ensure_ascii=False, allow_nan=False),
        None if record.error is None else encode_stored(record.error),
    )


def _blob(vector: np.ndarray) -> bytes:
    """Unit length, float32 little-endian: search scores are cosines, as in Qdrant."""
    vector = np.asarray(vector, dtype="<f4").reshape(-1)
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0:
        raise ValueError("refusing to store a vector that is zero or has NaN or infinite values")
    if abs(norm - 1) > 1e-5:  # embedders give unit vectors; those are stored bit for bit
        vector = (vector / norm).astype("<f4")
    return vector.tobytes()
