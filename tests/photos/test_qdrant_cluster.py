"""A Qdrant server's side of the photo index: the cluster settings a collection is created
with (shards, replication factor, write consistency) and the payload indexes behind the
search filters, made once and only where missing.

qdrant-client's embedded mode accepts these calls but keeps none of them (its collection
info reports no shard count and no payload schema), and no Qdrant server runs here. So the
store runs on a real embedded client that records what it is asked and, as a server
does, reports the cluster parameters and payload indexes it was given."""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from qdrant_client import QdrantClient, models

from handspring.photos.cli import photos
from handspring.photos.stores.qdrant.payload import INDEXED_FIELDS, payload_of
from handspring.photos.stores.qdrant.store import ClusterSettings, QdrantStore
from handspring.photos.stores.records import SearchFilter
from handspring.photos.stores.store import StoreError
from tests.support.photo_records import TEST_MODEL, record, unit_vector

PARAMS = ("shard_number", "replication_factor", "write_consistency_factor")


class ServerLikeClient(QdrantClient):
    """An embedded client that records the setup calls and reports their effect."""

    def __init__(self, path: str) -> None:
        super().__init__(path=path)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.params: dict[str, Any] = {}
        self.indexes: dict[str, Any] = {}

    def create_collection(self, collection_name: str, **kwargs: Any) -> bool:
        self.calls.append(("create_collection", kwargs))
        self.params = {name: kwargs.get(name) for name in PARAMS}
        return super().create_collection(collection_name, **kwargs)

    def create_payload_index(self, collection_name: str, **kwargs: Any) -> Any:
        self.calls.append(("create_payload_index", kwargs))
        self.indexes[kwargs["field_name"]] = kwargs["field_schema"]
        with warnings.catch_warnings():  # the embedded mode's "no effect" note
            warnings.simplefilter("ignore", UserWarning)
            return super().create_payload_index(collection_name, **kwargs)

    def update_collection(self, collection_name: str, **kwargs: Any) -> bool:
        self.calls.append(("update_collection", kwargs))
        if (diff := kwargs.get("collection_params")) is not None:
            self.params |= diff.model_dump(exclude_none=True)
        return super().update_collection(collection_name, **kwargs)

    def get_collection(self, collection_name: str) -> models.CollectionInfo:
        info = super().get_collection(collection_name)
        params = info.config.params.model_copy(update=self.params)
        schema = {
            field: models.PayloadIndexInfo(data_type=kind, points=0)
            for field, kind in self.indexes.items()
        }
        config = info.config.model_copy(update={"params": params})
        return info.model_copy(update={"config": config, "payload_schema": schema})

    def setup_calls(self) -> list[tuple[str, dict[str, Any]]]:
        """The calls that shape a collection, not the metadata writes every commit makes."""
        return [
            (name, kwargs)
            for name, kwargs in self.calls
            if name != "update_collection" or kwargs.get("collection_params") is not None
        ]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[ServerLikeClient]:
    opened = ServerLikeClient(str(tmp_path / "qdrant"))
    yield opened
    opened.close()


def _store(
    client: ServerLikeClient, cluster: ClusterSettings | None = None, read_only: bool = False
) -> QdrantStore:
    # remote=True: the store behaves as it does against a server URL.
    return QdrantStore(client, "photos", "server-like", read_only, remote=True, cluster=cluster)


def _created(client: ServerLikeClient, cluster: ClusterSettings) -> QdrantStore:
    store = _store(client, cluster)
    store.set_model(TEST_MODEL)
    store.put(record("/lib/a/one.jpg", 1), unit_vector(1))
    store.commit()
    return store


# ------------------------------------------------------------ cluster settings


def test_a_new_collection_is_created_with_the_cluster_settings(client: ServerLikeClient) -> None:
    _created(client, ClusterSettings(shards=6, replication_factor=2, write_consistency_factor=2))
    ((_, kwargs),) = [c for c in client.calls if c[0] == "create_collection"]
    assert (kwargs["shard_number"], kwargs["replication_factor"]) == (6, 2)
    assert kwargs["write_consistency_factor"] == 2
    params = client.get_collection("photos").config.params
    assert (params.shard_number, params.replication_factor) == (6, 2)


def test_without_settings_qdrant_chooses(client: ServerLikeClient) -> None:
    _created(client, None)
    ((_, kwargs),) = [c for c in client.calls if c[0] == "create_collection"]
    assert [kwargs[name] for name in PARAMS] == [None, None, None]


def test_an_existing_collection_gets_new_factors_in_place(client: ServerLikeClient) -> None:
    _created(client, ClusterSettings(shards=3, replication_factor=1))
    client.calls.clear()
    _store(client, ClusterSettings(replication_factor=2, write_consistency_factor=2))
    ((name, kwargs),) = client.setup_calls()
    assert name == "update_collection"
    assert kwargs["collection_params"] == models.CollectionParamsDiff(
        replication_factor=2, write_consistency_factor=2
    )
    params = client.get_collection("photos").config.params
    assert (params.shard_number, params.replication_factor, params.write_consistency_factor) == (
        3,
        2,
        2,
    )
    client.calls.clear()
    _store(client, ClusterSettings(shards=3, replication_factor=2))  # already so: no call
    assert client.setup_calls() == []


def test_the_shard_count_of_an_existing_collection_is_only_checked(
    client: ServerLikeClient,
) -> None:
    _created(client, ClusterSettings(shards=3))
    client.calls.clear()
    with pytest.raises(StoreError, match=r"has 3 shards, not 4: the shard count is fixed"):
        _store(client, ClusterSettings(shards=4))
    assert client.setup_calls() == []


