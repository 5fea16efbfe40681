"""The photo-search web API's JSON shapes (camelCase, as the original tool's) and the
conversion of index records into them."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from handspring.photos.search.duplicates import DEFAULT_THRESHOLD
from handspring.photos.stores.browsing import BrowseKey, FolderCount, Timeline
from handspring.photos.stores.records import Hit, Photo, SearchFilter
from handspring.photos.stores.stored_paths import display_path
from handspring.photos.web import exif_details
from handspring.photos.web.file_state import FileState

MAX_LIMIT = 200
MAX_OFFSET = 100_000


class ApiModel(BaseModel):
    """JSON in camelCase, as the original tool's API; Python attributes in snake_case."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


def absolute_folder(folder: str | None) -> str | None:
    if folder is None:
        return None
    if not os.path.isabs(folder):
        raise ValueError("must be an absolute folder path")
    return os.path.normpath(folder)


class FilterFields(ApiModel):
    """The original tool's filter fields, plus `folder`. All optional; they combine with AND."""

    model_config = ConfigDict(extra="forbid")  # merged with ApiModel's

    min_score: float | None = Field(None, ge=-1.0, le=1.0, description="cosine similarity >= this")
    not_before: dt.date | None = Field(None, description="taken on or after this day")
    not_after: dt.date | None = Field(None, description="taken on or before this day")
    on_this_day: dt.date | bool | None = Field(
        None, description="taken on this month and day, any year; true: today (server's date)"
    )
    folder: str | None = Field(
        None, max_length=4096, description="absolute folder: only photos under it"
    )

    @field_validator("folder")
    @classmethod
    def _absolute_folder(cls, folder: str | None) -> str | None:
        return absolute_folder(folder)

    @model_validator(mode="after")
    def _dates_in_order(self) -> FilterFields:
        if self.not_before and self.not_after and self.not_before > self.not_after:
            raise ValueError("notBefore is after notAfter: no photo can match")
        return self

    def to_search_filter(self) -> SearchFilter:
        day = self.on_this_day
        return SearchFilter(
            not_before=self.not_before,
            not_after=self.not_after,
            on_this_day=dt.date.today() if day is True else (day or None),
            min_score=self.min_score,
            folder=self.folder,
        )


