"""The photo web app's JSON API, over HTTP to a real uvicorn server on loopback, against an
index built by the indexer with the tiny CLIP model. Expected rankings come from vectors
computed apart from the indexer with the same model (see `web_library` in conftest)."""

from __future__ import annotations

import datetime
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from handspring.embedder import Model
from handspring.photos.indexing.indexer import Indexer
from handspring.photos.search.searcher import QueryModels, Searcher
from handspring.photos.stores.store import open_store
from handspring.photos.web.app import create_app
from tests.photos.conftest import (
    PhotoModels,
    WebLibrary,
    assert_ranked,
    index_options,
    serve_library,
)
from tests.photos.test_thumbnails import (
    ORIENTED,
    QUADRANT_COLOURS,
    quadrant_centres,
    quadrant_jpeg,
)
from tests.support.images import jpeg
from tests.support.live_server import running

QUERY = "a red tulip in a garden"


@pytest.fixture(scope="module")
def server(web_library: WebLibrary, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cache = tmp_path_factory.mktemp("thumbnails")
    with serve_library(web_library, cache, allowed_hosts=["127.0.0.1", "localhost"]) as url:
        yield url


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=60) as http:
        yield http


def search(client: httpx.Client, query: str, **body: object) -> dict:
    response = client.post("/api/search", json={"query": query, **body})
    assert response.status_code == 200, response.text
    return response.json()


def ids_of(page: dict) -> list[int]:
    return [hit["id"] for hit in page["results"]]


# ------------------------------------------------------------------ ranking and paging


def test_text_search_ranks_as_the_model_says(client: httpx.Client, web_library: WebLibrary) -> None:
    scores = web_library.scores(web_library.text_vector(QUERY))
    page = search(client, QUERY, limit=10)
    assert_ranked(ids_of(page), scores, web_library.vectors, 10)
    for hit in page["results"]:
        assert hit["score"] == pytest.approx(scores[hit["id"]], abs=1e-4)
        assert hit["path"] in web_library.ids and web_library.ids[hit["path"]] == hit["id"]
        assert hit["name"] == Path(hit["path"]).name
        assert hit["thumbnailUrl"] == f"/api/photos/{hit['id']}/thumbnail"
    assert (page["limit"], page["offset"], page["nextOffset"]) == (10, 0, 10)


def test_pages_cover_every_photo_exactly_once(
    client: httpx.Client, web_library: WebLibrary
) -> None:
    whole = ids_of(search(client, QUERY, limit=200))
    assert sorted(whole) == sorted(web_library.vectors)
    paged: list[int] = []
    offset: int | None = 0
    while offset is not None:
        page = search(client, QUERY, limit=7, offset=offset)
        paged += ids_of(page)
        offset = page["nextOffset"]
    assert paged == whole
    assert search(client, QUERY, limit=5, offset=len(whole))["results"] == []


def test_rclip_style_combination(client: httpx.Client, web_library: WebLibrary) -> None:
    example = web_library.ids[str(web_library.root / "recent" / "photo_04.jpg")]
    text = web_library.text_vector("blue sky")
    combined = web_library.vectors[example] - 0.5 * text
    scores = web_library.scores(combined / np.linalg.norm(combined))
    page = search(client, f"#{example} - 0.5:blue sky", limit=12)
    assert_ranked(ids_of(page), scores, web_library.vectors, 12)


def _filter_cases(library: WebLibrary) -> list[tuple[dict, set[int]]]:
    today = datetime.date.today()
    taken = library.taken
    scores = library.scores(library.text_vector(QUERY))
    ordered = sorted(scores.values())
    threshold = (ordered[20] + ordered[21]) / 2  # between two photos, never on one
    recent = str(library.root / "recent")

    def dated(test: object) -> set[int]:
        return {i for i, t in taken.items() if t is not None and test(t)}  # type: ignore[operator]

    same_day = dated(lambda t: (t.month, t.day) == (today.month, today.day))
    return [
        (
            {"notBefore": "2017-01-01", "notAfter": "2019-12-31"},
            dated(lambda t: datetime.date(2017, 1, 1) <= t.date() <= datetime.date(2019, 12, 31)),
        ),
        ({"notBefore": "2020-06-01"}, dated(lambda t: t.date() >= datetime.date(2020, 6, 1))),
        ({"onThisDay": today.isoformat()}, same_day),
        ({"onThisDay": True}, same_day),
        ({"minScore": threshold}, {i for i, s in scores.items() if s >= threshold}),
        ({"folder": recent}, {library.ids[p] for p in library.ids if p.startswith(recent + "/")}),
        (
            {"folder": recent, "notAfter": "2018-06-30"},
            {library.ids[p] for p in library.ids if p.startswith(recent + "/")}
            & dated(lambda t: t.date() <= datetime.date(2018, 6, 30)),
        ),
    ]


