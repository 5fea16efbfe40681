"""The web API's library routes: browsing without a query (`/api/photos`), its months
and totals (`/api/timeline`), the folders (`/api/folders`) and near-duplicates
(`/api/duplicates`)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query

from handspring.photos.search.duplicates import DuplicateGroup, find_duplicates
from handspring.photos.stores.browsing import folder_tree
from handspring.photos.stores.records import Photo, SearchFilter
from handspring.photos.stores.store import PhotoStore
from handspring.photos.web.models import (
    BrowsePageOut,
    BrowseQuery,
    DuplicateGroupOut,
    DuplicatePhoto,
    DuplicatesOut,
    DuplicatesQuery,
    FilterFields,
    FoldersOut,
    TimelineOut,
    folders_of,
    summary_of,
    timeline_of,
)

T = TypeVar("T")
Locked = Callable[[Callable[[], T]], T]


def undated_excluded(store: PhotoStore, flt: SearchFilter) -> int | None:
    """Photos without a date that `flt`'s date conditions leave out (None: it has none)."""
    if not flt.needs_taken_at:
        return None
    in_folder = SearchFilter(folder=flt.folder)
    dated = SearchFilter(folder=flt.folder, not_before=dt.date.min)
    return store.count(in_folder) - store.count(dated)


def library_routes(store: PhotoStore, locked: Locked[Any]) -> APIRouter:
    router = APIRouter()
    duplicates_cache: dict[tuple[Any, ...], DuplicatesOut] = {}
    duplicates_lock = threading.Lock()

    @router.get(
        "/photos",
        response_model=BrowsePageOut,
        summary="The library, newest first (undated photos last), a keyset page at a time",
    )
    def browse(query: Annotated[BrowseQuery, Query()]) -> BrowsePageOut:
        flt = query.to_search_filter()
        page = locked(lambda: store.browse(flt, query.key(), query.limit))
        return BrowsePageOut(
            photos=[summary_of(photo) for photo in page.photos],
            limit=query.limit,
            next_before=str(page.next) if page.next is not None else None,
        )

    @router.get(
        "/timeline",
        response_model=TimelineOut,
        summary="How many photos the filters let through, by month, and undated",
    )
    def timeline(query: Annotated[FilterFields, Query()]) -> TimelineOut:
        flt = query.to_search_filter()
        return timeline_of(locked(lambda: store.timeline(flt)))

    @router.get("/folders", response_model=FoldersOut, summary="The folders that hold photos")
    def folders() -> FoldersOut:
        return folders_of(folder_tree(locked(store.folders)))

    @router.get(
        "/duplicates",
        response_model=DuplicatesOut,
        summary="Groups of near-duplicate photos (exact all-pairs cosine; nothing is deleted)",
    )
    def duplicates(query: Annotated[DuplicatesQuery, Query()]) -> DuplicatesOut:
        flt = SearchFilter(folder=query.folder)
        # One pass at a time; its answer is kept until the index changes.
        with duplicates_lock:
            stats = locked(store.stats)
            key = (query.threshold, query.folder, stats.last_change, stats.photos)
            if key not in duplicates_cache:
                groups = locked(lambda: find_duplicates(store, query.threshold, flt))
                compared = locked(lambda: store.count(flt))
                duplicates_cache.clear()
                duplicates_cache[key] = DuplicatesOut(
                    threshold=query.threshold,
                    groups=[_group_out(g, locked(lambda g=g: _photos(store, g))) for g in groups],
                    photos_compared=compared,
                )
            return duplicates_cache[key]

    return router


def _photos(store: PhotoStore, group: DuplicateGroup) -> list[Photo]:
    return [photo for i in group.photo_ids if (photo := store.get(i)) is not None]


def _group_out(group: DuplicateGroup, photos: list[Photo]) -> DuplicateGroupOut:
    closest: dict[int, float] = {}
    for a, b, score in group.pairs:
        closest[a] = max(closest.get(a, -1.0), score)
        closest[b] = max(closest.get(b, -1.0), score)
    photos = sorted(photos, key=lambda p: (-(p.width or 0) * (p.height or 0), -p.size, p.path))
    return DuplicateGroupOut(
        photos=[
            DuplicatePhoto(**summary_of(p).model_dump(), closest=closest[p.id]) for p in photos
        ],
        closest=group.closest,
        loosest=group.loosest,
    )
