"""Photos indexed with ImageBind and searched by sound, by sound and text together, and by
text, through `handspring photos` on SQLite and Qdrant's embedded mode. The expected order
is numpy's cosine of the stored vectors with the library's own embedding of the query.
The web API never reads a sound file a request names."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from click.testing import CliRunner, Result

import handspring
from handspring.embedder import Model
from handspring.photos.cli import photos
from handspring.photos.search.searcher import QueryModels, Searcher
from handspring.photos.stores.store import open_store
from handspring.photos.web.app import create_app
from tests.photos.conftest import IndexedLibrary
from tests.support.file_opens import watch_opens
from tests.support.live_server import running
from tests.support.photo_library import write_photo
from tests.support.sounds import write_wav

PHOTOS = 7


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(photos, list(args))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


@dataclass(frozen=True)
class BindIndex:
    db: str
    vectors: dict[str, np.ndarray]  # path -> the vector the index stores


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bind_photos")
    for i in range(PHOTOS):
        write_photo(root / f"photo_{i}.jpg", seed=60 + i)
    return root


@pytest.fixture(scope="module")
def sound(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wav(tmp_path_factory.mktemp("bind_sounds") / "clip.wav", 2.0, seed=9)


@pytest.fixture(scope="module")
def bind(tiny_imagebind: Path) -> Model:
    return handspring.load(tiny_imagebind, precision="fp32")


@pytest.fixture(scope="module", params=["sqlite", "qdrant"])
def bind_index(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    library: Path,
    tiny_imagebind: Path,
) -> BindIndex:
    folder = tmp_path_factory.mktemp(f"bind_index_{request.param}")
    db = str(folder / "index.db") if request.param == "sqlite" else f"qdrant://{folder / 'q'}"
    indexed = _invoke(
        "index", str(library), "--db", db, "--image-model", str(tiny_imagebind),
        "--precision", "fp32",
    )  # fmt: skip
    assert indexed.exit_code == 0, indexed.output
    assert f"{PHOTOS} added" in indexed.stderr
    store = open_store(db, read_only=True)  # Qdrant's embedded mode: one opener at a time
    try:
        vectors = {}
        for path in sorted(library.iterdir()):
            photo = store.get_by_path(str(path))
            assert photo is not None
            vectors[str(path)] = store.vector(photo.id)
    finally:
        store.close()
    return BindIndex(db, vectors)


def _search(db: str, *args: str) -> list[dict]:
    result = _invoke("search", "--db", db, *args, "-k", str(PHOTOS), "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _assert_ranked(hits: list[dict], index: BindIndex, query: np.ndarray) -> None:
    paths = list(index.vectors)
    scores = np.stack([index.vectors[p] for p in paths]) @ _unit(query)
    order = np.argsort(-scores, kind="stable")
    assert [h["path"] for h in hits] == [paths[i] for i in order]
    np.testing.assert_allclose([h["score"] for h in hits], scores[order], rtol=0, atol=1e-5)


def test_search_by_sound(bind_index: BindIndex, bind: Model, sound: Path) -> None:
    hits = _search(bind_index.db, "--audio", str(sound))
    _assert_ranked(hits, bind_index, bind.embed_audio([sound]).embeddings[0])


def test_search_by_sound_and_text_in_one_query(
    bind_index: BindIndex, bind: Model, sound: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(sound.parent)  # the query names the sound by a relative path
    hits = _search(bind_index.db, "./clip.wav + 0.5:a beach")
    heard = _unit(bind.embed_audio([sound]).embeddings[0])
    text = _unit(bind.embed_texts(["a beach"])[0])
    _assert_ranked(hits, bind_index, heard + 0.5 * text)


def test_search_by_text(bind_index: BindIndex, bind: Model) -> None:
    hits = _search(bind_index.db, "a dog barking")
    _assert_ranked(hits, bind_index, bind.embed_texts(["a dog barking"])[0])


def test_a_clip_index_does_not_embed_sounds(indexed_library: IndexedLibrary, sound: Path) -> None:
    text_model = str(indexed_library.models.text)
    result = _invoke(
        "search", "--db", indexed_library.db_url, "--text-model", text_model, "--audio", str(sound)
    )
    assert result.exit_code == 1
    image_model = str(indexed_library.models.image)
    assert result.output == (
        f"Error: {sound}: the index's model {image_model!r} does not embed sounds "
        "(index with an ImageBind model for photos that sound like this)\n"
    )


# ------------------------------------------------------------------------- web API


@pytest.fixture(scope="module")
def web(
    bind_index: BindIndex, tiny_imagebind: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, QueryModels]]:
    store = open_store(bind_index.db, read_only=True)
    models = QueryModels(str(tiny_imagebind), str(tiny_imagebind), precision="fp32")
    try:
        app = create_app(
            store, Searcher(store, models), thumbnail_cache=tmp_path_factory.mktemp("thumbs")
        )
        with running(app) as url:
            yield url, models
    finally:
        store.close()


def test_the_web_api_never_reads_a_sound_file(
    web: tuple[str, QueryModels], bind_index: BindIndex, bind: Model, sound: Path
) -> None:
    url, models = web
    with watch_opens(sound) as control:  # the watch sees an open when there is one
        sound.read_bytes()
        assert control.opened()
    with watch_opens(sound) as watch:
        for query in (str(sound), f"a beach + 2:{sound}"):
            response = requests.post(f"{url}/api/search", json={"query": query}, timeout=30)
            assert response.status_code == 400, response.text
            assert response.json() == {"message": f"{sound}: reading sound files is disabled here"}
        assert not watch.opened()
    assert models._audio is None  # the audio tower was never even loaded
    text = requests.post(f"{url}/api/search", json={"query": "a beach", "limit": 3}, timeout=30)
    assert text.status_code == 200, text.text
    expected = _unit(bind.embed_texts(["a beach"])[0])
    paths = list(bind_index.vectors)
    scores = np.stack([bind_index.vectors[p] for p in paths]) @ expected
    best = [paths[i] for i in np.argsort(-scores, kind="stable")[:3]]
    assert [hit["path"] for hit in text.json()["results"]] == best
