"""Search ranking on random-weight models, where the expected order is computed
apart from the index: the image model's own embeddings of the library files,
and the text model's own embeddings of the queries, ranked with numpy."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import handspring
from handspring.embedder import Model
from handspring.errors import ImageError
from handspring.photos.indexing.indexer import Indexer
from handspring.photos.search.searcher import (
    QueryError,
    QueryModels,
    QueryTerm,
    Searcher,
    default_text_model,
    parse_query,
)
from handspring.photos.stores.records import SearchFilter
from handspring.photos.stores.store import WritableStore, open_store
from tests.photos.conftest import IndexedLibrary, index_options
from tests.support.checkpoints import TINY
from tests.support.photo_library import write_photo
from tests.support.sentence_folders import DISTILBERT, sentence_folder


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def qdrant_url(indexed_library: IndexedLibrary, image_model: Model, tmp_path_factory) -> str:
    """The same library, indexed into Qdrant's embedded mode."""
    url = f"qdrant://{tmp_path_factory.mktemp('qdrant_search') / 'q'}"
    store = open_store(url)
    try:
        options = index_options(indexed_library.models)
        Indexer(store, options, model=image_model).run([str(indexed_library.library.root)])
    finally:
        store.close()
    return url


@pytest.fixture(params=["sqlite", "qdrant"])
def store(
    request: pytest.FixtureRequest, indexed_library: IndexedLibrary, qdrant_url: str
) -> Iterator[WritableStore]:
    opened = open_store(indexed_library.db_url if request.param == "sqlite" else qdrant_url)
    yield opened
    opened.close()


@pytest.fixture
def searcher(store: WritableStore, indexed_library: IndexedLibrary) -> Searcher:
    models = indexed_library.models
    return Searcher(store, QueryModels(str(models.image), str(models.text), precision="fp32"))


@pytest.fixture(scope="module")
def truth(indexed_library: IndexedLibrary, image_model: Model) -> dict[str, np.ndarray]:
    """path -> the image model's embedding of the file, computed apart from any index."""
    paths = [str(p.path) for p in indexed_library.library.photos.values()]
    return dict(zip(paths, image_model.embed_images(paths).embeddings, strict=True))


@pytest.fixture(scope="module")
def text_model(indexed_library: IndexedLibrary):
    return handspring.load(indexed_library.models.text)


def _ranking(truth: dict[str, np.ndarray], query: np.ndarray) -> list[tuple[str, float]]:
    paths = list(truth)
    scores = np.stack([truth[p] for p in paths]) @ _unit(query)
    return [(paths[i], float(scores[i])) for i in np.argsort(-scores, kind="stable")]


def _assert_ranked(hits, expected: list[tuple[str, float]]) -> None:
    assert [h.photo.path for h in hits] == [p for p, _ in expected]
    np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], atol=1e-5)


@pytest.mark.parametrize("query", ["a red bicycle by the sea", "un vélo rouge", "東京の夜景"])
def test_text_queries_rank_as_computed_apart(
    searcher: Searcher, truth: dict[str, np.ndarray], text_model, query: str
) -> None:
    expected = _ranking(truth, text_model.embed_texts([query])[0])
    _assert_ranked(searcher.search(query, limit=len(truth)), expected)
    _assert_ranked(searcher.search(query, limit=4, offset=3), expected[3:7])


def test_combinations_with_weights_paths_and_ids(
    searcher: Searcher,
    store: WritableStore,
    truth: dict[str, np.ndarray],
    text_model,
    image_model: Model,
    indexed_library: IndexedLibrary,
    tmp_path: Path,
) -> None:
    library = indexed_library.library
    beach = store.get_by_path(str(library.path("2023/beach.jpg")))
    assert beach is not None
    outside = write_photo(tmp_path / "example.png", seed=321)  # not in the index
    searcher.allow_paths = True
    query = f'2:a red bicycle - 0.5:#{beach.id} + "{outside}"'
    terms = parse_query(query)
    assert [t.kind for t in terms] == ["text", "photo_id", "photo_path"]
    text = _unit(text_model.embed_texts(["a red bicycle"])[0])
    example = image_model.embed_images([str(outside)]).embeddings[0]
    combined = 2 * text - 0.5 * truth[beach.path] + example
    _assert_ranked(searcher.search(query, limit=len(truth)), _ranking(truth, combined))
    # An indexed photo by path is its stored vector, even where files may not be read.
    searcher.allow_paths = False
    by_path = searcher.search(f"{beach.path} - stripes", limit=3)
    stripes = _unit(text_model.embed_texts(["stripes"])[0])
    _assert_ranked(by_path, _ranking(truth, truth[beach.path] - stripes)[:3])


def test_similar_leaves_the_photo_out(
    searcher: Searcher, store: WritableStore, truth: dict[str, np.ndarray]
) -> None:
    some_path = sorted(truth)[3]
    photo = store.get_by_path(some_path)
    assert photo is not None
    expected = [r for r in _ranking(truth, truth[some_path]) if r[0] != some_path]
    _assert_ranked(searcher.similar(photo.id, limit=len(truth)), expected)
    _assert_ranked(searcher.similar(photo.id, limit=3, offset=2), expected[2:5])
    # A query of just #id asks the same question, and gets the same answer.
    alone = searcher.search([QueryTerm("photo_id", str(photo.id))], limit=len(truth))
    _assert_ranked(alone, expected)
    # In a combination the photo is one result among others (here the best).
    other = store.get_by_path(sorted(truth)[4])
    assert other is not None
    mixed = searcher.search(f"#{photo.id} + 0.01:#{other.id}", limit=1)
    assert mixed[0].photo.id == photo.id