@pytest.mark.parametrize("case", range(7))
def test_filters_apply_before_top_k(
    client: httpx.Client, web_library: WebLibrary, case: int
) -> None:
    flt, candidates = _filter_cases(web_library)[case]
    assert 0 < len(candidates) < len(web_library.vectors), "the case must filter something out"
    scores = web_library.scores(web_library.text_vector(QUERY))
    page = search(client, QUERY, limit=200, filter=flt)
    assert_ranked(ids_of(page), scores, candidates, 200)


def test_similar_excludes_the_photo_and_ranks_by_its_vector(
    client: httpx.Client, web_library: WebLibrary
) -> None:
    photo_id = next(iter(web_library.vectors))
    scores = web_library.scores(web_library.vectors[photo_id])
    others = set(web_library.vectors) - {photo_id}
    response = client.get(f"/api/photos/{photo_id}/similar", params={"limit": 15})
    assert response.status_code == 200, response.text
    assert_ranked(ids_of(response.json()), scores, others, 15)
    # Second page, with a filter given as query parameters.
    params = {"limit": 5, "offset": 5, "notBefore": "2016-01-01"}
    page = client.get(f"/api/photos/{photo_id}/similar", params=params).json()
    candidates = {i for i in others if (t := web_library.taken[i]) and t.year >= 2016}
    expected = sorted(candidates, key=lambda i: -scores[i])[5:10]
    assert [round(scores[i], 5) for i in ids_of(page)] == [round(scores[i], 5) for i in expected]


# ------------------------------------------------------------------ photos and files


