"""Browsing the SQLite index (see browsing.py for the order): keyset pages on the time
and mtime indexes, the timeline's counts by month, and the folders."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable

from handspring.photos.stores.browsing import (
    BrowseKey,
    BrowsePage,
    Timeline,
    key_after,
    months_newest_first,
)
from handspring.photos.stores.records import Photo, SearchFilter
from handspring.photos.stores.sqlite.rows import (
    PHOTO_COLUMNS,
    SEARCHABLE,
    conditions,
    photo_from_row,
    prefix_range,
)
from handspring.photos.stores.sqlite.schema import BROWSE_INDEXES
from handspring.photos.stores.stored_paths import decode_stored


class SqliteBrowsing:
    """SqliteStore's reading in the library's order; the store holds the connection."""

    _db: sqlite3.Connection
    _lock: threading.RLock
    _version: int
    _folder_sizes: dict[tuple[str, str], int]
    _meta: Callable[[], dict[str, str]]  # the store's meta table

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
        where, params = conditions(flt)
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
            f"SELECT {PHOTO_COLUMNS}, mtime_ns FROM photos {hint} WHERE {where}"
            " ORDER BY taken_ts DESC, id DESC LIMIT ?",
            [*params, limit],
        )

    def _undated_page(
        self, flt: SearchFilter, after: BrowseKey | None, limit: int
    ) -> list[tuple[Photo, int]]:
        where, params = conditions(flt)
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
            f"SELECT {PHOTO_COLUMNS}, mtime_ns FROM photos {hint} WHERE {where}"
            " ORDER BY mtime_ns DESC, id DESC LIMIT ?",
            [*params, limit],
        )

    def _page_rows(self, sql: str, params: list[object]) -> list[tuple[Photo, int]]:
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [(photo_from_row(row[:-1]), int(row[-1])) for row in rows]

    def _folder_rows(self, folder: str) -> int:
        generation = self._meta().get("generation", "0")
        key = (generation, folder)
        if key not in self._folder_sizes:
            low, high = prefix_range(folder)
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
        where, params = conditions(flt)
        undated_where, undated_params = conditions(SearchFilter(folder=flt.folder))
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
            cursor = self._db.execute(f"SELECT path FROM photos WHERE {SEARCHABLE}")
            for (path,) in cursor:
                folder = path.rpartition("/")[0] or "/"
                counts[folder] = counts.get(folder, 0) + 1
        return {decode_stored(folder): count for folder, count in counts.items()}
