"""The SQLite index's schema: a list of migrations, applied in order, with the
version in `PRAGMA user_version` (as rclip does). Never edit a released step;
append a new one."""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Callable

from handspring.photos.stores.records import day_index, timestamp


def _run(db: sqlite3.Connection, *statements: str) -> None:
    # Not executescript: it commits first, and a migration must be one transaction.
    for statement in statements:
        db.execute(statement)


def _v1_photos_and_meta(db: sqlite3.Connection) -> None:
    # AUTOINCREMENT: a deleted photo's id is never given to another photo, so an id
    # a client still holds can only point to that photo or to nothing.
    _run(
        db,
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """
        CREATE TABLE photos (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            path TEXT NOT NULL UNIQUE,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            width INTEGER,
            height INTEGER,
            taken_at TEXT,
            lat REAL,
            lon REAL,
            exif TEXT NOT NULL DEFAULT '{}',
            error TEXT,
            vector BLOB,
            indexed_at REAL NOT NULL
        )
        """,
        "CREATE INDEX photos_by_sha256 ON photos (sha256)",
    )


def _v2_date_columns(db: sqlite3.Connection) -> None:
    """Date filters as numbers: seconds (naive time read as UTC) and month*100+day."""
    _run(
        db,
        "ALTER TABLE photos ADD COLUMN taken_ts REAL",
        "ALTER TABLE photos ADD COLUMN month_day INTEGER",
        "CREATE INDEX photos_by_taken_ts ON photos (taken_ts)",
    )
    rows = db.execute("SELECT id, taken_at FROM photos WHERE taken_at IS NOT NULL").fetchall()
    for photo_id, taken_at in rows:
        moment = datetime.datetime.fromisoformat(taken_at)
        db.execute(
            "UPDATE photos SET taken_ts = ?, month_day = ? WHERE id = ?",
            (timestamp(moment), day_index(moment), photo_id),
        )


def _v3_browse_indexes(db: sqlite3.Connection) -> None:
    """Browsing newest first, keyset-paged: the searchable photos by taken time, the undated
    ones by file time, and "on this day" by month-day then time. Partial (searchable
    photos only), so counting and paging never read a row they skip."""
    _run(
        db,
        "CREATE INDEX photos_dated ON photos (taken_ts) WHERE vector IS NOT NULL",
        "CREATE INDEX photos_undated ON photos (mtime_ns)"
        " WHERE vector IS NOT NULL AND taken_ts IS NULL",
        "CREATE INDEX photos_on_day ON photos (month_day, taken_ts) WHERE vector IS NOT NULL",
    )


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _v1_photos_and_meta,
    _v2_date_columns,
    _v3_browse_indexes,
)
LATEST = len(MIGRATIONS)
# A read-only connection can use an index this old: the later steps only add indexes, and
# a server must not stop serving when handspring is upgraded before the next index run.
READABLE_FROM = 2
BROWSE_INDEXES = 3  # from this version on, the browse indexes exist


def schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, upto: int = LATEST) -> int:
    """Bring the database to version `upto` in one transaction; returns the version it had.
    The connection must be in autocommit mode (isolation_level=None)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(db)
        for step in MIGRATIONS[found:upto]:
            step(db)
        if found < upto:
            db.execute(f"PRAGMA user_version = {int(upto)}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return found