def test_write_consistency_never_exceeds_the_copies_kept(client: ServerLikeClient) -> None:
    with pytest.raises(StoreError, match="factor 2 is more than the 1 copy of each shard"):
        _store(client, ClusterSettings(write_consistency_factor=2)).set_model(TEST_MODEL)
    assert not client.collection_exists("photos")
    _created(client, ClusterSettings(replication_factor=2))
    client.calls.clear()
    _store(client, ClusterSettings(write_consistency_factor=2))  # the 2 copies it has
    ((_, kwargs),) = client.setup_calls()
    assert kwargs["collection_params"].write_consistency_factor == 2
    with pytest.raises(StoreError, match="factor 3 is more than the 2 copies"):
        _store(client, ClusterSettings(write_consistency_factor=3))


def test_a_reader_never_reshapes_the_collection(client: ServerLikeClient) -> None:
    _created(client, ClusterSettings(shards=3))
    client.calls.clear()
    reader = _store(client, ClusterSettings(shards=4, replication_factor=2), read_only=True)
    assert reader.count() == 1
    assert client.setup_calls() == []


def test_settings_are_checked_before_any_call() -> None:
    with pytest.raises(ValueError, match="write_consistency_factor 3 is more than"):
        ClusterSettings(replication_factor=2, write_consistency_factor=3)
    with pytest.raises(ValueError, match="shards must be a whole number >= 1"):
        ClusterSettings(shards=0)
    query = {"shards": ["6"], "replication_factor": ["2"], "collection": ["x"]}
    assert ClusterSettings.from_query(query, "u") == ClusterSettings(6, 2, None)
    with pytest.raises(StoreError, match="u: replication_factor must be a whole number"):
        ClusterSettings.from_query({"replication_factor": ["two"]}, "u")
    # A misspelt setting is refused before any connection is tried.
    with pytest.raises(StoreError, match=r"unknown setting\(s\) shard; known: collection"):
        QdrantStore.connect("http://127.0.0.1:9/?shard=2")


# ------------------------------------------------------------ payload indexes


def _filter_keys(condition: Any) -> set[str]:
    return {c.key for c in condition.must} if condition is not None else set()


def test_every_filter_reads_an_indexed_field_of_the_right_type(client: ServerLikeClient) -> None:
    store = _created(client, None)
    assert client.indexes == INDEXED_FIELDS
    filters = {
        "dates": SearchFilter(
            not_before=datetime.date(2020, 1, 1),
            not_after=datetime.date(2020, 12, 31),
        ),
        "on this day": SearchFilter(on_this_day=datetime.date(2000, 7, 4)),
        "folder": SearchFilter(folder="/lib/a"),
    }
    kinds = {
        "dates": {"float", "integer"},
        "on this day": {"integer"},
        "folder": {"keyword"},
    }
    for name, flt in filters.items():
        keys = _filter_keys(store._filter(flt))
        assert keys, name
        for key in keys:
            assert INDEXED_FIELDS.get(key) in kinds[name], (name, key)
    # The payload carries each indexed field, so none is indexed in vain.
    assert set(INDEXED_FIELDS) <= set(payload_of(record("/lib/a/one.jpg", 1), True))


def test_payload_indexes_are_made_once_and_only_where_missing(client: ServerLikeClient) -> None:
    _created(client, None)
    made = [kw["field_name"] for name, kw in client.calls if name == "create_payload_index"]
    assert sorted(made) == sorted(INDEXED_FIELDS)
    # A collection from before the filters were indexed: a writer adds what is missing.
    for field in ("taken_ts", "month_day", "folders"):
        del client.indexes[field]
    client.calls.clear()
    _store(client, read_only=True)
    assert client.setup_calls() == []  # a reader leaves the collection as it is
    _store(client)
    made = [kw["field_name"] for name, kw in client.setup_calls()]
    assert sorted(made) == ["folders", "month_day", "taken_ts"]
    client.calls.clear()
    _store(client)
    assert client.setup_calls() == []


def test_the_embedded_mode_makes_no_payload_indexes(tmp_path: Path) -> None:
    client = ServerLikeClient(str(tmp_path / "embedded"))
    store = QdrantStore(client, "photos", "embedded", False, remote=False)
    store.set_model(TEST_MODEL)
    assert [name for name, _ in client.setup_calls()] == ["create_collection"]
    client.close()


# ------------------------------------------------------------ the command line


@pytest.mark.parametrize("scheme", ["sqlite", "qdrant"])
def test_the_cluster_flags_need_a_qdrant_server(tmp_path: Path, scheme: str) -> None:
    db = f"{scheme}://{tmp_path / 'index'}"
    (tmp_path / "photos").mkdir()
    result = CliRunner().invoke(
        photos, ["index", str(tmp_path / "photos"), "--db", db, "--shards", "2"]
    )
    assert result.exit_code == 2, result.output
    assert "shape a collection on a Qdrant server" in result.output


def test_the_cluster_flags_are_checked_together(tmp_path: Path) -> None:
    args = ["index", str(tmp_path), "--db", f"sqlite://{tmp_path / 'i.db'}"]
    args += ["--replication-factor", "1", "--write-consistency", "2"]
    result = CliRunner().invoke(photos, args)
    assert result.exit_code == 2
    assert "write_consistency_factor 2 is more than the replication_factor 1" in result.output
