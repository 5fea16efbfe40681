"""Photos whose file or folder names are not valid UTF-8 (Linux names are bytes; Python
gives them as str with lone surrogates) are indexed, found and served like any other,
in SQLite and in Qdrant's embedded mode, and an index run never stops on one."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from PIL import Image

from handspring.embedder import Model
from handspring.photos.cli import photos
from handspring.photos.search.searcher import QueryModels, Searcher
from handspring.photos.stores.qdrant.store import QdrantStore
from handspring.photos.stores.records import SearchFilter
from handspring.photos.stores.store import WritableStore, open_store
from handspring.photos.stores.stored_paths import decode_stored, display_path, encode_stored
from handspring.photos.web.app import create_app
from tests.photos.conftest import PhotoModels, run_index
from tests.support.images import jpeg
from tests.support.live_server import running
from tests.support.photo_library import age

# Names as the file system holds them: Latin-1 bytes, which are not valid UTF-8.
NAMES = [
    b"plain.jpg",
    "café-utf8.jpg".encode(),  # valid UTF-8, not ASCII: stored as it always was
    b"caf\xe9.jpg",
    b"\xe9t\xe9/plage\xff.jpg",  # a folder whose name is not UTF-8 either
    b"\xe9t\xe9/normal.jpg",
    b"\xe9t\xe9-2/sibling.jpg",  # a sibling folder the folder filter must leave out
]
BAD = os.fsdecode(b"caf\xe9.jpg")  # 'caf\udce9.jpg'
BAD_FOLDER = os.fsdecode(b"\xe9t\xe9")


@dataclass(frozen=True)
class OddLibrary:
    root: Path
    paths: list[str]  # as the scan gives them: str, with surrogates for the odd bytes

    def path(self, name: str) -> str:
        return str(self.root / name)


@pytest.fixture
def odd_library(tmp_path: Path) -> OddLibrary:
    if sys.getfilesystemencoding() != "utf-8":
        pytest.skip("needs a UTF-8 file system encoding, where odd bytes become surrogates")
    root = tmp_path / "photos"
    paths = []
    for seed, name in enumerate(NAMES):
        path = root / os.fsdecode(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            age(jpeg(path, 40, 56, seed=seed + 1), seed)
        except OSError as exc:  # a file system that only takes UTF-8 names
            pytest.skip(f"cannot make a file named {name!r} here: {exc}")
        paths.append(str(path))
    return OddLibrary(root, paths)


def _store_url(kind: str, tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'i.db'}" if kind == "sqlite" else f"qdrant://{tmp_path / 'q'}"


@pytest.fixture(params=["sqlite", "qdrant"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _store_url(request.param, tmp_path)


@pytest.fixture
def store(store_url: str) -> Iterator[WritableStore]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def test_the_stored_form_turns_back_exactly() -> None:
    for path in ["/a/b.jpg", "/a/café.jpg", "/a/caf\udce9/x\udcff.jpg", "/a/\ud83d\ude00"]:
        stored = encode_stored(path)
        stored.encode("utf-8")  # valid text, as SQLite and JSON need
        assert decode_stored(stored) == path
    assert encode_stored("/a/café.jpg") == "/a/café.jpg"  # what every older index holds
    assert encode_stored("/lib/caf\udce9.jpg") == "/lib/caf\x00dce9.jpg"
    assert decode_stored(encode_stored("reason\x00dce9")) == "reason\x00dce9"  # NUL escaped too
    assert display_path("/lib/caf\udce9.jpg") == "/lib/caf\ufffd.jpg"


def test_indexed_found_kept_moved_and_deleted(
    store: WritableStore,
    odd_library: OddLibrary,
    photo_models: PhotoModels,
    image_model: Model,
) -> None:
    lib = odd_library
    first = run_index(store, photo_models, image_model, [lib.root])
    assert (first.added, first.failed) == (len(NAMES), [])
    for path in lib.paths:
        photo = store.get_by_path(path)
        assert photo is not None and photo.path == path and photo.error is None
        assert Path(photo.path).is_file()  # the real name: the file opens from it
    known = {f.path for f in store.files_under([str(lib.root)])}
    assert known == set(lib.paths)

    again = run_index(store, photo_models, image_model, [lib.root])
    assert again.unchanged == len(NAMES)
    changes = (again.added, again.updated, again.moved, again.touched, again.reused)
    assert changes == (0, 0, 0, 0, 0) and again.deleted == 0 and again.failed == []

    # Folder filters, on a folder whose own name is not UTF-8 (its sibling `...-2` left out).
    odd_folder = SearchFilter(folder=lib.path(BAD_FOLDER))
    in_odd_folder = {
        lib.path(f"{BAD_FOLDER}/plage\udcff.jpg"),
        lib.path(f"{BAD_FOLDER}/normal.jpg"),
    }
    assert store.count(odd_folder) == 2
    assert store.count(SearchFilter(folder=str(lib.root))) == len(NAMES)
    assert {p.path for p in store.browse(odd_folder, None, 10).photos} == in_odd_folder
    assert store.folders() == {
        str(lib.root): 3,
        lib.path(BAD_FOLDER): 2,
        lib.path(f"{BAD_FOLDER}-2"): 1,
    }
    assert store.timeline(odd_folder).total == 2

    # Search finds it: by its own vector, everywhere and inside its folder.
    bad = store.get_by_path(lib.path(BAD))
    assert bad is not None
    query = store.vector(bad.id)
    assert query is not None
    hits = store.search(query, SearchFilter(), 3, 0)
    assert hits[0].photo == bad and hits[0].score == pytest.approx(1.0, abs=1e-5)
    odd_photo = store.get_by_path(lib.path(f"{BAD_FOLDER}/plage\udcff.jpg"))
    assert odd_photo is not None
    odd_query = store.vector(odd_photo.id)
    assert odd_query is not None
    found = store.search(odd_query, odd_folder, 10, 0)
    assert found[0].photo.path == odd_photo.path
    assert {h.photo.path for h in found} == in_odd_folder

    # Renamed to another odd name: the same row, id and vector.
    renamed = lib.path("caf\udcea.jpg")
    os.rename(lib.path(BAD), renamed)
    moved = run_index(store, photo_models, image_model, [lib.root])
    assert (moved.moved, moved.added, moved.deleted, moved.failed) == (1, 0, 0, [])
    now = store.get_by_path(renamed)
    assert now is not None and now.id == bad.id and store.get_by_path(lib.path(BAD)) is None

    # Deleted: its row goes, the others stay.
    os.remove(renamed)
    gone = run_index(store, photo_models, image_model, [lib.root])
    assert (gone.deleted, gone.unchanged, gone.failed) == (1, len(NAMES) - 1, [])
    assert store.get_by_path(renamed) is None and store.get(bad.id) is None
    assert store.count() == len(NAMES) - 1


def test_an_undecodable_link_target_is_an_error_recorded_once(
    store: WritableStore, odd_library: OddLibrary, photo_models: PhotoModels, image_model: Model
) -> None:
    """A broken link's reason quotes its target, whose name may not be UTF-8 either."""
    link = odd_library.root / "link.jpg"
    link.symlink_to(os.fsdecode(b"gone\xe9.jpg"))
    first = run_index(store, photo_models, image_model, [odd_library.root])
    assert first.added == len(NAMES)
    [(path, reason)] = first.failed
    assert path == str(link) and reason.endswith("(-> gone\udce9.jpg)")
    assert [(p.path, p.error) for p in store.errors()] == [(str(link), reason)]
    again = run_index(store, photo_models, image_model, [odd_library.root])
    assert again.failed == [] and again.unchanged == len(NAMES) + 1


