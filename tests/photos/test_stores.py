"""What every store promises (SQLite, and Qdrant in its embedded mode): records
round-trip, ids are stable, writes show at commit, and search is the exact
cosine top-k of a brute-force scan under every filter, page by page."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from handspring.photos.stores.browsing import LastRun
from handspring.photos.stores.records import MAX_PHOTO_ID, SearchFilter, date_bounds
from handspring.photos.stores.store import StoreError, WritableStore, open_store
from tests.support.photo_records import DIM, TEST_MODEL, record, unit_vector


def _url(kind: str, tmp_path: Path) -> str:
    return (
        f"sqlite://{tmp_path / 'index.db'}" if kind == "sqlite" else f"qdrant://{tmp_path / 'qd'}"
    )


@pytest.fixture(params=["sqlite", "qdrant"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(request.param, tmp_path)


@pytest.fixture
def store(store_url: str) -> Iterator[WritableStore]:
    opened = open_store(store_url)
    opened.set_model(TEST_MODEL)
    yield opened
    opened.close()


def test_records_round_trip(store: WritableStore) -> None:
    taken = datetime.datetime(2023, 7, 4, 15, 30, 12)
    photo_id = store.put(record("/lib/a/one.jpg", 1, taken), unit_vector(1))
    broken = store.put(
        record("/lib/b/bad.jpg", 2, error="truncated: the image data ends early"), None
    )
    store.commit()
    photo = store.get(photo_id)
    assert photo is not None
    assert (photo.path, photo.size, photo.taken_at, photo.gps) == (
        "/lib/a/one.jpg",
        1001,
        taken,
        (1.5, -2.25),
    )
    assert photo.mtime == pytest.approx(1.6e9)
    assert photo.exif == {"Make": "Acme", "ISOSpeedRatings": [100, 200], "seed": 1}
    assert store.get_by_path("/lib/a/one.jpg") == photo
    np.testing.assert_array_equal(store.vector(photo_id), unit_vector(1))
    assert store.vector(broken) is None and store.get(12345) is None
    assert store.count() == 1
    assert [p.path for p in store.errors()] == ["/lib/b/bad.jpg"]
    assert store.model() == TEST_MODEL
    np.testing.assert_array_equal(store.vector_for_sha256(f"{1:064x}"), unit_vector(1))
    assert store.vector_for_sha256(f"{2:064x}") is None  # no vector to reuse
    under = {f.path: f for f in store.files_under(["/lib/a"])}
    assert list(under) == ["/lib/a/one.jpg"]
    assert (under["/lib/a/one.jpg"].id, under["/lib/a/one.jpg"].has_vector) == (photo_id, True)
    assert len(list(store.files_under(["/lib", "/elsewhere"]))) == 2
    assert list(store.files_under(["/li"])) == []  # a folder, not a string prefix


def test_ids_are_stable_and_never_reused(store: WritableStore) -> None:
    first = store.put(record("/lib/one.jpg", 1), unit_vector(1))
    second = store.put(record("/lib/two.jpg", 2), unit_vector(2))
    assert store.put(record("/lib/one.jpg", 3), unit_vector(3)) == first  # same path, same id
    store.move(second, record("/lib/renamed.jpg", 2))
    store.commit()
    assert store.get(second).path == "/lib/renamed.jpg"  # type: ignore[union-attr]
    np.testing.assert_array_equal(store.vector(second), unit_vector(2))
    store.delete([first, second])
    store.commit()
    assert store.count() == 0
    third = store.put(record("/lib/one.jpg", 4), unit_vector(4))
    assert third not in (first, second)


@pytest.mark.parametrize("impossible", [MAX_PHOTO_ID + 1, 2**64, 10**30, 0, -1, -(2**63) - 1])
def test_ids_no_photo_can_have_are_simply_not_indexed(
    store: WritableStore, impossible: int
) -> None:
    # Beyond SQLite's 64-bit INTEGER, sqlite3 raised OverflowError: a 500 on the web API.
    photo_id = store.put(record("/lib/one.jpg", 1), unit_vector(1))
    store.commit()
    assert store.get(impossible) is None
    assert store.vector(impossible) is None
    assert store.get(photo_id) is not None  # the store is still usable


def test_writes_show_at_commit_and_survive_reopening(store_url: str) -> None:
    store = open_store(store_url)
    store.set_model(TEST_MODEL)
    kept = store.put(record("/lib/kept.jpg", 1), unit_vector(1))
    store.commit()
    store.put(record("/lib/lost.jpg", 2), unit_vector(2))  # never committed: a crash
    store.close()
    again = open_store(store_url)
    try:
        assert [f.path for f in again.files_under(["/lib"])] == ["/lib/kept.jpg"]
        assert again.get(kept) is not None and again.model() == TEST_MODEL
    finally:
        again.close()
    reader = open_store(store_url, read_only=True)
    try:
        with pytest.raises(StoreError, match="read-only"):
            reader.put(record("/lib/x.jpg", 3), unit_vector(3))
    finally:
        reader.close()


FILTERS = [
    SearchFilter(),
    SearchFilter(not_before=datetime.date(2021, 1, 1)),
    SearchFilter(not_after=datetime.date(2021, 6, 30)),
    SearchFilter(not_before=datetime.date(2020, 7, 4), not_after=datetime.date(2020, 7, 4)),
    SearchFilter(on_this_day=datetime.date(1999, 7, 4)),
    SearchFilter(min_score=0.2),
    SearchFilter(folder="/lib/b"),
    SearchFilter(folder="/lib/b/", on_this_day=datetime.date(2024, 7, 4), min_score=-0.5),
    SearchFilter(folder="/"),
]


def _expected(vectors, records, query, flt: SearchFilter) -> list[tuple[str, float]]:
    start, end = date_bounds(flt)
    rows = []
    for rec, vector in zip(records, vectors, strict=True):
        taken = rec.taken_at
        if flt.needs_taken_at and taken is None:
            continue
        stamp = (taken - datetime.datetime(1970, 1, 1)).total_seconds() if taken else None
        if (start is not None and stamp < start) or (end is not None and stamp >= end):
            continue
        if flt.on_this_day and (taken.month, taken.day) != (
            flt.on_this_day.month,
            flt.on_this_day.day,
        ):
            continue
        if flt.folder and not rec.path.startswith(flt.folder.rstrip("/") + "/"):
            continue
        score = float(vector @ query)
        if flt.min_score is not None and score < flt.min_score:
            continue
        rows.append((rec.path, score))
    return sorted(rows, key=lambda r: -r[1])


def test_search_is_the_exact_top_k_under_every_filter(store: WritableStore) -> None:
    rng = np.random.default_rng(7)
    records, vectors = [], []
    for i in range(120):
        folder = ["/lib/a", "/lib/b", "/lib/b/deeper", "/lib/bb", "/lib/b-x"][i % 5]
        day = datetime.datetime(2019 + i % 5, 7 if i % 3 else 1, 4 if i % 2 else 9, i % 24)
        rec = record(f"{folder}/p{i:03}.jpg", i, None if i % 7 == 0 else day)
        records.append(rec)
        vectors.append(unit_vector(1000 + i))
        store.put(rec, vectors[-1])
    store.put(record("/lib/a/broken.jpg", 999, error="corrupt"), None)
    store.commit()
    for _ in range(3):
        query = rng.standard_normal(DIM).astype(np.float32)
        query /= np.linalg.norm(query)
        for flt in FILTERS:
            expected = _expected(vectors, records, query, flt)
            for limit, offset in ((10, 0), (7, 5), (200, 0), (5, len(expected) - 2)):
                hits = store.search(query * 3.0, flt, limit, offset)  # any length works
                want = expected[offset : offset + limit]
                assert [h.photo.path for h in hits] == [p for p, _ in want], (flt, limit, offset)
                np.testing.assert_allclose([h.score for h in hits], [s for _, s in want], atol=1e-5)
    assert store.search(query, SearchFilter(), 0, 0) == []
    with pytest.raises(ValueError):
        store.search(query, SearchFilter(), -1, 0)


def test_filter_validation() -> None:
    with pytest.raises(ValueError, match="absolute"):
        SearchFilter(folder="relative/path")
    with pytest.raises(ValueError, match="empty date range"):
        SearchFilter(not_before=datetime.date(2024, 1, 2), not_after=datetime.date(2024, 1, 1))


def test_store_urls(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unknown store URL"):
        open_store("mysql://host/db")
    with pytest.raises(StoreError, match="must be absolute"):
        open_store("sqlite://relative.db")
    with pytest.raises(StoreError, match="no photo index here"):
        open_store(str(tmp_path / "missing.db"), read_only=True)
    with pytest.raises(StoreError, match="no photo index here"):
        open_store(f"qdrant://{tmp_path / 'missing'}", read_only=True)
    plain = open_store(str(tmp_path / "sub" / "plain.db"))  # a plain path: SQLite, folders made
    plain.close()
    assert (tmp_path / "sub" / "plain.db").is_file()


def test_the_last_run_is_kept_at_once_and_is_not_a_change(store_url: str) -> None:
    store = open_store(store_url)
    store.set_model(TEST_MODEL)
    store.put(record("/lib/a.jpg", 1), unit_vector(1))
    store.commit()
    changed = store.stats().last_change
    assert store.stats().last_run is None  # an index written before runs were recorded
    run = LastRun(finished=1.8e9, seconds=65.5, added=12, deleted=1, failed=3, completed=False)
    store.record_run(run)
    assert store.stats().last_change == changed
    store.close()  # no commit: recording a run needs none
    again = open_store(store_url, read_only=True)
    try:
        assert again.stats().last_run == run
        with pytest.raises(StoreError, match="read-only"):
            again.record_run(run)
    finally:
        again.close()
