"""The photo index in Qdrant, through qdrant-client: the same code for the
embedded local mode (a folder) and for a server URL.

One collection (default "photos"; `?collection=name` in the URL picks another)
with a named vector "image" (cosine); a file that could not be read is a point
without a vector. The payload carries the Photo fields, plus what the filters
need: `taken_ts` (seconds), `month_day` (704 for July 4th) and `folders` (every
folder above the photo, so a folder filter is one exact match). The model and
the next free id live in the collection's metadata.

Writes are buffered and sent at `commit` as one batch, in order. Ids are
reserved in the metadata before the points are written, so a killed run can
leave a gap in the ids, never two photos on one id.

On a Qdrant server the filters' fields get payload indexes, made when the
collection is created and, for a collection made before, when an index run
opens it. A cluster's shards, replication factor and write consistency factor
(ClusterSettings) come from the URL (`?shards=6&replication_factor=2&
write_consistency_factor=2`) or from `photos index`'s flags: they shape the
collection when it is created; later, the last two are updated in place and
the shard count, fixed at creation, is only checked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import numpy as np

from handspring.photos.stores.browsing import BrowseKey, BrowsePage, IndexStats, LastRun, Timeline
from handspring.photos.stores.qdrant import browse as qdrant_browse
from handspring.photos.stores.qdrant.cluster import ClusterSettings, ServerSetup
from handspring.photos.stores.qdrant.payload import (
    VECTOR,
    error_of,
    photo_of,
    vector_of,
)
from handspring.photos.stores.qdrant.writes import QdrantWrites
from handspring.photos.stores.records import (
    Hit,
    IndexedFile,
    ModelInfo,
    Photo,
    SearchFilter,
    could_be_photo_id,
    date_bounds,
    day_index,
)
from handspring.photos.stores.store import StoreError
from handspring.photos.stores.stored_paths import decode_stored, encode_stored

DEFAULT_COLLECTION = "photos"
SCHEMA = 1
_SCROLL_PAGE = 1000


_QUERY_KEYS = {"collection"} | {field.name for field in fields(ClusterSettings)}


class QdrantStore(ServerSetup, QdrantWrites):
    """A PhotoStore and WritableStore on a Qdrant collection."""

    def __init__(
        self,
        client: Any,
        collection: str,
        where: str,
        read_only: bool,
        remote: bool,
        cluster: ClusterSettings | None = None,
    ):
        from qdrant_client import models

        self._models = models
        self.client = client
        self.collection = collection
        self.where = where
        self.read_only = read_only
        self.remote = remote
        self.cluster = ClusterSettings()
        self._operations: list[Any] = []
        # Paths and ids this store has seen, so a write need not look the path up.
        self._ids_by_path: dict[str, int] = {}
        self._paths_by_id: dict[int, str] = {}
        self._meta: dict[str, Any] = self._read_meta()
        if self._meta and not read_only:
            # A collection made by an older handspring, or by hand: indexes it lacks.
            self._ensure_payload_indexes()
        if cluster is not None:
            self.configure_cluster(cluster)

    def __repr__(self) -> str:
        return f"QdrantStore({self.where!r}, collection={self.collection!r})"

    @classmethod
    def local(cls, folder: str, *, read_only: bool = False) -> QdrantStore:
        from qdrant_client import QdrantClient

        if read_only and not Path(folder).is_dir():
            raise StoreError(f"{folder}: no photo index here; run `photos index` first")
        try:
            client = QdrantClient(path=folder)
        except RuntimeError as exc:  # the folder is locked by another client
            raise StoreError(f"{folder}: {exc}") from exc
        return cls(client, DEFAULT_COLLECTION, folder, read_only, remote=False)

    @classmethod
    def connect(cls, url: str, *, read_only: bool = False) -> QdrantStore:
        """A server: http(s)://host:port[?collection=name][&shards=N][&replication_factor=N]
        [&write_consistency_factor=N] (see ClusterSettings); $QDRANT_API_KEY if set."""
        from qdrant_client import QdrantClient

        parts = urlsplit(url)
        query = parse_qs(parts.query)
        unknown = sorted(set(query) - _QUERY_KEYS)
        if unknown:
            raise StoreError(
                f"{url}: unknown setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(_QUERY_KEYS))}"
            )
        collection = query.get("collection", [DEFAULT_COLLECTION])[0]
        cluster = ClusterSettings.from_query(query, url)
        base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        client = QdrantClient(url=base, api_key=os.environ.get("QDRANT_API_KEY"))
        return cls(client, collection, base, read_only, remote=True, cluster=cluster)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> QdrantStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ metadata

    def _read_meta(self) -> dict[str, Any]:
        if not self._exists():
            return {}
        meta = dict(self.client.get_collection(self.collection).config.metadata or {})
        schema = int(meta.get("handspring_schema", 0))
        if schema > SCHEMA:
            raise StoreError(
                f"{self}: index schema version {schema} is newer than this handspring "
                f"understands ({SCHEMA}); upgrade handspring to use it"
            )
        if schema == 0:
            raise StoreError(f"{self}: collection {self.collection!r} is not a handspring index")
        return meta

    def model(self) -> ModelInfo | None:
        if "image_model" not in self._meta:
            return None
        m = self._meta
        return ModelInfo(str(m["image_model"]), int(m["dim"]), str(m.get("precision", "fp32")))

    def set_model(self, info: ModelInfo) -> None:
        self._writable()
        m = self._models
        if not self._exists():
            self._check_write_consistency(None)
            self.client.create_collection(
                self.collection,
                vectors_config={VECTOR: m.VectorParams(size=info.dim, distance=m.Distance.COSINE)},
                shard_number=self.cluster.shards,
                replication_factor=self.cluster.replication_factor,
                write_consistency_factor=self.cluster.write_consistency_factor,
            )
            self._ensure_payload_indexes()
        self._meta = {
            "handspring_schema": SCHEMA,
            "image_model": info.name,
            "dim": info.dim,
            "precision": info.precision,
            "next_id": int(self._meta.get("next_id", 1)),
        }
        self.client.update_collection(self.collection, metadata=self._meta)

    def _writable(self) -> None:
        if self.read_only:
            raise StoreError(f"{self}: opened read-only")

    # ------------------------------------------------------------ reading

    def get(self, photo_id: int) -> Photo | None:
        if not could_be_photo_id(photo_id):
            return None
        records = self._retrieve([int(photo_id)], vectors=False)
        return photo_of(records[0]) if records else None

    def get_by_path(self, path: str) -> Photo | None:
        points = self._scroll(self._match("path", encode_stored(path)), limit=1)
        return photo_of(points[0]) if points else None

    def vector(self, photo_id: int) -> np.ndarray | None:
        if not could_be_photo_id(photo_id):
            return None
        records = self._retrieve([int(photo_id)], vectors=True)
        return vector_of(records[0]) if records else None

    def count(self, flt: SearchFilter | None = None) -> int:
        """Photos that search can return (indexed with a vector), of those `flt` lets
        through if given (its min_score aside)."""
        if not self._exists():
            return 0
        must = self._searchable(flt or SearchFilter())
        flt_must = self._models.Filter(must=must)
        count = self.client.count(self.collection, count_filter=flt_must, exact=True)
        return int(count.count)

    # ------------------------------------------------------------ browsing (browse.py)

    def browse(self, flt: SearchFilter, after: BrowseKey | None, limit: int) -> BrowsePage:
        if not self._exists():
            return BrowsePage([], None)
        return qdrant_browse.browse(self._browsed(), self._searchable(flt), flt, after, limit)

    def timeline(self, flt: SearchFilter) -> Timeline:
        if not self._exists():
            return Timeline([], 0, not flt.needs_taken_at)
        undated = self._searchable(SearchFilter(folder=flt.folder))
        return qdrant_browse.timeline(self._browsed(), self._searchable(flt), undated, flt)

    def folders(self) -> dict[str, int]:
        if not self._exists():
            return {}
        return qdrant_browse.folders(self._browsed(), self._searchable(SearchFilter()))

    def vector_chunks(
        self, flt: SearchFilter | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self._exists():
            must = self._searchable(flt or SearchFilter())
            yield from qdrant_browse.vector_chunks(self._browsed(), must)

    def stats(self) -> IndexStats:
        errors = len(self._scroll(self._match("has_vector", False))) if self._exists() else 0
        size = None
        if not self.remote:
            size = sum(p.stat().st_size for p in Path(self.where).rglob("*") if p.is_file())
        kind = "Qdrant server" if self.remote else "Qdrant (embedded)"
        where = f"{self.where} (collection {self.collection})"
        last = self._meta.get("last_commit")
        run = LastRun.from_json(self._meta.get("last_run"))
        return IndexStats(kind, where, self.count(), errors, size, last, run)

    def _browsed(self) -> qdrant_browse.Collection:
        return qdrant_browse.Collection(self.client, self.collection, self._models)

    def _searchable(self, flt: SearchFilter) -> list[Any]:
        m = self._models
        searchable = m.FieldCondition(key="has_vector", match=m.MatchValue(value=True))
        narrowed = self._filter(flt)
        return [searchable, *(narrowed.must if narrowed is not None else [])]

    def errors(self) -> list[Photo]:
        photos = [photo_of(p) for p in self._scroll(self._match("has_vector", False))]
        return sorted(photos, key=lambda p: p.path)

    def files_under(self, roots: Sequence[str]) -> Iterator[IndexedFile]:
        for root in roots:
            folder = encode_stored(root.rstrip("/") or "/")
            for point in self._scroll(self._match("folders", folder)):
                p = point.payload
                path = decode_stored(p["path"])
                self._remember(path, int(point.id))
                yield IndexedFile(
                    int(point.id),
                    path,
                    int(p["size"]),
                    int(p["mtime_ns"]),
                    p["sha256"],
                    bool(p["has_vector"]),
                    error_of(p),
                )

    def vector_for_sha256(self, sha256: str) -> np.ndarray | None:
        m = self._models
        flt = m.Filter(
            must=[
                m.FieldCondition(key="sha256", match=m.MatchValue(value=sha256)),
                m.FieldCondition(key="has_vector", match=m.MatchValue(value=True)),
            ]
        )
        points = self._scroll(flt, limit=1, vectors=True)
        return vector_of(points[0]) if points else None

    def _retrieve(self, ids: list[int], vectors: bool) -> list[Any]:
        if not self._exists():
            return []
        return list(
            self.client.retrieve(self.collection, ids, with_payload=True, with_vectors=vectors)
        )

    def _scroll(self, flt: Any, limit: int | None = None, vectors: bool = False) -> list[Any]:
        if not self._exists():
            return []
        out: list[Any] = []
        offset = None
        while True:
            page = _SCROLL_PAGE if limit is None else min(_SCROLL_PAGE, limit - len(out))
            points, offset = self.client.scroll(
                self.collection,
                scroll_filter=flt,
                limit=page,
                offset=offset,
                with_payload=True,
                with_vectors=vectors,
            )
            out.extend(points)
            if offset is None or (limit is not None and len(out) >= limit):
                return out

    def _match(self, key: str, value: Any) -> Any:
        m = self._models
        return m.Filter(must=[m.FieldCondition(key=key, match=m.MatchValue(value=value))])

    # ------------------------------------------------------------ searching

    def search(self, query: np.ndarray, flt: SearchFilter, limit: int, offset: int) -> list[Hit]:
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must be >= 0, got {limit} and {offset}")
        if limit == 0 or not self._exists():
            return []
        vector = np.asarray(query, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(norm) or norm == 0:
            raise ValueError("query vector is zero or not finite")
        extra: dict[str, Any] = {}
        if self.remote:  # the embedded mode is always exact and warns about params
            extra["search_params"] = self._models.SearchParams(exact=True)
        response = self.client.query_points(
            self.collection,
            query=(vector / norm).tolist(),
            using=VECTOR,
            query_filter=self._filter(flt),
            limit=limit,
            offset=offset,
            score_threshold=flt.min_score,
            with_payload=True,
            **extra,
        )
        return [Hit(photo_of(point), float(point.score)) for point in response.points]

    def preload(self) -> None:
        """Nothing to load: Qdrant searches on its side."""

    def _filter(self, flt: SearchFilter) -> Any:
        m = self._models
        must = []
        start, end = date_bounds(flt)
        if start is not None or end is not None:
            must.append(m.FieldCondition(key="taken_ts", range=m.Range(gte=start, lt=end)))
        if flt.on_this_day is not None:
            day = day_index(flt.on_this_day)
            must.append(m.FieldCondition(key="month_day", match=m.MatchValue(value=day)))
        if flt.folder is not None and flt.folder.rstrip("/"):
            folder = encode_stored(flt.folder.rstrip("/"))
            must.append(m.FieldCondition(key="folders", match=m.MatchValue(value=folder)))
        return m.Filter(must=must) if must else None
