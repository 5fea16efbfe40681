"""The web API's library side over HTTP to a real uvicorn server: browsing newest first
by keyset pages, months and totals, folders, near-duplicates, the status the page opens
with (model loaded or not), search totals and the undated-photos hint, photo details
from EXIF, and the same routes over Qdrant's embedded mode."""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from handspring.embedder import Model
from handspring.photos.indexing.indexer import Indexer
from handspring.photos.stores.store import open_store
from handspring.photos.web import exif_details
from handspring.photos.web.app import create_app
from tests.photos.conftest import PhotoModels, WebLibrary, index_options, serve_library
from tests.support.live_server import running

QUERY = "a red tulip in a garden"


@pytest.fixture(scope="module")
def server(web_library: WebLibrary, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_library(web_library, tmp_path_factory.mktemp("thumbnails")) as url:
        yield url


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=60) as http:
        yield http


def library_order(library: WebLibrary, keep: set[int] | None = None) -> list[int]:
    """Newest first by the time taken; undated photos last, newest file first."""
    mtimes = {pid: os.stat(path).st_mtime_ns for path, pid in library.ids.items()}
    ids = set(library.taken) if keep is None else keep
    dated = sorted((library.taken[i], i) for i in ids if library.taken[i] is not None)
    undated = sorted((mtimes[i], i) for i in ids if library.taken[i] is None)
    return [i for _, i in dated[::-1]] + [i for _, i in undated[::-1]]


def browse_all(client: httpx.Client, limit: int, **params: object) -> list[int]:
    seen: list[int] = []
    before: str | None = None
    while True:
        query = {"sort": "taken", "limit": limit, **params}
        if before:
            query["before"] = before
        response = client.get("/api/photos", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [photo["id"] for photo in page["photos"]]
        before = page["nextBefore"]
        if before is None:
            return seen


@pytest.mark.parametrize("limit", [1, 7, 200])
def test_browsing_pages_cover_the_library_newest_first(
    client: httpx.Client, web_library: WebLibrary, limit: int
) -> None:
    assert browse_all(client, limit) == library_order(web_library)


def test_browsing_with_filters_and_a_jump(client: httpx.Client, web_library: WebLibrary) -> None:
    recent = str(web_library.root / "recent")
    in_recent = {web_library.ids[p] for p in web_library.ids if p.startswith(recent + "/")}
    assert browse_all(client, 5, folder=recent) == library_order(web_library, in_recent)
    since = {i for i, t in web_library.taken.items() if t and t.date() >= datetime.date(2018, 1, 1)}
    assert browse_all(client, 5, notBefore="2018-01-01") == library_order(web_library, since)
    # A date jumps into the library: the photos taken before it, newest first.
    order = library_order(web_library)
    page = client.get("/api/photos", params={"before": "2016-03", "limit": 4}).json()
    first = next(
        n
        for n, i in enumerate(order)
        if (t := web_library.taken[i]) and t < datetime.datetime(2016, 3, 1)
    )
    assert [p["id"] for p in page["photos"]] == order[first : first + 4]
    photo = page["photos"][0]
    assert set(photo) >= {"id", "name", "path", "takenAt", "size", "thumbnailUrl", "originalUrl"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"sort": "name"}, "sort"),
        ({"before": "yesterday"}, "not a place in the library"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"folder": "relative"}, "absolute"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_browse_requests(client: httpx.Client, params: dict, message: str) -> None:
    response = client.get("/api/photos", params=params)
    assert response.status_code == 422, response.text
    assert message in response.json()["message"]


def test_timeline_counts_by_month(client: httpx.Client, web_library: WebLibrary) -> None:
    timeline = client.get("/api/timeline").json()
    months: dict[str, int] = {}
    for taken in web_library.taken.values():
        if taken is not None:
            months[taken.strftime("%Y-%m")] = months.get(taken.strftime("%Y-%m"), 0) + 1
    assert timeline["months"] == [{"month": m, "count": c} for m, c in sorted(months.items())[::-1]]
    undated = sum(1 for t in web_library.taken.values() if t is None)
    assert (timeline["total"], timeline["undated"], timeline["undatedIncluded"]) == (
        len(web_library.ids),
        undated,
        True,
    )
    dated = client.get("/api/timeline", params={"notAfter": "2030-01-01"}).json()
    assert (dated["total"], dated["undated"], dated["undatedIncluded"]) == (
        len(web_library.ids) - undated,
        undated,
        False,
    )


def test_folders_with_counts(client: httpx.Client, web_library: WebLibrary) -> None:
    folders = client.get("/api/folders").json()["folders"]
    root = str(web_library.root)
    count = {
        sub: sum(1 for p in web_library.ids if p.startswith(f"{root}/{sub}/"))
        for sub in ("2010s", "recent")
    }
    assert folders == [
        {"path": root, "photos": len(web_library.ids), "depth": 0},
        {"path": f"{root}/2010s", "photos": count["2010s"], "depth": 1},
        {"path": f"{root}/recent", "photos": count["recent"], "depth": 1},
    ]


