"""Browsing the library without a query, in every store (SQLite, and Qdrant's embedded
mode): newest first, keyset pages that cover every photo once whatever the page size
(photos taken at the same second included), undated photos last by file time, the
filters, month counts, folders and totals; and SQLite pages that walk an index rather
than sort the library, so the 500th page costs what the first does."""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from handspring.photos.stores.browsing import BrowseKey, folder_tree
from handspring.photos.stores.records import PhotoRecord, SearchFilter
from handspring.photos.stores.store import WritableStore, open_store
from tests.support.photo_records import TEST_MODEL, record, unit_vector

BURST = datetime.datetime(2021, 7, 4, 10, 15, 0)  # five photos taken in the same second


def _taken(i: int) -> datetime.datetime | None:
    if i % 7 == 3:
        return None
    if i < 5:
        return BURST
    return datetime.datetime(2012 + i % 9, 1 + i % 12, 1 + i % 27, i % 24, 0)


def _record(i: int) -> PhotoRecord:
    folder = ["/lib/a", "/lib/a/deep", "/lib/b", "/lib/a-2"][i % 4]
    base = record(f"{folder}/p{i:03d}.jpg", i, _taken(i))
    # Undated photos tie on file time in pairs too.
    return PhotoRecord(**{**base.__dict__, "mtime_ns": 1_600_000_000_000_000_000 + i // 2})


PHOTOS = 60


@pytest.fixture(scope="module", params=["sqlite", "qdrant"])
def library(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WritableStore]:
    """One library per store for the module: the tests only read it."""
    base = tmp_path_factory.mktemp(request.param)
    url = f"sqlite://{base / 'i.db'}" if request.param == "sqlite" else f"qdrant://{base}/q"
    store = open_store(url)
    store.set_model(TEST_MODEL)
    for i in range(PHOTOS):
        store.put(_record(i), unit_vector(i))
    store.put(record("/lib/a/broken.jpg", 999, error="truncated"), None)  # never listed
    store.commit()
    yield store
    store.close()


def _expected(store: WritableStore, flt: SearchFilter | None = None) -> list[int]:
    """The library's order computed apart: dated newest first, then undated by file time."""
    flt = flt or SearchFilter()
    rows = []
    for i in range(PHOTOS):
        rec = _record(i)
        photo = store.get_by_path(rec.path)
        assert photo is not None
        rows.append((rec, photo.id))

    def passes(rec: PhotoRecord) -> bool:
        taken = rec.taken_at
        if flt.needs_taken_at and taken is None:
            return False
        if flt.not_before and taken and taken.date() < flt.not_before:
            return False
        if flt.not_after and taken and taken.date() > flt.not_after:
            return False
        day = flt.on_this_day
        if day and taken and (taken.month, taken.day) != (day.month, day.day):
            return False
        return flt.folder_prefix is None or rec.path.startswith(flt.folder_prefix)

    kept = [(rec, pid) for rec, pid in rows if passes(rec)]
    dated = sorted((r for r in kept if r[0].taken_at), key=lambda r: (r[0].taken_at, r[1]))
    undated = sorted((r for r in kept if not r[0].taken_at), key=lambda r: (r[0].mtime_ns, r[1]))
    return [pid for _, pid in dated[::-1]] + [pid for _, pid in undated[::-1]]


def _all_pages(store: WritableStore, flt: SearchFilter, limit: int) -> list[int]:
    seen: list[int] = []
    after: BrowseKey | None = None
    for _ in range(PHOTOS + 2):
        page = store.browse(flt, after, limit)
        seen += [p.id for p in page.photos]
        if page.next is None:
            return seen
        assert len(page.photos) == limit
        after = BrowseKey.parse(str(page.next))  # as a client would send it back
    raise AssertionError("paging never ended")


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 100])
def test_pages_cover_the_library_newest_first(library: WritableStore, limit: int) -> None:
    assert _all_pages(library, SearchFilter(), limit) == _expected(library)


FILTERS = [
    SearchFilter(not_before=datetime.date(2015, 1, 1), not_after=datetime.date(2018, 12, 31)),
    SearchFilter(on_this_day=datetime.date(2000, 7, 4)),
    SearchFilter(folder="/lib/a"),
    SearchFilter(folder="/lib/a", not_before=datetime.date(2016, 6, 1)),
]


@pytest.mark.parametrize("flt", FILTERS, ids=["dates", "on-this-day", "folder", "folder+date"])
def test_filters_narrow_the_pages(library: WritableStore, flt: SearchFilter) -> None:
    expected = _expected(library, flt)
    assert 0 < len(expected) < PHOTOS
    assert _all_pages(library, flt, 4) == expected
    timeline = library.timeline(flt)
    assert timeline.total == len(expected) == library.count(flt)
    assert timeline.undated_included == (not flt.needs_taken_at)
    undated_in_scope = _expected(library, SearchFilter(folder=flt.folder))
    assert timeline.undated == sum(
        1
        for pid in undated_in_scope
        if library.get(pid).taken_at is None  # type: ignore[union-attr]
    )


