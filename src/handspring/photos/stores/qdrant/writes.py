"""QdrantStore's writes: buffered as Qdrant operations and sent at `commit` as one batch,
in order, after the ids they use are reserved in the collection's metadata (a killed run
leaves a gap in the ids, never two photos on one id)."""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from handspring.photos.stores.browsing import LastRun
from handspring.photos.stores.qdrant.payload import VECTOR, payload_of
from handspring.photos.stores.records import PhotoRecord
from handspring.photos.stores.store import StoreError
from handspring.photos.stores.stored_paths import encode_stored


class QdrantWrites:
    """put, move, delete, record_run and commit on QdrantStore's collection."""

    client: Any
    collection: str
    read_only: bool
    _models: Any
    _meta: dict[str, Any]
    _operations: list[Any]
    _ids_by_path: dict[str, int]
    _paths_by_id: dict[int, str]
    _exists: Callable[[], bool]
    _writable: Callable[[], None]
    _scroll: Callable[..., list[Any]]
    _match: Callable[[str, Any], Any]

    def put(self, record: PhotoRecord, vector: np.ndarray | None) -> int:
        self._writable()
        photo_id = self._ids_by_path.get(record.path)
        if photo_id is None:
            found = self._scroll(self._match("path", encode_stored(record.path)), limit=1)
            photo_id = int(found[0].id) if found else self._new_id()
            self._remember(record.path, photo_id)
        vectors: dict[str, list[float]] = {}
        if vector is not None:
            values = np.asarray(vector, dtype=np.float32).reshape(-1)
            if not np.isfinite(values).all():
                raise ValueError("refusing to store a vector with NaN or infinite values")
            vectors[VECTOR] = values.tolist()
        m = self._models
        point = m.PointStruct(
            id=photo_id, vector=vectors, payload=payload_of(record, vector is not None)
        )
        self._operations.append(m.UpsertOperation(upsert=m.PointsList(points=[point])))
        return photo_id

    def move(self, photo_id: int, record: PhotoRecord) -> None:
        self._writable()
        m = self._models
        payload = payload_of(record, has_vector=True)
        self._operations.append(
            m.OverwritePayloadOperation(
                overwrite_payload=m.SetPayload(payload=payload, points=[int(photo_id)])
            )
        )
        self._forget(int(photo_id))
        self._remember(record.path, int(photo_id))

    def delete(self, photo_ids: Sequence[int]) -> None:
        self._writable()
        ids = [int(i) for i in photo_ids]
        if ids:
            m = self._models
            self._operations.append(m.DeleteOperation(delete=m.PointIdsList(points=ids)))
            for photo_id in ids:
                self._forget(photo_id)

    def _remember(self, path: str, photo_id: int) -> None:
        self._ids_by_path[path] = photo_id
        self._paths_by_id[photo_id] = path

    def _forget(self, photo_id: int) -> None:
        path = self._paths_by_id.pop(photo_id, None)
        if path is not None and self._ids_by_path.get(path) == photo_id:
            del self._ids_by_path[path]

    def _new_id(self) -> int:
        photo_id = int(self._meta.get("next_id", 1))
        self._meta["next_id"] = photo_id + 1
        return photo_id

    def record_run(self, run: LastRun) -> None:
        if self.read_only:
            raise StoreError(f"{self}: opened read-only")
        if not self._exists():  # nothing indexed yet: no collection to keep it in
            return
        self._meta["last_run"] = dataclasses.asdict(run)
        self.client.update_collection(self.collection, metadata=self._meta)

    def commit(self) -> None:
        if not self._operations:
            return
        if not self._exists():
            raise StoreError(f"{self}: set_model must come before the first photo")
        # Reserve the ids first: a crash after this leaves a gap, never a reuse.
        self._meta["last_commit"] = time.time()
        self.client.update_collection(self.collection, metadata=self._meta)
        operations, self._operations = self._operations, []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # local mode: "no effect" notes
            self.client.batch_update_points(self.collection, operations, wait=True)
