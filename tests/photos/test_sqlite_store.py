"""The SQLite store's own promises: one file in WAL mode, a versioned schema that
migrates forward (and refuses what is newer), and a search that sees what
another process committed."""

from __future__ import annotations

import datetime
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from handspring.photos.stores.records import ModelInfo, SearchFilter
from handspring.photos.stores.sqlite.schema import LATEST, migrate, schema_version
from handspring.photos.stores.sqlite.store import SqliteStore
from handspring.photos.stores.store import StoreError
from tests.support.photo_records import TEST_MODEL, record, unit_vector


def test_one_file_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    with SqliteStore(path) as store:
        store.set_model(TEST_MODEL)
        store.put(record("/lib/a.jpg", 1), unit_vector(1))
        store.commit()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert schema_version(db) == LATEST
    (blob,) = db.execute("SELECT vector FROM photos").fetchone()
    np.testing.assert_array_equal(np.frombuffer(blob, "<f4"), unit_vector(1))  # float32 BLOB
    db.close()


def test_migrates_a_version_1_index(tmp_path: Path) -> None:
    """Version 1 had no date columns; version 2 adds them and fills them in."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, upto=1)
    assert schema_version(db) == 1
    for i, taken in enumerate(["2020-07-04T10:00:00", None, "2021-12-25T08:30:00"]):
        db.execute(
            "INSERT INTO photos (path, size, mtime_ns, sha256, taken_at, exif, vector, indexed_at)"
            " VALUES (?, 1, 1, ?, ?, '{}', ?, 0)",
            (f"/lib/{i}.jpg", f"{i:064x}", taken, unit_vector(i).tobytes()),
        )
    db.execute("INSERT INTO meta VALUES ('image_model', 'old-model'), ('dim', '16')")
    db.close()

    with pytest.raises(StoreError, match="needs upgrading"):
        SqliteStore(path, read_only=True)
    with SqliteStore(path) as store:
        assert store.model() == ModelInfo("old-model", 16, "fp32")
        hits = store.search(
            unit_vector(0), SearchFilter(on_this_day=datetime.date(2024, 7, 4)), 5, 0
        )
        assert [h.photo.path for h in hits] == ["/lib/0.jpg"]
        hits = store.search(
            unit_vector(0), SearchFilter(not_before=datetime.date(2021, 1, 1)), 5, 0
        )
        assert [h.photo.path for h in hits] == ["/lib/2.jpg"]
        assert store.search(unit_vector(1), SearchFilter(), 1, 0)[0].photo.path == "/lib/1.jpg"
    db = sqlite3.connect(path)
    assert schema_version(db) == LATEST
    db.close()


def test_refuses_newer_schemas_and_other_files(tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    db = sqlite3.connect(newer)
    db.execute(f"PRAGMA user_version = {LATEST + 1}")
    db.close()
    with pytest.raises(StoreError, match=f"schema version {LATEST + 1} is newer"):
        SqliteStore(newer)
    text = tmp_path / "notes.db"
    text.write_text("this is not a database, just some words to fill a page " * 100)
    with pytest.raises(StoreError, match=r"notes\.db: not a usable SQLite photo index"):
        SqliteStore(text)


def test_search_sees_what_another_connection_committed(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    writer = SqliteStore(path)
    writer.set_model(TEST_MODEL)
    first = writer.put(record("/lib/a.jpg", 1), unit_vector(1))
    writer.commit()
    reader = SqliteStore(path, read_only=True)
    try:
        reader.preload()
        assert [h.photo.id for h in reader.search(unit_vector(2), SearchFilter(), 5, 0)] == [first]
        second = writer.put(record("/lib/b.jpg", 2), unit_vector(2))
        assert len(reader.search(unit_vector(2), SearchFilter(), 5, 0)) == 1  # not committed yet
        writer.commit()
        assert reader.search(unit_vector(2), SearchFilter(), 5, 0)[0].photo.id == second
        writer.delete([second])
        writer.commit()
        assert [h.photo.id for h in reader.search(unit_vector(2), SearchFilter(), 5, 0)] == [first]
    finally:
        reader.close()
        writer.close()
