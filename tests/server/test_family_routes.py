"""Every family through the server's contracts that name a model: served by name beside the
default models, a model's images and texts come back as the library embeds them (OpenAI and
native routes; TEI and Weaviate serve the configured default models, tested elsewhere)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

import handspring
from handspring.embedder import Model
from handspring.server.config import ModelSpec
from tests.server.conftest import ServerFactory
from tests.server.images import png_b64, png_bytes

TEXTS = ["a red bicycle by the sea", "Zwei Hunde im Schnee", "東京の夜景"]
ATOL = 1e-6


def _siglip(tokenizer: str) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        from tests.support.siglip_checkpoints import write_siglip

        return write_siglip(folder, tokenizer, seed=4)

    return write


def _naflex(folder: Path) -> Path:
    from tests.support.siglip2_checkpoints import write_siglip2

    return write_siglip2(folder)


# served name -> writer of the model folder
FAMILIES: dict[str, Callable[[Path], Path]] = {
    "siglip": _siglip("spiece"),
    "siglip2": _siglip("gemma"),
    "siglip2-naflex": _naflex,
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("family_models")
    return {name: write(root / name) for name, write in FAMILIES.items()}


@pytest.fixture(scope="module")
def loaded(folders: dict[str, Path]) -> dict[str, Model]:
    return {name: handspring.load(folder, precision="fp32") for name, folder in folders.items()}


@pytest.fixture(scope="module")
def url(
    serve: ServerFactory, models: tuple[ModelSpec, ...], folders: dict[str, Path]
) -> Iterator[str]:
    specs = tuple(ModelSpec(name, str(folder), "fp32") for name, folder in folders.items())
    with serve(models=(*models, *specs)) as base:
        yield base


def _post(url: str, path: str, body: object) -> requests.Response:
    response = requests.post(url + path, json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response


pytestmark = pytest.mark.reference
FAMILY = pytest.mark.parametrize("name", list(FAMILIES))


@FAMILY
def test_openai_images_and_texts(url: str, loaded: dict[str, Model], name: str) -> None:
    model = loaded[name]
    texts = _post(url, "/v1/embeddings", {"model": name, "input": TEXTS}).json()
    got = np.float32([row["embedding"] for row in texts["data"]])
    np.testing.assert_allclose(got, model.embed_texts(TEXTS), rtol=0, atol=ATOL)
    body = {"model": name, "input": [png_b64(1), png_b64(2)], "modality": "image"}
    images = _post(url, "/v1/embeddings", body).json()
    got = np.float32([row["embedding"] for row in images["data"]])
    expected = model.embed_images([png_bytes(1), png_bytes(2)]).embeddings
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


@FAMILY
def test_native_routes(url: str, loaded: dict[str, Model], name: str) -> None:
    model = loaded[name]
    native = _post(url, "/api/embed/texts", {"model": name, "texts": TEXTS}).json()
    np.testing.assert_allclose(
        np.float32(native["embeddings"]), model.embed_texts(TEXTS), rtol=0, atol=ATOL
    )
    body = {"model": name, "images": [png_b64(3)]}
    images = _post(url, "/api/embed/images", body).json()
    expected = model.embed_images([png_bytes(3)]).embeddings
    np.testing.assert_allclose(np.float32(images["embeddings"]), expected, rtol=0, atol=ATOL)