class SearchRequest(ApiModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(
        min_length=1,
        max_length=1000,
        description="text in any language; rclip-style terms with weights and +/- "
        "(e.g. `beach + 2:sunset - people`); indexed photos by id",
    )
    # Strict: lax mode would read `true` as 1. (SimilarQuery's come as query strings.)
    limit: int = Field(20, ge=1, le=MAX_LIMIT, strict=True)
    offset: int = Field(0, ge=0, le=MAX_OFFSET, strict=True)
    filter: FilterFields = Field(default_factory=FilterFields)

    @field_validator("query")
    @classmethod
    def _not_blank(cls, query: str) -> str:
        if not query.strip():
            raise ValueError("the query is empty")
        return query


class SimilarQuery(FilterFields):
    limit: int = Field(20, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


class BrowseQuery(FilterFields):
    """`GET /api/photos`: the library newest first, a keyset page at a time."""

    sort: Literal["taken"] = Field(
        "taken", description="newest first by the time taken; undated photos last"
    )
    before: str | None = Field(
        None,
        max_length=100,
        description="where the page starts: a page's `nextBefore`, or a date to jump to "
        "(`2019-03-01`, `2019-03`: photos taken before it)",
    )
    limit: int = Field(100, ge=1, le=MAX_LIMIT)

    @field_validator("before")
    @classmethod
    def _a_place(cls, before: str | None) -> str | None:
        if before is not None:
            BrowseKey.parse(before)  # its ValueError says what is expected
        return before

    def key(self) -> BrowseKey | None:
        return BrowseKey.parse(self.before) if self.before else None


class DuplicatesQuery(ApiModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(
        DEFAULT_THRESHOLD, ge=0.5, le=1.0, description="cosine similarity >= this"
    )
    folder: str | None = Field(None, max_length=4096, description="only photos under it")

    @field_validator("folder")
    @classmethod
    def _absolute_folder(cls, folder: str | None) -> str | None:
        return absolute_folder(folder)


class Gps(ApiModel):
    lat: float
    lon: float


class PhotoSummary(ApiModel):
    id: int
    name: str
    path: str
    taken_at: dt.datetime | None = Field(description="as the camera wrote it (local time)")
    width: int | None = Field(description="as displayed, after EXIF orientation")
    height: int | None
    size: int = Field(description="bytes")
    thumbnail_url: str = Field(description="add ?size=<longest side in pixels>")
    original_url: str


class HitOut(PhotoSummary):
    score: float = Field(description="cosine similarity to the query")


class ResultsPage(ApiModel):
    results: list[HitOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last")
    total: int | None = Field(
        None,
        description="photos the filters let through, all ranked (first page only; null "
        "with minScore, whose count shows at the last page)",
    )
    undated_excluded: int | None = Field(
        None, description="photos without a date that the date filters left out (first page)"
    )


class BrowsePageOut(ApiModel):
    photos: list[PhotoSummary]
    limit: int
    next_before: str | None = Field(description="`before` of the next page; null on the last")


class MonthOut(ApiModel):
    month: str = Field(description="YYYY-MM")
    count: int


class TimelineOut(ApiModel):
    total: int = Field(description="photos the filters let through")
    months: list[MonthOut] = Field(description="newest first")
    undated: int = Field(description="photos without a date within the folder filter")
    undated_included: bool = Field(description="false when a date filter leaves them out")


class FolderOut(ApiModel):
    path: str
    photos: int = Field(description="in it and below it")
    depth: int = Field(description="levels below the library's top folder")


class FoldersOut(ApiModel):
    folders: list[FolderOut] = Field(description="a folder before its subfolders")


class DuplicatePhoto(PhotoSummary):
    closest: float = Field(description="highest cosine to another photo of the group")


class DuplicateGroupOut(ApiModel):
    photos: list[DuplicatePhoto] = Field(description="largest (most pixels, then bytes) first")
    closest: float
    loosest: float


class DuplicatesOut(ApiModel):
    threshold: float
    groups: list[DuplicateGroupOut] = Field(description="largest groups first")
    photos_compared: int


class PhotoDetail(PhotoSummary):
    modified_at: dt.datetime
    sha256: str
    mime_type: str
    gps: Gps | None
    exif: dict[str, Any]
    camera: str | None = Field(description="from EXIF: make and model")
    lens: str | None
    exposure: str | None = Field(description="shutter, aperture, ISO, focal length")
    error: str | None = Field(description="why the photo could not be read, if it could not")
    file_state: Literal["ok", "missing", "changed", "unreadable"] = Field(
        description="whether the file on disk is still the one indexed"
    )
    file_message: str | None = Field(description="what happened to the file, if not ok")


class ModelsOut(ApiModel):
    image: str
    text: str
    text_loaded: bool = Field(description="false until the first text search (or warm-up)")


class WarmupOut(ApiModel):
    text_loaded: bool


class StatusOut(ApiModel):
    photos: int
    errors: int = Field(description="files that could not be read")
    last_change: dt.datetime | None = Field(description="when an index run last changed it")
    models: ModelsOut
    max_limit: int
    max_offset: int


class HealthOut(ApiModel):
    status: str


def _summary_fields(photo: Photo) -> dict[str, Any]:
    base = f"/api/photos/{photo.id}"
    return {
        "id": photo.id,
        # JSON cannot carry a name that is not valid UTF-8; the page finds files by id.
        "name": display_path(Path(photo.path).name),
        "path": display_path(photo.path),
        "taken_at": photo.taken_at,
        "width": photo.width,
        "height": photo.height,
        "size": photo.size,
        "thumbnail_url": f"{base}/thumbnail",
        "original_url": f"{base}/original",
    }


def hit_of(hit: Hit) -> HitOut:
    return HitOut(**_summary_fields(hit.photo), score=hit.score)


def summary_of(photo: Photo) -> PhotoSummary:
    return PhotoSummary(**_summary_fields(photo))


def detail_of(photo: Photo, mime_type: str, state: FileState) -> PhotoDetail:
    return PhotoDetail(
        **_summary_fields(photo),
        modified_at=dt.datetime.fromtimestamp(photo.mtime, tz=dt.UTC),
        sha256=photo.sha256,
        mime_type=mime_type,
        gps=Gps(lat=photo.gps[0], lon=photo.gps[1]) if photo.gps else None,
        exif=photo.exif,
        camera=exif_details.camera(photo.exif),
        lens=exif_details.lens(photo.exif),
        exposure=exif_details.exposure(photo.exif),
        error=None if photo.error is None else display_path(photo.error),
        file_state=state.state,
        file_message=None if state.message is None else display_path(state.message),
    )


def timeline_of(timeline: Timeline) -> TimelineOut:
    return TimelineOut(
        total=timeline.total,
        months=[MonthOut(month=month, count=count) for month, count in timeline.months],
        undated=timeline.undated,
        undated_included=timeline.undated_included,
    )


def folders_of(folders: list[FolderCount]) -> FoldersOut:
    return FoldersOut(
        folders=[
            FolderOut(path=display_path(f.path), photos=f.photos, depth=f.depth) for f in folders
        ]
    )
