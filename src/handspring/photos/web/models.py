"""The photo-search web API's JSON shapes (camelCase, as the original tool's) and the
conversion of index records into them."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from handspring.photos.stores.records import Hit, Photo, SearchFilter

MAX_LIMIT = 200
MAX_OFFSET = 100_000


class ApiModel(BaseModel):
    """JSON in camelCase, as the original tool's API; Python attributes in snake_case."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


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
        if folder is None:
            return None
        if not os.path.isabs(folder):
            raise ValueError("must be an absolute folder path")
        return os.path.normpath(folder)

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
    thumbnail_url: str = Field(description="add ?size=<longest side in pixels>")
    original_url: str


class HitOut(PhotoSummary):
    score: float = Field(description="cosine similarity to the query")


class ResultsPage(ApiModel):
    results: list[HitOut]
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last")


class PhotoDetail(PhotoSummary):
    size: int = Field(description="bytes")
    modified_at: dt.datetime
    sha256: str
    mime_type: str
    gps: Gps | None
    exif: dict[str, Any]
    error: str | None = Field(description="why the photo could not be read, if it could not")


class StatusOut(ApiModel):
    photos: int
    max_limit: int
    max_offset: int


class HealthOut(ApiModel):
    status: str


def _summary_fields(photo: Photo) -> dict[str, Any]:
    base = f"/api/photos/{photo.id}"
    return {
        "id": photo.id,
        "name": Path(photo.path).name,
        "path": photo.path,
        "taken_at": photo.taken_at,
        "width": photo.width,
        "height": photo.height,
        "thumbnail_url": f"{base}/thumbnail",
        "original_url": f"{base}/original",
    }


def hit_of(hit: Hit) -> HitOut:
    return HitOut(**_summary_fields(hit.photo), score=hit.score)


def detail_of(photo: Photo, mime_type: str) -> PhotoDetail:
    return PhotoDetail(
        **_summary_fields(photo),
        size=photo.size,
        modified_at=dt.datetime.fromtimestamp(photo.mtime, tz=dt.UTC),
        sha256=photo.sha256,
        mime_type=mime_type,
        gps=Gps(lat=photo.gps[0], lon=photo.gps[1]) if photo.gps else None,
        exif=photo.exif,
        error=photo.error,
    )
