"""The default photo index: one SQLite file in WAL mode, vectors as float32 BLOBs.

Search is exact over every vector (see `exact_scan`): an int8 copy of all vectors
lives in memory, loaded on the first search and loaded again when another
connection (an indexer running beside a server) has committed changes.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from handspring.photos.search.loaded_index import LoadedIndex
from handspring.photos.stores.browsing import (
    BrowseKey,
    BrowsePage,
    IndexStats,
    LastRun,
    Timeline,
    key_after,
    months_newest_first,
)
from handspring.photos.stores.records import (
    Hit,
    IndexedFile,
    ModelInfo,
    Photo,
    PhotoRecord,
    SearchFilter,
    could_be_photo_id,
    date_bounds,
    day_index,
    timestamp,
)
from handspring.photos.stores.sqlite_schema import (
    BROWSE_INDEXES,
    LATEST,
    READABLE_FROM,
    migrate,
    schema_version,
)
from handspring.photos.stores.store import StoreError
from handspring.photos.stores.stored_paths import decode_stored, encode_stored

_PHOTO_COLUMNS = "id, path, size, mtime_ns, sha256, width, height, taken_at, lat, lon, exif, error"
_LOAD_CHUNK = 20_000  # rows per fetch while loading vectors for the scan
_IN_CHUNK = 900  # ids per "IN (...)": under SQLite's oldest variable limit
_SEARCHABLE = "vector IS NOT NULL"  # word for word as in the partial indexes' WHERE


class SqliteStore:
    """A PhotoStore and WritableStore on one SQLite file. Thread-safe: one
    connection behind a lock (a web server calls it from a thread pool)."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = str(path)
        self.read_only = read_only
        self._lock = threading.RLock()
        self._dirty = False
        self._loaded: LoadedIndex | None = None
        self._version = 0
        self._folder_sizes: dict[tuple[str, str], int] = {}  # (generation, folder) -> rows
        self._db = self._connect()

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    # ------------------------------------------------------------ opening

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            if not Path(self.path).is_file():
                raise StoreError(f"{self.path}: no photo index here; run `photos index` first")
            uri = f"file:{Path(self.path).as_posix()}?mode=ro"
            db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout = 10000")
            if not self.read_only:
                db.execute("PRAGMA journal_mode = WAL")
                # NORMAL in WAL mode: a crashed process loses nothing committed;
                # only a power cut may drop the last commits.
                db.execute("PRAGMA synchronous = NORMAL")
            self._check_schema(db)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StoreError(f"{self.path}: not a usable SQLite photo index ({exc})") from exc
        except BaseException:
            db.close()
            raise
        return db

    def _check_schema(self, db: sqlite3.Connection) -> None:
        found = self._version = schema_version(db)
        if found > LATEST:
            raise StoreError(
                f"{self.path}: index schema version {found} is newer than this handspring "
                f"understands ({LATEST}); upgrade handspring to use it"
            )
        if found < LATEST:
            if self.read_only and found >= READABLE_FROM:
                return  # readable as it is, without the newer indexes
            if self.read_only:
                raise StoreError(
                    f"{self.path}: index schema version {found} needs upgrading to {LATEST}; "
                    "open it once for writing (e.g. `handspring photos status`)"
                )
            migrate(db)
            self._version = LATEST

    def close(self) -> None:
        with self._lock:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._db.close()
            self._loaded = None

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ reading

    def get(self, photo_id: int) -> Photo | None:
        if not could_be_photo_id(photo_id):
            return None
        with self._lock:
            row = self._db.execute(
                f"SELECT {_PHOTO_COLUMNS} FROM photos WHERE id = ?", (int(photo_id),)
            ).fetchone()
        return _photo(row) if row else None

    def get_by_path(self, path: str) -> Photo | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_PHOTO_COLUMNS} FROM photos WHERE path = ?", (encode_stored(path),)
            ).fetchone()
        return _photo(row) if row else None

    def vector(self, photo_id: int) -> np.ndarray | None:
        if not could_be_photo_id(photo_id):
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT vector FROM photos WHERE id = ?", (int(photo_id),)
            ).fetchone()
        return None if row is None or row[0] is None else _vector(row[0])

    def count(self, flt: SearchFilter | None = None) -> int:
        """Photos that search can return (indexed with a vector), of those `flt` lets
        through if given (its min_score aside)."""
        where, params = _conditions(flt or SearchFilter())
        with self._lock:
            return int(
                self._db.execute(f"SELECT count(*) FROM photos WHERE {where}", params).fetchone()[0]
            )

    def errors(self) -> list[Photo]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_PHOTO_COLUMNS} FROM photos WHERE error IS NOT NULL ORDER BY path"
            ).fetchall()
        return [_photo(row) for row in rows]

    def model(self) -> ModelInfo | None:
        meta = self._meta()
        if "image_model" not in meta:
            return None
        return ModelInfo(meta["image_model"], int(meta["dim"]), meta.get("precision", "fp32"))

    def _meta(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def files_under(self, roots: Sequence[str]) -> Iterator[IndexedFile]:
        for root in roots:
            low, high = _prefix_range(root)
            with self._lock:
                rows = self._db.execute(
                    "SELECT id, path, size, mtime_ns, sha256, vector IS NOT NULL, error"
                    " FROM photos WHERE path >= ? AND path < ?",
                    (low, high),
                ).fetchall()
            for row in rows:
                path, error = decode_stored(row[1]), _text_from_store(row[6])
                yield IndexedFile(row[0], path, row[2], row[3], row[4], bool(row[5]), error)

    def vector_for_sha256(self, sha256: str) -> np.ndarray | None:
        with self._lock:
            row = self._db.execute(
                "SELECT vector FROM photos WHERE sha256 = ? AND vector IS NOT NULL LIMIT 1",
                (sha256,),
            ).fetchone()
        return None if row is None else _vector(row[0])

    # ------------------------------------------------------------ browsing

    def browse(self, flt: SearchFilter, after: BrowseKey | None, limit: int) -> BrowsePage:
        """The `limit` photos after `after` in the library's order (see browsing.py) that
        `flt` lets through (its min_score aside). Date filters leave undated photos out."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        rows: list[tuple[Photo, int]] = []
        if after is None or not after.undated:
            rows += self._dated_page(flt, after, limit + 1)
        if len(rows) <= limit and not flt.needs_taken_at:
            start = after if after is not None and after.undated else None
            rows += self._undated_page(flt, start, limit + 1 - len(rows))
        photos = [photo for photo, _ in rows[:limit]]
        more = len(rows) > limit
        return BrowsePage(photos, key_after(*rows[limit - 1]) if more else None)

    def _dated_page(
        self, flt: SearchFilter, after: BrowseKey | None, limit: int
    ) -> list[tuple[Photo, int]]:
        where, params = _conditions(flt)
        where += " AND taken_ts IS NOT NULL"
        if after is not None and after.photo_id is not None:
            where += " AND (taken_ts, id) < (?, ?)"
            params += [after.taken_ts, after.photo_id]
        elif after is not None:
            where += " AND taken_ts < ?"
            params.append(after.taken_ts)
        hint = ""
        # In a folder, walk the time index unless the folder is small enough to sort whole:
        # either way a page reads about sqrt(limit * photos) rows, never the whole library.
        if (
            self._version >= BROWSE_INDEXES
            and flt.folder
            and not flt.on_this_day
            and self._folder_rows(flt.folder) ** 2 > limit * self._all_rows()
        ):
            hint = "INDEXED BY photos_dated"
        return self._page_rows(
            f"SELECT {_PHOTO_COLUMNS}, mtime_ns FROM photos {hint} WHERE {where}"
            " ORDER BY taken_ts DESC, id DESC LIMIT ?",
            [*params, limit],
        )

    def _undated_page(
        self, flt: SearchFilter, after: BrowseKey | None, limit: int
    ) -> list[tuple[Photo, int]]:
        where, params = _conditions(flt)
        where += " AND taken_ts IS NULL"
        if after is not None and after.mtime_ns is not None:
            if after.photo_id is not None:
                where += " AND (mtime_ns, id) < (?, ?)"
                params += [after.mtime_ns, after.photo_id]
            else:
                where += " AND mtime_ns < ?"
                params.append(after.mtime_ns)
        hint = "INDEXED BY photos_undated" if self._version >= BROWSE_INDEXES else ""
        return self._page_rows(
            f"SELECT {_PHOTO_COLUMNS}, mtime_ns FROM photos {hint} WHERE {where}"
            " ORDER BY mtime_ns DESC, id DESC LIMIT ?",
            [*params, limit],
        )

    def _page_rows(self, sql: str, params: list[object]) -> list[tuple[Photo, int]]:
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [(_photo(row[:-1]), int(row[-1])) for row in rows]

    def _folder_rows(self, folder: str) -> int:
        generation = self._meta().get("generation", "0")
        key = (generation, folder)
        if key not in self._folder_sizes:
            low, high = _prefix_range(folder)
            with self._lock:
                (rows,) = self._db.execute(
                    "SELECT count(*) FROM photos WHERE path >= ? AND path < ?", (low, high)
                ).fetchone()
            self._folder_sizes = {k: v for k, v in self._folder_sizes.items() if k[0] == generation}
            self._folder_sizes[key] = int(rows)
        return self._folder_sizes[key]

    def _all_rows(self) -> int:
        with self._lock:
            # max(id) stands in for the row count: no scan, and near enough for a plan.
            return int(self._db.execute("SELECT coalesce(max(id), 0) FROM photos").fetchone()[0])

    def timeline(self, flt: SearchFilter) -> Timeline:
        """Photos `flt` lets through by month, and the undated ones (see Timeline)."""
        where, params = _conditions(flt)
        undated_where, undated_params = _conditions(SearchFilter(folder=flt.folder))
        with self._lock:
            months = self._db.execute(
                "SELECT strftime('%Y-%m', taken_ts, 'unixepoch') AS month, count(*) FROM photos"
                f" WHERE {where} AND taken_ts IS NOT NULL GROUP BY month",
                params,
            ).fetchall()
            (undated,) = self._db.execute(
                f"SELECT count(*) FROM photos WHERE {undated_where} AND taken_ts IS NULL",
                undated_params,
            ).fetchone()
        counts = {str(month): int(count) for month, count in months if month}
        return Timeline(months_newest_first(counts), int(undated), not flt.needs_taken_at)

    def folders(self) -> dict[str, int]:
        """Each folder that holds searchable photos -> how many it holds itself."""
        counts: dict[str, int] = {}
        with self._lock:
            cursor = self._db.execute(f"SELECT path FROM photos WHERE {_SEARCHABLE}")
            for (path,) in cursor:
                folder = path.rpartition("/")[0] or "/"
                counts[folder] = counts.get(folder, 0) + 1
        return {decode_stored(folder): count for folder, count in counts.items()}

    def stats(self) -> IndexStats:
        with self._lock:
            (errors,) = self._db.execute(
                "SELECT count(*) FROM photos WHERE error IS NOT NULL"
            ).fetchone()
            (last_photo,) = self._db.execute("SELECT max(indexed_at) FROM photos").fetchone()
        meta = self._meta()
        last = float(meta["last_commit"]) if "last_commit" in meta else last_photo
        size = sum(
            Path(self.path + suffix).stat().st_size
            for suffix in ("", "-wal")
            if Path(self.path + suffix).is_file()
        )
        return IndexStats(
            "SQLite", self.path, self.count(), int(errors), size, last,
            LastRun.from_json(meta.get("last_run")),
        )  # fmt: skip

    def vector_chunks(
        self, flt: SearchFilter | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, float32 unit vectors [n, dim]) of the searchable photos `flt` lets
        through, in ascending id order, a few thousand at a time."""
        where, params = _conditions(flt or SearchFilter())
        last = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    f"SELECT id, vector FROM photos WHERE {where} AND id > ? ORDER BY id LIMIT ?",
                    [*params, last, _LOAD_CHUNK],
                ).fetchall()
            if not rows:
                return
            last = int(rows[-1][0])
            ids = np.array([row[0] for row in rows], dtype=np.int64)
            yield ids, np.frombuffer(b"".join(row[1] for row in rows), "<f4").reshape(len(rows), -1)

    # ------------------------------------------------------------ searching

    def search(self, query: np.ndarray, flt: SearchFilter, limit: int, offset: int) -> list[Hit]:
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must be >= 0, got {limit} and {offset}")
        loaded = self._index()
        if loaded is None or limit == 0:
            return []
        if flt.folder is not None:  # the loaded index holds stored paths (stored_paths.py)
            flt = replace(flt, folder=encode_stored(flt.folder))
        allowed = loaded.allowed(flt)
        top = loaded.scan.top_k(query, limit + offset, self._vectors_of, allowed, flt.min_score)
        page = top[offset:]
        photos = self._photos_of([photo_id for photo_id, _ in page])
        return [Hit(photos[pid], score) for pid, score in page if pid in photos]

    def preload(self) -> None:
        """Load the in-memory copy for search now (~10 s per million photos here), so a
        server pays it at start rather than on its first query."""
        self._index()

    def _index(self) -> LoadedIndex | None:
        """The in-memory scan, loaded again if the index changed since it was loaded."""
        with self._lock:
            generation = self._meta().get("generation", "0")
            if self._loaded is not None and self._loaded.generation == generation:
                return self._loaded
            self._loaded = None  # let the old copy go before the new one is built
            own_snapshot = not self._db.in_transaction
            if own_snapshot:
                self._db.execute("BEGIN")  # one snapshot for the count and the rows
            try:
                count = int(
                    self._db.execute(
                        "SELECT count(*) FROM photos WHERE vector IS NOT NULL"
                    ).fetchone()[0]
                )
                if count == 0:
                    return None
                dim = int(self._meta()["dim"])
                cursor = self._db.execute(
                    "SELECT id, vector, taken_ts, month_day, path FROM photos"
                    " WHERE vector IS NOT NULL ORDER BY id"
                )
                chunks = iter(lambda: cursor.fetchmany(_LOAD_CHUNK), [])
                self._loaded = LoadedIndex.build(generation, count, dim, chunks)
            finally:
                if own_snapshot:
                    self._db.execute("COMMIT")
            return self._loaded

    def _vectors_of(self, photo_ids: np.ndarray) -> np.ndarray:
        found: dict[int, bytes] = {}
        ids = [int(i) for i in photo_ids]
        with self._lock:
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                found.update(
                    self._db.execute(
                        f"SELECT id, vector FROM photos WHERE id IN ({marks})", chunk
                    ).fetchall()
                )
        if any(found.get(i) is None for i in ids):  # deleted since the scan was loaded
            dim = self._loaded.scan.dim if self._loaded else 0
            gone = np.full(dim, np.nan, dtype=np.float32)
            return np.stack([_vector(found[i]) if found.get(i) else gone for i in ids])
        return np.frombuffer(b"".join(found[i] for i in ids), dtype="<f4").reshape(len(ids), -1)

    def _photos_of(self, photo_ids: list[int]) -> dict[int, Photo]:
        out: dict[int, Photo] = {}
        with self._lock:
            for chunk in _chunks(photo_ids):
                marks = ",".join("?" * len(chunk))
                for row in self._db.execute(
                    f"SELECT {_PHOTO_COLUMNS} FROM photos WHERE id IN ({marks})", chunk
                ):
                    out[row[0]] = _photo(row)
        return out

    # ------------------------------------------------------------ writing

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
        for chunk in _chunks([int(i) for i in photo_ids]):
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
            if self._dirty:
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