def test_stored_rows_are_valid_text_and_old_rows_read_the_same(
    store_url: str, odd_library: OddLibrary, photo_models: PhotoModels, image_model: Model
) -> None:
    """UTF-8 paths are stored exactly as before this form existed, so indexes written
    then keep working; odd ones are valid text a Qdrant server's JSON can carry."""
    store = open_store(store_url)
    try:
        run_index(store, photo_models, image_model, [odd_library.root])
        if isinstance(store, QdrantStore):
            points, _ = store.client.scroll(store.collection, limit=100, with_payload=True)
            stored = [p.payload["path"] for p in points]
            for point in points:  # what qdrant-client would send to a server
                json.dumps(point.payload, ensure_ascii=False).encode("utf-8")
    finally:
        store.close()
    if store_url.startswith("sqlite://"):
        with contextlib.closing(sqlite3.connect(store_url.removeprefix("sqlite://"))) as db:
            stored = [row[0] for row in db.execute("SELECT path FROM photos")]
    assert sorted(stored) == sorted(encode_stored(p) for p in odd_library.paths)
    for path in odd_library.paths:
        if path == display_path(path):
            assert path in stored  # byte for byte what older versions wrote


def test_the_web_api_lists_and_serves_them(
    store_url: str,
    odd_library: OddLibrary,
    photo_models: PhotoModels,
    image_model: Model,
    tmp_path: Path,
) -> None:
    writer = open_store(store_url)
    try:
        run_index(writer, photo_models, image_model, [odd_library.root])
        ids = {path: writer.get_by_path(path).id for path in odd_library.paths}  # type: ignore[union-attr]
    finally:
        writer.close()
    bad_path = odd_library.path(BAD)
    bad = ids[bad_path]
    store = open_store(store_url, read_only=True)
    models = QueryModels(str(photo_models.image), str(photo_models.text), precision="fp32")
    app = create_app(store, Searcher(store, models), thumbnail_cache=tmp_path / "thumbs")
    try:
        with running(app) as url, httpx.Client(base_url=url, timeout=60) as http:
            listed = http.get("/api/photos", params={"limit": 50})
            assert listed.status_code == 200, listed.text
            by_id = {p["id"]: p for p in listed.json()["photos"]}
            assert set(by_id) == set(ids.values())
            assert by_id[bad]["path"] == display_path(bad_path)
            assert by_id[bad]["name"] == "caf\ufffd.jpg"
            folder = http.get("/api/photos", params={"folder": str(odd_library.root)})
            assert {p["id"] for p in folder.json()["photos"]} == set(ids.values())

            detail = http.get(f"/api/photos/{bad}")
            assert detail.status_code == 200 and detail.json()["fileState"] == "ok"
            thumbnail = http.get(f"/api/photos/{bad}/thumbnail", params={"size": 128})
            assert thumbnail.status_code == 200, thumbnail.text
            assert thumbnail.headers["content-type"] == "image/jpeg"
            assert Image.open(io.BytesIO(thumbnail.content)).size == (56, 40)
            original = http.get(f"/api/photos/{bad}/original")
            assert original.status_code == 200
            assert original.content == Path(bad_path).read_bytes()
            assert "caf%EF%BF%BD.jpg" in original.headers["content-disposition"]

            # Photos like another one: every other photo comes back, this one among them.
            plain = ids[odd_library.path("plain.jpg")]
            similar = http.post("/api/search", json={"query": f"#{plain}", "limit": 10})
            assert similar.status_code == 200, similar.text
            results = {hit["id"]: hit for hit in similar.json()["results"]}
            assert set(results) == set(ids.values()) - {plain}
            assert results[bad]["path"] == display_path(bad_path)
            folders = http.get("/api/folders")
            assert folders.status_code == 200
            assert display_path(odd_library.path(BAD_FOLDER)) in {
                f["path"] for f in folders.json()["folders"]
            }

            os.remove(bad_path)
            missing = http.get(f"/api/photos/{bad}/original")
            assert missing.status_code == 410
            assert f"({display_path(bad_path)}) is no longer on disk" in missing.json()["message"]
    finally:
        store.close()