def test_filters_apply_before_top_k(
    searcher: Searcher, truth: dict[str, np.ndarray], text_model, indexed_library: IndexedLibrary
) -> None:
    library = indexed_library.library
    taken = {str(p.path): p.taken_at for p in library.photos.values()}
    query = text_model.embed_texts(["sunset"])[0]
    ranked = _ranking(truth, query)
    july_4th = SearchFilter(on_this_day=datetime.date(2000, 7, 4))
    expected = [r for r in ranked if taken[r[0]] and (taken[r[0]].month, taken[r[0]].day) == (7, 4)]
    assert len(expected) == 4  # beach, rotated, modified_only, and a file-name date
    _assert_ranked(searcher.search("sunset", july_4th, limit=10), expected)
    since_2023 = SearchFilter(not_before=datetime.date(2023, 1, 1), min_score=-1.0)
    expected = [r for r in ranked if taken[r[0]] and taken[r[0]].year >= 2023]
    _assert_ranked(searcher.search("sunset", since_2023, limit=10), expected)
    folder = SearchFilter(folder=str(library.root / "misc"))
    expected = [r for r in ranked if r[0].startswith(str(library.root / "misc") + "/")]
    _assert_ranked(searcher.search("sunset", folder, limit=10), expected)
    # Between the fifth and sixth scores: a store computes scores in float32, so a floor
    # equal to the fifth (computed here in float64) could leave it out by a rounding.
    floor = (ranked[4][1] + ranked[5][1]) / 2
    _assert_ranked(searcher.search("sunset", SearchFilter(min_score=floor), limit=10), ranked[:5])


def test_query_errors(searcher: Searcher, store: WritableStore, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="photo 999999 is not indexed"):
        searcher.similar(999999)
    with pytest.raises(KeyError, match="photo 999999 is not indexed"):
        searcher.search("cat + #999999")
    outside = write_photo(tmp_path / "new.jpg", seed=5)
    with pytest.raises(QueryError, match="not an indexed photo"):
        searcher.search(str(outside))  # a server's searcher never reads files
    searcher.allow_paths = True
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a photo")
    with pytest.raises(ImageError, match=r"broken\.jpg: not an image"):
        searcher.search(str(broken))
    with pytest.raises(QueryError, match="cancel out"):
        searcher.search("cat - cat")
    with pytest.raises(QueryError, match="URLs are not fetched"):
        searcher.search("https://example.com/cat.jpg")


def test_a_text_model_from_another_space_is_refused(
    store: WritableStore, indexed_library: IndexedLibrary, tmp_path: Path
) -> None:
    other = sentence_folder(tmp_path / "other", DISTILBERT, dense=True, out_features=16)
    models = QueryModels(str(indexed_library.models.image), str(other), precision="fp32")
    with pytest.raises(QueryError, match=r"\[16\] dimensions but the index holds 40"):
        Searcher(store, models).search("cat")
    assert TINY.projection_dim == 40


def test_the_image_models_own_text_tower_works_too(
    store: WritableStore, indexed_library: IndexedLibrary, truth: dict[str, np.ndarray]
) -> None:
    image = str(indexed_library.models.image)
    assert default_text_model(image) == image
    assert default_text_model("st-clip-vit-b-32") == "st-clip-vit-b-32-multilingual"
    clip = handspring.load(image, modalities=("text",))
    searcher = Searcher(store, QueryModels(image, default_text_model(image), precision="fp32"))
    expected = _ranking(truth, clip.embed_texts(["a cat on a sofa"])[0])
    _assert_ranked(searcher.search("a cat on a sofa", limit=5), expected[:5])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("horse + stripes", [("text", "horse", 1.0), ("text", "stripes", 1.0)]),
        ("apple - fruit", [("text", "apple", 1.0), ("text", "fruit", -1.0)]),
        (
            '"./new york - night.jpg" + night',
            [("photo_path", "./new york - night.jpg", 1.0), ("text", "night", 1.0)],
        ),
        (
            "2:golden retriever + 0.5:./pool.jpg",
            [("text", "golden retriever", 2.0), ("photo_path", "./pool.jpg", 0.5)],
        ),
        (
            "cat + 2:dog - :blurry",
            [("text", "cat", 1.0), ("text", "dog", 2.0), ("text", "blurry", -1.0)],
        ),
        ("#12 - id:13", [("photo_id", "12", 1.0), ("photo_id", "13", -1.0)]),
        ("- /abs/photo.heic", [("photo_path", "/abs/photo.heic", -1.0)]),
        ("l'été à la plage", [("text", "l'été à la plage", 1.0)]),
    ],
)
def test_parse_query(text: str, expected: list[tuple[str, str, float]]) -> None:
    assert parse_query(text) == [QueryTerm(kind, value, weight) for kind, value, weight in expected]


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "empty query"), ("cat +", "ends with an operator"), ("cat + - dog", "two operators")],
)
def test_parse_query_errors(text: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_query(text)
