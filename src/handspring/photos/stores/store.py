"""The photo index: what every store offers, and choosing one from a URL.

open_store("sqlite:///abs/path/index.db")      # or a plain file path: SQLite, the default
open_store("qdrant:///abs/path/folder")        # qdrant-client's embedded local mode
open_store("qdrant+http://host:6333")          # a Qdrant server (qdrant+https:// too)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from handspring.errors import HandspringError
from handspring.photos.stores.browsing import BrowseKey, BrowsePage, IndexStats, LastRun, Timeline
from handspring.photos.stores.records import (
    Hit,
    IndexedFile,
    ModelInfo,
    Photo,
    PhotoRecord,
    SearchFilter,
)

DEFAULT_STORE_ENV = "HANDSPRING_PHOTOS_DB"


class StoreError(HandspringError):
    """The index cannot be opened or used: wrong URL, newer schema, another model..."""


@runtime_checkable
class PhotoStore(Protocol):
    """Reading the index: what search and the web UI use."""

    def get(self, photo_id: int) -> Photo | None: ...

    def vector(self, photo_id: int) -> np.ndarray | None:
        """float32 [dim], normalised; None if the photo is unknown or has no vector."""
        ...

    def search(self, query: np.ndarray, flt: SearchFilter, limit: int, offset: int) -> list[Hit]:
        """Exact cosine top-k over every vector that passes `flt`, best first."""
        ...

    def count(self, flt: SearchFilter | None = None) -> int:
        """Searchable photos, of those `flt` lets through if given (min_score aside)."""
        ...

    def browse(self, flt: SearchFilter, after: BrowseKey | None, limit: int) -> BrowsePage:
        """The library newest first, `limit` photos after `after` (see browsing.py)."""
        ...

    def timeline(self, flt: SearchFilter) -> Timeline:
        """Photos `flt` lets through by month, and the undated ones."""
        ...

    def folders(self) -> dict[str, int]:
        """Each folder that holds searchable photos -> how many it holds itself."""
        ...

    def vector_chunks(
        self, flt: SearchFilter | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, float32 unit vectors) of the searchable photos, by ascending id, in chunks."""
        ...

    def stats(self) -> IndexStats: ...

    def close(self) -> None: ...


@runtime_checkable
class WritableStore(PhotoStore, Protocol):
    """What the indexer needs on top of reading. Writes become visible (and
    durable) at `commit`; a crash loses at most what was written since."""

    def model(self) -> ModelInfo | None: ...

    def set_model(self, info: ModelInfo) -> None: ...

    def get_by_path(self, path: str) -> Photo | None: ...

    def files_under(self, roots: Sequence[str]) -> Iterator[IndexedFile]:
        """Every indexed file whose path lies under one of these folders."""
        ...

    def vector_for_sha256(self, sha256: str) -> np.ndarray | None: ...

    def put(self, record: PhotoRecord, vector: np.ndarray | None) -> int:
        """Insert or replace the photo at record.path; its id is kept if it had one."""
        ...

    def move(self, photo_id: int, record: PhotoRecord) -> None:
        """The same content under a new path (or new mtime): id and vector are kept."""
        ...

    def delete(self, photo_ids: Sequence[int]) -> None: ...

    def errors(self) -> list[Photo]:
        """Files that could not be read, with their reason."""
        ...

    def commit(self) -> None: ...

    def record_run(self, run: LastRun) -> None:
        """Keep what an index run did (`stats().last_run`), at once and durably; not a
        change of the index (`last_change` stays)."""
        ...


def default_store_url() -> str:
    """$HANDSPRING_PHOTOS_DB, else ~/.local/share/handspring/photos.db."""
    if env := os.environ.get(DEFAULT_STORE_ENV):
        return env
    return str(Path.home() / ".local" / "share" / "handspring" / "photos.db")


def open_store(url: str, *, read_only: bool = False) -> WritableStore:
    """Open (creating it unless read_only) the index a URL names. See the module notes."""
    if url.startswith(("qdrant+http://", "qdrant+https://")):
        from handspring.photos.stores.qdrant.store import QdrantStore

        return QdrantStore.connect(url.removeprefix("qdrant+"), read_only=read_only)
    if url.startswith("qdrant://"):
        from handspring.photos.stores.qdrant.store import QdrantStore

        return QdrantStore.local(_absolute(url.removeprefix("qdrant://"), url), read_only=read_only)
    if url.startswith("sqlite://"):
        path = _absolute(url.removeprefix("sqlite://"), url)
    elif "://" in url:
        raise StoreError(
            f"unknown store URL {url!r}: use a file path, sqlite:///abs/path.db, "
            "qdrant:///abs/folder or qdrant+http(s)://host:port"
        )
    else:
        path = str(Path(url).expanduser().absolute())
    from handspring.photos.stores.sqlite.store import SqliteStore

    return SqliteStore(path, read_only=read_only)


def _absolute(path: str, url: str) -> str:
    if not path.startswith("/"):
        raise StoreError(f"{url}: the path after the scheme must be absolute (three slashes)")
    return path
