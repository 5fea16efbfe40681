"""The default photo index: one SQLite file in WAL mode, vectors as float32 BLOBs.

Search is exact over every vector (see `exact_scan`): an int8 copy of all vectors
lives in memory, loaded on the first search and loaded again when another
connection (an indexer running beside a server) has committed changes.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from handspring.photos.search.loaded_index import LoadedIndex
from handspring.photos.stores.browsing import (
    IndexStats,
    LastRun,
)
from handspring.photos.stores.records import (
    Hit,
    IndexedFile,
    ModelInfo,
    Photo,
    SearchFilter,
    could_be_photo_id,
)
from handspring.photos.stores.sqlite.browse import SqliteBrowsing
from handspring.photos.stores.sqlite.rows import (
    PHOTO_COLUMNS,
    chunks,
    conditions,
    photo_from_row,
    prefix_range,
    text_from_store,
)
from handspring.photos.stores.sqlite.schema import (
    LATEST,
    READABLE_FROM,
    migrate,
    schema_version,
)
from handspring.photos.stores.sqlite.writes import SqliteWrites
from handspring.photos.stores.store import StoreError
from handspring.photos.stores.stored_paths import decode_stored, encode_stored

_LOAD_CHUNK = 20_000  # rows per fetch while loading vectors for the scan


class SqliteStore(SqliteBrowsing, SqliteWrites):
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
                f"SELECT {PHOTO_COLUMNS} FROM photos WHERE id = ?", (int(photo_id),)
            ).fetchone()
        return photo_from_row(row) if row else None

    def get_by_path(self, path: str) -> Photo | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {PHOTO_COLUMNS} FROM photos WHERE path = ?", (encode_stored(path),)
            ).fetchone()
        return photo_from_row(row) if row else None

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
        where, params = conditions(flt or SearchFilter())
        with self._lock:
            return int(
                self._db.execute(f"SELECT count(*) FROM photos WHERE {where}", params).fetchone()[0]
            )

    def errors(self) -> list[Photo]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {PHOTO_COLUMNS} FROM photos WHERE error IS NOT NULL ORDER BY path"
            ).fetchall()
        return [photo_from_row(row) for row in rows]

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
            low, high = prefix_range(root)
            with self._lock:
                rows = self._db.execute(
                    "SELECT id, path, size, mtime_ns, sha256, vector IS NOT NULL, error"
                    " FROM photos WHERE path >= ? AND path < ?",
                    (low, high),
                ).fetchall()
            for row in rows:
                path, error = decode_stored(row[1]), text_from_store(row[6])
                yield IndexedFile(row[0], path, row[2], row[3], row[4], bool(row[5]), error)

    def vector_for_sha256(self, sha256: str) -> np.ndarray | None:
        with self._lock:
            row = self._db.execute(
                "SELECT vector FROM photos WHERE sha256 = ? AND vector IS NOT NULL LIMIT 1",
                (sha256,),
            ).fetchone()
        return None if row is None else _vector(row[0])

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
        where, params = conditions(flt or SearchFilter())
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
            for chunk in chunks(ids):
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
            for chunk in chunks(photo_ids):
                marks = ",".join("?" * len(chunk))
                for row in self._db.execute(
                    f"SELECT {PHOTO_COLUMNS} FROM photos WHERE id IN ({marks})", chunk
                ):
                    out[row[0]] = photo_from_row(row)
        return out


def _vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)