def test_a_date_jumps_into_the_library(library: WritableStore) -> None:
    order = _expected(library)
    page = library.browse(SearchFilter(), BrowseKey.parse("2016-03"), 5)
    taken = [library.get(i).taken_at for i in order]  # type: ignore[union-attr]
    first = next(n for n, t in enumerate(taken) if t and t < datetime.datetime(2016, 3, 1))
    assert [p.id for p in page.photos] == order[first : first + 5]
    undated = library.browse(SearchFilter(), BrowseKey.parse("undated"), 100)
    assert [p.id for p in undated.photos] == [
        i for i, t in zip(order, taken, strict=True) if t is None
    ]


def test_months_and_totals(library: WritableStore) -> None:
    timeline = library.timeline(SearchFilter())
    expected: dict[str, int] = {}
    for i in range(PHOTOS):
        if (taken := _taken(i)) is not None:
            expected[taken.strftime("%Y-%m")] = expected.get(taken.strftime("%Y-%m"), 0) + 1
    assert timeline.months == sorted(expected.items(), reverse=True)
    assert timeline.undated == sum(1 for i in range(PHOTOS) if _taken(i) is None)
    assert timeline.total == PHOTOS == library.count()
    stats = library.stats()
    assert (stats.photos, stats.errors) == (PHOTOS, 1)
    assert stats.last_change is not None and stats.last_change > 1.7e9
    assert stats.bytes_on_disk and stats.bytes_on_disk > 0


def test_folders_with_their_counts(library: WritableStore) -> None:
    direct = library.folders()
    assert direct == {"/lib/a": 15, "/lib/a/deep": 15, "/lib/b": 15, "/lib/a-2": 15}
    tree = [(f.path, f.photos, f.depth) for f in folder_tree(direct)]
    assert tree == [
        ("/lib", 60, 0),
        ("/lib/a", 30, 1),
        ("/lib/a/deep", 15, 2),
        ("/lib/a-2", 15, 1),
        ("/lib/b", 15, 1),
    ]


def test_cursor_text_round_trips() -> None:
    for text in ["2021-07-04T10:15:00~42", "2021-07-04T10:15:00.250000", "undated", "undated~5~3"]:
        assert str(BrowseKey.parse(text)) == text
    assert str(BrowseKey.parse("2019-03")) == "2019-03-01T00:00:00"
    for bad in ["yesterday", "2019-13", "undated~x", "2021-07-04~0", "2021-07-04T10:00+02:00"]:
        with pytest.raises(ValueError, match="not a place in the library"):
            BrowseKey.parse(bad)


# ------------------------------------------------------------------ SQLite's plans

PLAN_CASES = {
    "dated": SearchFilter(),
    "dates": SearchFilter(not_before=datetime.date(2015, 1, 1)),
    "on this day": SearchFilter(on_this_day=datetime.date(2000, 7, 4)),
}


def _plans(db_path: Path, flt: SearchFilter, after: BrowseKey | None) -> list[str]:
    """The query plans of the statements a browse page runs."""
    from handspring.photos.stores.sqlite.store import SqliteStore

    plans: list[str] = []
    store = SqliteStore(db_path, read_only=True)
    try:
        real = store._db

        class Explaining:
            def execute(self, sql: str, params: object = ()) -> sqlite3.Cursor:
                if sql.lstrip().startswith("SELECT") and "ORDER BY" in sql:
                    rows = real.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
                    plans.append(" | ".join(row[3] for row in rows))
                return real.execute(sql, params)

        store._db = Explaining()  # type: ignore[assignment]
        store.browse(flt, after, 10)
    finally:
        store._db = real
        store.close()
    return plans


@pytest.mark.parametrize("case", PLAN_CASES)
def test_sqlite_pages_walk_an_index(tmp_path: Path, case: str) -> None:
    path = tmp_path / "plan.db"
    with open_store(str(path)) as store:
        store.set_model(TEST_MODEL)
        for i in range(PHOTOS):
            store.put(_record(i), unit_vector(i))
        store.commit()
    deep = BrowseKey.parse("2014-05-01T00:00:00~40")
    for after in (None, deep, BrowseKey.parse("undated~1600000000000000020~41")):
        for plan in _plans(path, PLAN_CASES[case], after):
            assert "USING INDEX photos_" in plan and "TEMP B-TREE" not in plan, plan


def test_a_reader_browses_a_version_2_index(tmp_path: Path) -> None:
    """A server opened read-only on an index made before the browse indexes still pages
    correctly (by scans) until the next index run upgrades the file."""
    path = tmp_path / "v2.db"
    with open_store(str(path)) as store:
        store.set_model(TEST_MODEL)
        for i in range(PHOTOS):
            store.put(_record(i), unit_vector(i))
        store.commit()
        expected = _expected(store)
    db = sqlite3.connect(path, isolation_level=None)
    for index in ("photos_dated", "photos_undated", "photos_on_day"):
        db.execute(f"DROP INDEX {index}")
    db.execute("PRAGMA user_version = 2")
    db.close()
    with open_store(str(path), read_only=True) as reader:
        assert _all_pages(reader, SearchFilter(), 7) == expected
        assert _all_pages(reader, SearchFilter(folder="/lib/a"), 3) == [
            i
            for i in expected
            if reader.get(i).path.startswith("/lib/a/")  # type: ignore[union-attr]
        ]