def test_the_command_line_prints_them(
    odd_library: OddLibrary, photo_models: PhotoModels, image_model: Model, tmp_path: Path
) -> None:
    db = str(tmp_path / "i.db")
    (odd_library.root / "link.jpg").symlink_to(os.fsdecode(b"gone\xe9.jpg"))
    store = open_store(db)
    try:
        run_index(store, photo_models, image_model, [odd_library.root])
    finally:
        store.close()

    def invoke(*args: str) -> str:
        result = CliRunner().invoke(photos, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    shown = {display_path(p) for p in odd_library.paths}
    assert set(invoke("list", "--db", db, "--format", "paths").splitlines()) == shown
    listed = json.loads(invoke("list", "--db", db, "--format", "json"))
    assert {p["path"] for p in listed} == shown
    assert display_path(odd_library.path(BAD)) in invoke("list", "--db", db)
    errors = invoke("status", "--db", db, "--errors").splitlines()
    assert f"  {odd_library.path('link.jpg')}: symlink target is missing (-> gone\ufffd.jpg)" in (
        errors
    )
    # The example photo by its real name (argv gives it with surrogates), in its folder.
    odd_photo = odd_library.path(f"{BAD_FOLDER}/plage\udcff.jpg")
    hits = invoke(
        "search",
        odd_photo,
        "--db",
        db,
        "--folder",
        odd_library.path(BAD_FOLDER),
        "--format",
        "json",
    )
    assert json.loads(hits)[0]["path"] == display_path(odd_photo)