def test_search_totals_and_the_undated_hint(client: httpx.Client, web_library: WebLibrary) -> None:
    first = client.post("/api/search", json={"query": QUERY, "limit": 10}).json()
    assert (first["total"], first["undatedExcluded"]) == (len(web_library.ids), None)
    second = client.post("/api/search", json={"query": QUERY, "limit": 10, "offset": 10}).json()
    assert second["total"] is None  # counted once, on the first page
    undated = sum(1 for t in web_library.taken.values() if t is None)
    dated = {i for i, t in web_library.taken.items() if t and t.year >= 2016}
    body = {"query": QUERY, "limit": 5, "filter": {"notBefore": "2016-01-01"}}
    page = client.post("/api/search", json=body).json()
    assert (page["total"], page["undatedExcluded"]) == (len(dated), undated)
    with_score = {"query": QUERY, "limit": 5, "filter": {"minScore": -1}}
    assert client.post("/api/search", json=with_score).json()["total"] is None
    # "Similar" leaves the photo out, and so does its total; `#id` alone says the same.
    photo_id = next(iter(web_library.vectors))
    similar = client.get(f"/api/photos/{photo_id}/similar", params={"limit": 5}).json()
    assert similar["total"] == len(web_library.ids) - 1
    alone = client.post("/api/search", json={"query": f"#{photo_id}", "limit": 5}).json()
    assert [h["id"] for h in alone["results"]] == [h["id"] for h in similar["results"]]
    assert photo_id not in [h["id"] for h in alone["results"]]
    assert alone["total"] == similar["total"]


def test_status_and_warming_the_text_model(web_library: WebLibrary, tmp_path: Path) -> None:
    # A server of its own: its text model must start unloaded.
    with serve_library(web_library, tmp_path) as url, httpx.Client(base_url=url) as http:
        status = http.get("/api/status").json()
        assert status["photos"] == len(web_library.ids) and status["errors"] == 0
        assert status["models"] == {
            "image": str(web_library.models.image),
            "text": str(web_library.models.text),
            "textLoaded": False,
        }
        changed = datetime.datetime.fromisoformat(status["lastChange"])
        assert abs((datetime.datetime.now(datetime.UTC) - changed).days) < 1
        assert http.post("/api/warmup").status_code == 200
        deadline = time.monotonic() + 120  # a guard against hanging, not a measurement
        while not http.get("/api/status").json()["models"]["textLoaded"]:
            assert time.monotonic() < deadline, "the text model never finished loading"
            assert http.post("/api/warmup").status_code == 200  # one load at a time
            time.sleep(0.05)
        assert http.post("/api/warmup").json() == {"textLoaded": True}


def test_duplicates_are_the_exact_pairs(client: httpx.Client, web_library: WebLibrary) -> None:
    ids = sorted(web_library.vectors)
    vectors = np.stack([web_library.vectors[i] for i in ids])
    scores = vectors @ vectors.T
    pairs = sorted(
        (float(scores[a, b]), ids[a], ids[b])
        for a in range(len(ids))
        for b in range(a + 1, len(ids))
    )[::-1]
    cut = next(n for n in range(3, 40) if pairs[n - 1][0] - pairs[n][0] > 2e-4)
    threshold = (pairs[cut - 1][0] + pairs[cut][0]) / 2
    found = client.get("/api/duplicates", params={"threshold": threshold}).json()
    assert found["photosCompared"] == len(ids)
    listed = {frozenset(p["id"] for p in g["photos"]) for g in found["groups"]}
    joined = {id_ for group in listed for id_ in group}
    assert joined == {i for _, a, b in pairs[:cut] for i in (a, b)}
    for group in found["groups"]:
        assert group["loosest"] >= threshold - 1e-6
        pixels = [(p["width"] * p["height"], p["size"]) for p in group["photos"]]
        assert pixels == sorted(pixels, reverse=True)  # the largest first
    assert client.get("/api/duplicates", params={"threshold": 0.2}).status_code == 422


def test_exif_details_read_as_a_camera_shows_them() -> None:
    exif = {
        "Make": "NIKON CORPORATION",
        "Model": "NIKON D750",
        "LensMake": "Nikon",
        "LensModel": "Nikon AF-S 50mm f/1.8G",
        "ExposureTime": 0.004,
        "FNumber": 1.8,
        "ISOSpeedRatings": [400],
        "FocalLength": 50.0,
        "FocalLengthIn35mmFilm": 75,
    }
    assert exif_details.camera(exif) == "NIKON D750"
    assert exif_details.lens(exif) == "Nikon AF-S 50mm f/1.8G"
    assert exif_details.exposure(exif) == "1/250 s · f/1.8 · ISO 400 · 50 mm (75 mm in 35 mm terms)"
    assert exif_details.exposure({"ExposureTime": 2.5, "FNumber": 8.0}) == "2.5 s · f/8"
    assert exif_details.camera({"Make": "Apple", "Model": "iPhone 12"}) == "Apple iPhone 12"
    assert (exif_details.camera({}), exif_details.lens({}), exif_details.exposure({})) == (
        None,
        None,
        None,
    )


def test_the_library_routes_over_qdrant(
    web_library: WebLibrary, photo_models: PhotoModels, image_model: Model, tmp_path: Path
) -> None:
    url = f"qdrant://{tmp_path / 'qdrant'}"
    store = open_store(url)
    try:
        Indexer(store, index_options(photo_models), model=image_model).run([str(web_library.root)])
    finally:
        store.close()
    store = open_store(url, read_only=True)
    try:
        app = create_app(store, web_library.searcher(store), thumbnail_cache=tmp_path / "thumbs")
        with running(app) as base, httpx.Client(base_url=base, timeout=60) as http:
            paths: list[str] = []
            before = None
            while True:
                params = {"limit": 8, **({"before": before} if before else {})}
                page = http.get("/api/photos", params=params).json()
                paths += [p["path"] for p in page["photos"]]
                if (before := page["nextBefore"]) is None:
                    break
            assert [web_library.ids[p] for p in paths] == library_order(web_library)
            timeline = http.get("/api/timeline").json()
            assert timeline["total"] == len(web_library.ids)
            assert len(http.get("/api/folders").json()["folders"]) == 3
            status = http.get("/api/status").json()
            assert status["photos"] == len(web_library.ids) and status["lastChange"]
    finally:
        store.close()
