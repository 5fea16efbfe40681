"""Browsing a Qdrant photo index (see browsing.py for the order): pages by scroll with
`order_by`, which Qdrant's embedded mode supports too, and whole-collection facts
(months, folders) by scrolling payloads.

`order_by` leaves the order of equal values open and takes no offset, so a page is
made exact here: points are sorted by (value, id) after the scroll, the group of
equal values where a page starts or is cut is fetched whole, and the ones before the
page's start are dropped. Ranges on the integer `mtime_ns` are floats in Qdrant's
API, so its groups are fetched with a margin and compared exactly here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from handspring.photos.stores.browsing import (
    BrowseKey,
    BrowsePage,
    Timeline,
    key_after,
    month_of,
    months_newest_first,
)
from handspring.photos.stores.qdrant.payload import photo_of, vector_of
from handspring.photos.stores.records import SearchFilter
from handspring.photos.stores.stored_paths import decode_stored

_PAGE = 1000
# Wider than float64's step near today's mtimes in ns (256): a margin for float ranges.
_MARGINS = {"taken_ts": 0.0, "mtime_ns": 1000.0}


@dataclass(frozen=True)
class Collection:
    client: Any  # qdrant_client.QdrantClient
    name: str
    models: Any  # qdrant_client.models


def browse(
    col: Collection, must: list[Any], flt: SearchFilter, after: BrowseKey | None, limit: int
) -> BrowsePage:
    """`must`: the conditions for the searchable photos `flt` lets through."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    m = col.models
    points: list[Any] = []
    if after is None or not after.undated:
        start = (after.taken_ts, after.photo_id) if after is not None else None
        no_date = m.IsNullCondition(is_null=m.PayloadField(key="taken_ts"))
        dated = [*must, m.Filter(must_not=[no_date])]
        points += _ordered(col, dated, "taken_ts", start, limit + 1)
    if len(points) <= limit and not flt.needs_taken_at:
        start = None
        if after is not None and after.undated and after.mtime_ns is not None:
            start = (after.mtime_ns, after.photo_id)
        undated = [*must, m.IsNullCondition(is_null=m.PayloadField(key="taken_ts"))]
        points += _ordered(col, undated, "mtime_ns", start, limit + 1 - len(points))
    photos = [photo_of(p) for p in points[:limit]]
    more = len(points) > limit
    last = points[limit - 1] if more else None
    return BrowsePage(
        photos, key_after(photos[-1], int(last.payload["mtime_ns"])) if last else None
    )


def _ordered(
    col: Collection, must: list[Any], key: str, start: tuple[Any, int | None] | None, limit: int
) -> list[Any]:
    """Up to `limit` points by (payload[key], id) descending, strictly after `start`
    ((value, id); id None: after every point of that value)."""
    m = col.models
    margin = _MARGINS[key]
    near: list[Any] = []
    conditions = list(must)
    if start is not None:
        near = _near(col, must, key, start[0])
        upper = start[0] + margin
        conditions.append(m.FieldCondition(key=key, range=m.Range(lte=upper)))
    wanted = limit + len(near)  # points near the start may come first and be dropped
    scrolled, _ = col.client.scroll(
        col.name,
        scroll_filter=m.Filter(must=conditions),
        limit=wanted,
        order_by=m.OrderBy(key=key, direction=m.Direction.DESC),
        with_payload=True,
    )
    found = {int(p.id): p for p in [*near, *scrolled] if _after_start(p, key, start)}
    if len(scrolled) == wanted:
        # Cut at its lowest value, maybe inside a group of equal values: complete it.
        low = scrolled[-1].payload[key]
        for p in _near(col, must, key, low):
            if p.payload[key] == low and _after_start(p, key, start):
                found[int(p.id)] = p
    ordered = sorted(found.values(), key=lambda p: (p.payload[key], int(p.id)), reverse=True)
    return ordered[:limit]


def _after_start(point: Any, key: str, start: tuple[Any, int | None] | None) -> bool:
    if start is None:
        return True
    value, photo_id = point.payload[key], int(point.id)
    if value != start[0]:
        return bool(value < start[0])
    return start[1] is not None and photo_id < start[1]


def _near(col: Collection, must: list[Any], key: str, value: Any) -> list[Any]:
    """Every point whose value is within the key's margin of `value`."""
    m = col.models
    margin = _MARGINS[key]
    band = m.FieldCondition(key=key, range=m.Range(gte=value - margin, lte=value + margin))
    return scroll_all(col, m.Filter(must=[*must, band]))


def scroll_all(
    col: Collection, flt: Any, payload: bool | list[str] = True, vectors: bool = False
) -> list[Any]:
    return [p for page in scroll_pages(col, flt, payload, vectors) for p in page]


def scroll_pages(
    col: Collection, flt: Any, payload: bool | list[str] = True, vectors: bool = False
) -> Iterator[list[Any]]:
    """Every point `flt` lets through, by ascending id, a page at a time."""
    offset = None
    while True:
        points, offset = col.client.scroll(
            col.name,
            scroll_filter=flt,
            limit=_PAGE,
            offset=offset,
            with_payload=payload,
            with_vectors=vectors,
        )
        if points:
            yield points
        if offset is None:
            return


def timeline(
    col: Collection, must: list[Any], undated_must: list[Any], flt: SearchFilter
) -> Timeline:
    """`undated_must`: `must` without the date conditions."""
    m = col.models
    counts: dict[str, int] = {}
    for page in scroll_pages(col, m.Filter(must=must), payload=["taken_ts"]):
        for point in page:
            taken_ts = (point.payload or {}).get("taken_ts")
            if taken_ts is not None:
                month = month_of(float(taken_ts))
                counts[month] = counts.get(month, 0) + 1
    no_date = m.IsNullCondition(is_null=m.PayloadField(key="taken_ts"))
    undated = col.client.count(
        col.name, count_filter=m.Filter(must=[*undated_must, no_date]), exact=True
    ).count
    return Timeline(months_newest_first(counts), int(undated), not flt.needs_taken_at)


def folders(col: Collection, must: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for page in scroll_pages(col, col.models.Filter(must=must), payload=["path"]):
        for point in page:
            folder = point.payload["path"].rpartition("/")[0] or "/"
            counts[folder] = counts.get(folder, 0) + 1
    return {decode_stored(folder): count for folder, count in counts.items()}


def vector_chunks(col: Collection, must: list[Any]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for page in scroll_pages(col, col.models.Filter(must=must), payload=False, vectors=True):
        ids = np.array([int(p.id) for p in page], dtype=np.int64)
        yield ids, np.stack([vector_of(p) for p in page]).astype(np.float32)