def _conditions(flt: SearchFilter) -> tuple[str, list[object]]:
    """SQL for the searchable photos `flt` lets through (min_score aside), and its values."""
    where, params = [_SEARCHABLE], []
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
        params += list(_prefix_range(flt.folder))
    return " AND ".join(where), params


def _prefix_range(folder: str) -> tuple[str, str]:
    """[low, high) of the stored paths under a folder: '/a/' <= path < '/a0' ('0' follows
    '/'). A stored form keeps every "/" where it was, so this holds for them too."""
    prefix = encode_stored(folder).rstrip("/") + "/"
    return prefix, prefix[:-1] + "0"


def _chunks(items: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


def _blob(vector: np.ndarray) -> bytes:
    """Unit length, float32 little-endian: search scores are cosines, as in Qdrant."""
    vector = np.asarray(vector, dtype="<f4").reshape(-1)
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0:
        raise ValueError("refusing to store a vector that is zero or has NaN or infinite values")
    if abs(norm - 1) > 1e-5:  # embedders give unit vectors; those are stored bit for bit
        vector = (vector / norm).astype("<f4")
    return vector.tobytes()


def _vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def _photo(row: Sequence) -> Photo:
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
        error=_text_from_store(error),
    )


def _text_from_store(stored: str | None) -> str | None:
    return None if stored is None else decode_stored(stored)
