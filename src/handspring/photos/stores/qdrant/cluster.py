"""A Qdrant server's setup for the photo index: how a collection is spread over a cluster
(ClusterSettings, from the store URL or `photos index`'s flags), and the payload indexes the
filters read."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from handspring.photos.stores.qdrant.payload import INDEXED_FIELDS
from handspring.photos.stores.store import StoreError


@dataclass(frozen=True)
class ClusterSettings:
    """How a collection is spread over a Qdrant cluster; None leaves Qdrant's default.

    shards: pieces the collection is split into, spread over the nodes (fixed once the
        collection exists). replication_factor: copies of each shard, on different nodes.
    write_consistency_factor: replicas that must confirm a write before it counts as done
        (at most replication_factor)."""

    shards: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ValueError(f"{field.name} must be a whole number >= 1, got {value!r}")
        writes, copies = self.write_consistency_factor, self.replication_factor
        if writes is not None and copies is not None and writes > copies:
            raise ValueError(
                f"write_consistency_factor {writes} is more than the replication_factor "
                f"{copies}: no write could ever be confirmed by that many replicas"
            )

    @classmethod
    def from_query(cls, query: dict[str, list[str]], url: str) -> ClusterSettings:
        """The settings a store URL's query names (`?shards=6&replication_factor=2`)."""
        values: dict[str, int] = {}
        for field in fields(cls):
            if field.name in query:
                text = query[field.name][-1]
                if not text.isdigit():
                    raise StoreError(f"{url}: {field.name} must be a whole number, got {text!r}")
                values[field.name] = int(text)
        try:
            return cls(**values)
        except ValueError as exc:
            raise StoreError(f"{url}: {exc}") from None

    def given(self) -> bool:
        return any(getattr(self, field.name) is not None for field in fields(self))

    def merged(self, other: ClusterSettings) -> ClusterSettings:
        """These settings with `other`'s given ones on top."""
        changes = {
            field.name: getattr(other, field.name)
            for field in fields(other)
            if getattr(other, field.name) is not None
        }
        return replace(self, **changes)


class ServerSetup:
    """QdrantStore's setup of a collection on a server."""

    client: Any
    collection: str
    cluster: ClusterSettings
    read_only: bool
    remote: bool
    _models: Any

    def _exists(self) -> bool:
        return bool(self.client.collection_exists(self.collection))

    def configure_cluster(self, settings: ClusterSettings) -> None:
        """Use these cluster settings (on top of the URL's). A new collection is created
        with them; an existing one gets the replication and write consistency factors
        given, and must already have the shard count given, since shards are fixed."""
        self.cluster = self.cluster.merged(settings)
        # Only a writer shapes the collection: a reader given the same URL just reads.
        if self.read_only or not self.cluster.given() or not self._exists():
            return
        params = self.client.get_collection(self.collection).config.params
        self._check_write_consistency(params.replication_factor)
        wanted, held = self.cluster.shards, params.shard_number
        if wanted is not None and held is not None and wanted != held:
            raise StoreError(
                f"{self}: collection {self.collection!r} has {held} shards, not {wanted}: "
                "the shard count is fixed when a collection is created. Leave the shard "
                "setting out, or index into a new collection (?collection=NAME)"
            )
        changes = {
            name: value
            for name, value, current in (
                ("replication_factor", self.cluster.replication_factor, params.replication_factor),
                (
                    "write_consistency_factor",
                    self.cluster.write_consistency_factor,
                    params.write_consistency_factor,
                ),
            )
            if value is not None and value != current
        }
        if changes:
            self.client.update_collection(
                self.collection, collection_params=self._models.CollectionParamsDiff(**changes)
            )

    def _check_write_consistency(self, held_copies: int | None) -> None:
        """More confirmations asked than copies kept would fail every commit."""
        copies = self.cluster.replication_factor or held_copies or 1  # Qdrant's default: 1
        writes = self.cluster.write_consistency_factor
        if writes is not None and writes > copies:
            raise StoreError(
                f"{self}: write consistency factor {writes} is more than the {copies} "
                f"cop{'y' if copies == 1 else 'ies'} of each shard: no commit could be "
                "confirmed; raise the replication factor too"
            )

    def _ensure_payload_indexes(self) -> None:
        """Index the fields the filters and lookups read, if not yet indexed. Only on a
        server: the embedded mode has no payload indexes (it scans)."""
        if not self.remote:
            return
        held = self.client.get_collection(self.collection).payload_schema or {}
        for field, schema in INDEXED_FIELDS.items():
            if field not in held:
                self.client.create_payload_index(
                    self.collection, field_name=field, field_schema=schema, wait=True
                )