def test_photo_metadata(client: httpx.Client, web_library: WebLibrary) -> None:
    path = str(web_library.root / "2010s" / "photo_01.jpg")
    photo_id = web_library.ids[path]
    photo = client.get(f"/api/photos/{photo_id}").json()
    taken = web_library.taken[photo_id]
    assert taken is not None
    assert photo["path"] == path
    assert photo["takenAt"] == taken.isoformat()
    assert (photo["width"], photo["height"]) == (96, 72)
    assert photo["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert photo["size"] == Path(path).stat().st_size
    assert photo["mimeType"] == "image/jpeg"
    assert photo["exif"]["DateTimeOriginal"] == taken.strftime("%Y:%m:%d %H:%M:%S")
    assert photo["error"] is None and photo["gps"] is None


def test_thumbnail_is_cached_jpeg_of_the_photo(
    client: httpx.Client, web_library: WebLibrary
) -> None:
    photo_id = next(iter(web_library.vectors))
    response = client.get(f"/api/photos/{photo_id}/thumbnail", params={"size": 64})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (96, 72)  # 64 rounds up to 128, and photos are never enlarged
    centre = np.asarray(image.convert("RGB"), dtype=float)[18:54, 30:66].reshape(-1, 3).mean(0)
    assert np.abs(centre - web_library.colours[photo_id]).max() < 8
    etag = response.headers["etag"]
    again = client.get(
        f"/api/photos/{photo_id}/thumbnail", params={"size": 100}, headers={"If-None-Match": etag}
    )
    assert again.status_code == 304 and again.content == b""
    bigger = client.get(f"/api/photos/{photo_id}/thumbnail", params={"size": 300})
    assert bigger.headers["etag"] != etag


def test_original_is_the_indexed_file(client: httpx.Client, web_library: WebLibrary) -> None:
    path, photo_id = next(iter(web_library.ids.items()))
    response = client.get(f"/api/photos/{photo_id}/original")
    assert response.status_code == 200
    assert response.content == Path(path).read_bytes()
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["content-disposition"] == f'inline; filename="{Path(path).name}"'


@pytest.fixture
def small_library(
    tmp_path: Path, photo_models: PhotoModels, image_model: Model
) -> Iterator[tuple[str, dict[str, int]]]:
    """Three photos of our own to change under the server: one upright only by EXIF, one
    corrupt, one plain."""

    root = tmp_path / "lib"
    root.mkdir()
    quadrant_jpeg(root / "rotated.jpg", orientation=6)  # stored 96 x 64, shown 64 x 96
    jpeg(root / "plain.jpg", 60, 80, seed=9)
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not the rest of a JPEG")
    db = tmp_path / "index.db"
    store = open_store(str(db))
    Indexer(store, index_options(photo_models), model=image_model).run([str(root)])
    ids = {p.name: store.get_by_path(str(p)).id for p in root.iterdir()}
    store.close()
    store = open_store(str(db), read_only=True)
    models = QueryModels(str(photo_models.image), str(photo_models.text), precision="fp32")
    searcher = Searcher(store, models)
    app = create_app(store, searcher, thumbnail_cache=tmp_path / "thumbs")
    with running(app) as url:
        yield url, ids
    store.close()


def test_files_are_served_only_while_they_are_the_indexed_ones(
    small_library: tuple[str, dict[str, int]],
) -> None:
    url, ids = small_library
    with httpx.Client(base_url=url) as http:
        rotated = http.get(f"/api/photos/{ids['rotated.jpg']}").json()
        assert (rotated["width"], rotated["height"]) == (64, 96)  # as displayed
        thumb = Image.open(io.BytesIO(http.get(rotated["thumbnailUrl"]).content))
        assert thumb.size == (64, 96)
        upright = ORIENTED[6](QUADRANT_COLOURS)  # turned a quarter clockwise
        assert np.abs(quadrant_centres(thumb) - upright).max() < 24

        corrupt = http.get(f"/api/photos/{ids['corrupt.jpg']}").json()
        assert corrupt["error"]
        response = http.get(f"/api/photos/{ids['corrupt.jpg']}/thumbnail")
        assert response.status_code == 422
        assert "corrupt.jpg" in response.json()["message"]

        plain = Path(http.get(f"/api/photos/{ids['plain.jpg']}").json()["path"])
        plain.write_bytes(plain.read_bytes() + b"\0")  # changed since indexing
        for route in ("original", "thumbnail"):
            response = http.get(f"/api/photos/{ids['plain.jpg']}/{route}")
            assert response.status_code == 409
            assert "changed since it was indexed" in response.json()["message"]
        plain.unlink()
        response = http.get(f"/api/photos/{ids['plain.jpg']}/original")
        assert response.status_code == 410
        assert "no longer on disk" in response.json()["message"]


def test_the_same_api_over_a_qdrant_index(
    web_library: WebLibrary, photo_models: PhotoModels, image_model: Model, tmp_path: Path
) -> None:
    url = f"qdrant://{tmp_path / 'qdrant'}"  # qdrant-client's embedded local mode
    store = open_store(url)
    try:
        Indexer(store, index_options(photo_models), model=image_model).run([str(web_library.root)])
    finally:
        store.close()
    store = open_store(url, read_only=True)
    try:
        app = create_app(store, web_library.searcher(store), thumbnail_cache=tmp_path / "thumbs")
        with running(app) as url, httpx.Client(base_url=url, timeout=60) as http:
            # Ids are the store's own: compare photos through their paths.
            body = {"query": QUERY, "limit": 10, "filter": {"notBefore": "2016-01-01"}}
            page = http.post("/api/search", json=body).json()
            got = [web_library.ids[hit["path"]] for hit in page["results"]]
            scores = web_library.scores(web_library.text_vector(QUERY))
            since_2016 = {i for i, t in web_library.taken.items() if t and t.year >= 2016}
            assert_ranked(got, scores, since_2016, 10)
            first = page["results"][0]
            similar = http.get(f"/api/photos/{first['id']}/similar", params={"limit": 8}).json()
            got = [web_library.ids[hit["path"]] for hit in similar["results"]]
            chosen = web_library.ids[first["path"]]
            others = set(web_library.vectors) - {chosen}
            assert_ranked(got, web_library.scores(web_library.vectors[chosen]), others, 8)
            thumbnail = http.get(first["thumbnailUrl"])
            assert thumbnail.status_code == 200
            assert thumbnail.headers["content-type"] == "image/jpeg"
    finally:
        store.close()


# ------------------------------------------------------------------ bad requests


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"query": "cat", "filter": {"notBefore": "2020-13-01"}}, 422, "filter.notBefore"),
        ({"query": "cat", "filter": {"notBefore": "2021-01-01", "notAfter": "2020-01-01"}}, 422,
         "notBefore is after notAfter"),
        ({"query": "cat", "filter": {"minScore": 2}}, 422, "filter.minScore"),
        ({"query": "cat", "filter": {"folder": "relative/dir"}}, 422, "absolute"),
        ({"query": "cat", "filter": {"colour": "red"}}, 422, "filter.colour"),
        ({"query": "cat", "limit": 0}, 422, "limit"),
        ({"query": "cat", "limit": 201}, 422, "limit"),
        ({"query": "cat", "offset": -1}, 422, "offset"),
        ({"query": "cat", "limit": True}, 422, "limit: Input should be a valid integer"),
        ({"query": "cat", "offset": False}, 422, "offset: Input should be a valid integer"),
        ({"query": "cat", "limit": 2.0}, 422, "limit: Input should be a valid integer"),
        ({"query": "   "}, 422, "the query is empty"),
        ({"query": "x" * 1001}, 422, "query"),
        ({}, 422, "query"),
        ({"query": "cat +"}, 400, "ends with an operator"),
        ({"query": "cat - #999999"}, 404, "photo 999999 is not indexed"),
        ({"query": f"cat - #{2**63}"}, 404, f"photo {2**63} is not indexed"),
        ({"query": f"#{10**30}"}, 404, f"photo {10**30} is not indexed"),
        ({"query": "/etc/passwd"}, 400, "not an indexed photo"),
        ({"query": "https://example.com/cat.jpg"}, 400, "URLs are not fetched"),
    ],
)  # fmt: skip
def test_bad_searches_get_a_clear_json_error(
    client: httpx.Client, body: dict, status: int, message: str
) -> None:
    response = client.post("/api/search", json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["message"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/photos/999999", 404),
        ("/api/photos/999999/thumbnail", 404),
        ("/api/photos/999999/original", 404),
        ("/api/photos/999999/similar", 404),
        ("/api/photos/abc", 422),
        ("/api/photos/1/thumbnail?size=0", 422),
        ("/api/photos/1/similar?minScore=high", 422),
        ("/api/photos/1/similar?limit=true", 422),
        ("/api/photos/..%2F..%2F..%2Fetc%2Fpasswd/original", 404),
        ("/api/photos/%2Fetc%2Fpasswd/original", 404),
        ("/static/..%2F..%2Fweb.py", 404),
        ("/static/../web.py", 404),
    ],
)
def test_unknown_photos_and_paths_are_refused(client: httpx.Client, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status, response.text
    assert b"def create_app" not in response.content and b"root:" not in response.content
    if response.headers.get("content-type") == "application/json":
        assert response.json()["message"]


@pytest.mark.parametrize("route", ["", "/thumbnail", "/original", "/similar"])
@pytest.mark.parametrize("photo_id", [2**63, 10**30, 0, -1])
def test_ids_no_photo_can_have_are_not_in_the_index(
    client: httpx.Client, route: str, photo_id: int
) -> None:
    # Any integer is a well-formed id (only a non-integer is 422): one outside the
    # store's 64-bit range is simply not indexed, like any other unknown id.
    response = client.get(f"/api/photos/{photo_id}{route}")
    assert response.status_code == 404, response.text
    assert f"photo {photo_id} is not" in response.json()["message"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("GET", "/api/search", "POST"), ("DELETE", "/api/photos/1", "GET")],
)
def test_405_names_the_allowed_methods(
    client: httpx.Client, method: str, path: str, allowed: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json()["message"]


def test_only_loopback_host_names_are_served(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    with httpx.Client(base_url=server) as http:
        assert http.get("/api/status", headers={"Host": f"localhost:{port}"}).status_code == 200
        # A DNS-rebinding page would send its own name.
        assert http.get("/api/status", headers={"Host": f"evil.example:{port}"}).status_code == 400


# ------------------------------------------------------------------ the page and the schema


def test_page_status_and_schema(client: httpx.Client, web_library: WebLibrary) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'id="query"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    status = client.get("/api/status")
    assert status.json()["photos"] == len(web_library.ids)
    assert status.headers["cache-control"] == "private, no-store"
    assert client.get("/_health").json() == {"status": "healthy"}
    schema = client.get("/openapi.json").json()
    assert {"/api/search", "/api/photos/{photo_id}/similar", "/api/photos/{photo_id}/thumbnail",
            "/api/photos/{photo_id}/original", "/api/photos/{photo_id}"} <= set(schema["paths"])  # fmt: skip
    filter_fields = schema["components"]["schemas"]["FilterFields"]["properties"]
    assert {"minScore", "notBefore", "notAfter", "onThisDay"} <= set(filter_fields)
    assert client.get("/docs").status_code == 404  # its page would load scripts from a CDN


def test_the_app_refuses_a_searcher_that_reads_paths(
    web_library: WebLibrary, tmp_path: Path
) -> None:
    store = open_store(str(web_library.db), read_only=True)
    try:
        models = QueryModels(str(web_library.models.image), str(web_library.models.text))
        with pytest.raises(ValueError, match="allow_paths=False"):
            create_app(store, Searcher(store, models, allow_paths=True), thumbnail_cache=tmp_path)
    finally:
        store.close()
