"""A store's vectors held in memory for search, with what the filters need of each
photo (date, month-day, folder) as arrays, so a filter is a mask made in a few
milliseconds, before the top-k."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from handspring.photos.search.exact_scan import Int8Scan
from handspring.photos.stores.records import SearchFilter, date_bounds, day_index

# One row as a store reads it: (id, float32 little-endian vector bytes, taken_ts or
# None, month_day or None, path). Rows come in chunks, in ascending id order.
Row = tuple[int, bytes, float | None, int | None, str]


@dataclass
class LoadedIndex:
    generation: str  # the store's change counter when this was loaded
    scan: Int8Scan
    taken_ts: np.ndarray  # float64 [N], NaN when the photo has no date
    month_day: np.ndarray  # int16 [N], 0 when the photo has no date
    folder_of_row: np.ndarray  # int32 [N]: index into `folders`
    folders: list[str]  # sorted: each photo's folder, once

    @classmethod
    def build(
        cls, generation: str, count: int, dim: int, chunks: Iterable[Sequence[Row]]
    ) -> LoadedIndex:
        taken_ts = np.full(count, np.nan)
        month_day = np.zeros(count, dtype=np.int16)
        folder_of_row = np.zeros(count, dtype=np.int32)
        folder_ids: dict[str, int] = {}

        def vectors() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            start = 0
            for rows in chunks:
                end = start + len(rows)
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                blob = b"".join(r[1] for r in rows)
                taken_ts[start:end] = [np.nan if r[2] is None else r[2] for r in rows]
                month_day[start:end] = [r[3] or 0 for r in rows]
                folder_of_row[start:end] = [
                    folder_ids.setdefault(r[4].rpartition("/")[0], len(folder_ids)) for r in rows
                ]
                start = end
                yield ids, np.frombuffer(blob, dtype="<f4").reshape(len(rows), dim)

        scan = Int8Scan.build(count, dim, vectors())
        folders = sorted(folder_ids)
        # Renumber folders in sorted order, so a folder and those below it are one range.
        renumber = np.empty(len(folder_ids), dtype=np.int32)
        for new, name in enumerate(folders):
            renumber[folder_ids[name]] = new
        return cls(generation, scan, taken_ts, month_day, renumber[folder_of_row], folders)

    def allowed(self, flt: SearchFilter) -> np.ndarray | None:
        """Rows that pass the filter (min_score aside), or None when all do."""
        mask: np.ndarray | None = None

        def both(more: np.ndarray) -> np.ndarray:
            return more if mask is None else mask & more

        start, end = date_bounds(flt)
        with np.errstate(invalid="ignore"):  # NaN (no date) compares False: left out
            if start is not None:
                mask = both(self.taken_ts >= start)
            if end is not None:
                mask = both(self.taken_ts < end)
        if flt.on_this_day is not None:
            mask = both(self.month_day == day_index(flt.on_this_day))
        if flt.folder is not None:
            mask = both(self._in_folder(flt.folder.rstrip("/")))
        return mask

    def _in_folder(self, folder: str) -> np.ndarray:
        if not folder:  # "/": everything
            return np.ones(len(self.folder_of_row), dtype=bool)
        wanted = np.zeros(len(self.folders), dtype=bool)
        # Sorted names from `folder` up to `folder + "0"` ('0' follows '/') hold it and
        # everything below it, and siblings such as `folder-2`, which the test excludes.
        low = bisect.bisect_left(self.folders, folder)
        high = bisect.bisect_left(self.folders, folder + "0")
        for i in range(low, high):
            wanted[i] = self.folders[i] == folder or self.folders[i].startswith(folder + "/")
        return wanted[self.folder_of_row]
