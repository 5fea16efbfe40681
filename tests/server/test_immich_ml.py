"""Immich's machine-learning contract, as the Immich server calls it: multipart `/predict`
with an `entries` JSON string and an `image` file part or a `text` field. Vectors from an
Immich-layout folder equal Immich's own recipe run on the same files
(tests/support/immich_recipe.py), so an existing Immich library stays searchable."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from handspring.server.config import ModelSpec
from tests.server.conftest import ServerFactory
from tests.support.hub_cache import hub_repo
from tests.support.images import photo_array
from tests.support.immich_recipe import immich_image_vector, immich_text_vector

pytestmark = pytest.mark.reference

NAME = "ViT-B-32__openai"
NLLB_NAME = "nllb-clip-base-siglip__v1"  # the same folder, served under an NLLB name
CACHED_NAME = "ViT-B-16__openai"  # served from the hub cache, never configured
ATOL = 2e-6


def _jpeg(width: int, height: int, seed: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(photo_array(height, width, seed=seed)).save(out, "JPEG", quality=90)
    return out.getvalue()


# Odd margins on purpose: Immich's crop starts at int(w/2 - size/2), not at a rounding.
IMAGES = [_jpeg(97, 61, 1), _jpeg(40, 123, 2), _jpeg(64, 64, 3), _jpeg(33, 45, 4)]
TEXTS = ["a dog on the beach", "  Zwei   Katzen,  im Schnee! ", "東京の夜景"]


@pytest.fixture(scope="module")
def immich_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.immich import write_immich

    return write_immich(tmp_path_factory.mktemp("immich_ml") / "immich", seed=7)


@pytest.fixture(scope="module")
def url(serve: ServerFactory, models: tuple[ModelSpec, ...], immich_folder: Path) -> Iterator[str]:
    # Immich's repo of another name, as huggingface_hub caches it (the tests' own cache).
    _, snapshot = hub_repo(f"immich-app/{CACHED_NAME}")
    shutil.copytree(immich_folder, snapshot)
    specs = (
        ModelSpec(NAME, str(immich_folder), "fp32"),
        ModelSpec(NLLB_NAME, str(immich_folder), "fp32"),
    )
    with serve(models=(*models, *specs)) as base:
        yield base


def _predict(url: str, entries: object, **parts: object) -> requests.Response:
    """As Immich's server sends it: multipart, `entries` a JSON string."""
    data: dict[str, str] = {"entries": json.dumps(entries)}
    files = {}
    if "image" in parts:
        files["image"] = ("blob", parts["image"], "application/octet-stream")
    if "text" in parts:
        data["text"] = str(parts["text"])
    return requests.post(f"{url}/predict", data=data, files=files or None, timeout=60)


def _vector(response: requests.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    clip = response.json()["clip"]
    assert isinstance(clip, str)  # a JSON array serialised into a string
    return np.float32(json.loads(clip))


def test_root_and_ping(url: str) -> None:
    assert requests.get(f"{url}/", timeout=10).json() == {"message": "Immich ML"}
    ping = requests.get(f"{url}/ping", timeout=10)
    assert ping.text == "pong" and ping.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("index", range(len(IMAGES)))
def test_image_vectors_equal_immichs_recipe(url: str, immich_folder: Path, index: int) -> None:
    data = IMAGES[index]
    response = _predict(url, {"clip": {"visual": {"modelName": NAME}}}, image=data)
    got = _vector(response)
    np.testing.assert_allclose(got, immich_image_vector(immich_folder, data), rtol=0, atol=ATOL)
    assert abs(float(np.linalg.norm(got)) - 1.0) < 1e-5
    width, height = Image.open(io.BytesIO(data)).size
    assert response.json()["imageHeight"] == height and response.json()["imageWidth"] == width


@pytest.mark.parametrize("text", TEXTS)
def test_text_vectors_equal_immichs_recipe(url: str, immich_folder: Path, text: str) -> None:
    entries = {"clip": {"textual": {"modelName": NAME, "options": {"language": "de"}}}}
    got = _vector(_predict(url, entries, text=text))
    np.testing.assert_allclose(got, immich_text_vector(immich_folder, text), rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    ("language", "prefix"),
    [("de", "deu_Latn"), ("pt-BR", "por_Latn"), ("ja", "jpn_Hira"), ("de-AT", "deu_Latn"),
     ("xx", "eng_Latn"), (None, "")],
)  # fmt: skip
def test_nllb_queries_carry_the_flores_code_of_their_language(
    url: str, immich_folder: Path, language: str | None, prefix: str
) -> None:
    options = {"language": language} if language else {}
    entries = {"clip": {"textual": {"modelName": NLLB_NAME, "options": options}}}
    got = _vector(_predict(url, entries, text="  ein   Hund "))
    expected = immich_text_vector(immich_folder, prefix + "ein Hund")  # cleaned, then prefixed
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


def test_a_model_in_the_hub_cache_is_served_by_its_immich_name(
    url: str, immich_folder: Path
) -> None:
    entries = {"clip": {"textual": {"modelName": CACHED_NAME}}}
    got = _vector(_predict(url, entries, text=TEXTS[0]))
    expected = immich_text_vector(immich_folder, TEXTS[0])
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    listed = requests.get(f"{url}/v1/models", timeout=10).json()["data"]
    assert CACHED_NAME in [m["id"] for m in listed]


def test_errors_in_immichs_shape(url: str) -> None:
    visual = {"clip": {"visual": {"modelName": NAME}}}
    neither = _predict(url, visual)
    assert neither.status_code == 400
    assert neither.json() == {"detail": "Either image or text must be provided"}
    for bad in ("not json", "[1, 2]", json.dumps({"clip": {"visual": {}}})):
        response = requests.post(f"{url}/predict", data={"entries": bad, "text": "x"}, timeout=30)
        assert response.status_code == 422, bad
        assert response.json() == {"detail": "Invalid request format."}
    faces = {"facial-recognition": {"detection": {"modelName": "buffalo_l"}}}
    refused = _predict(url, faces, image=IMAGES[0])
    assert refused.status_code == 422
    assert "'facial-recognition' is not offered here" in refused.json()["detail"]
    unknown = _predict(
        url, {"clip": {"visual": {"modelName": "ViT-H-14__nowhere"}}}, image=IMAGES[0]
    )
    assert unknown.status_code == 404
    assert "handspring download immich-app/ViT-H-14__nowhere" in unknown.json()["detail"]
    broken = _predict(url, visual, image=b"\xff\xd8 not a jpeg")
    assert broken.status_code == 422 and "image" in broken.json()["detail"]
