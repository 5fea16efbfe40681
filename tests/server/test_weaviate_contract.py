"""Weaviate's multi2vec-clip and text2vec-transformers containers, checked with `requests`
as Weaviate's own smoke tests check them."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
import requests

import handspring
from handspring.embedder import Model
from tests.server.images import png_b64


@pytest.fixture(scope="module")
def clip(tiny_hf: Path) -> Model:
    model = handspring.load(tiny_hf, precision="fp32")
    assert model.modalities == ("image", "text")
    return model


def test_probes_and_meta(url: str) -> None:
    for probe in ("/.well-known/live", "/.well-known/ready"):
        response = requests.get(url + probe, timeout=10)
        assert response.status_code == 204 and response.content == b""
    meta = requests.get(f"{url}/meta", timeout=10)
    assert meta.status_code == 200 and isinstance(meta.json(), dict)


def test_vectorize_texts_and_images_in_input_order(url: str, clip: Model) -> None:
    texts = ["a cat", "a dog on a sofa", "a cat"]
    images = [png_b64(1), png_b64(2), png_b64(1)]
    body = requests.post(f"{url}/vectorize", json={"texts": texts, "images": images}, timeout=30)
    assert body.status_code == 200
    out = body.json()
    # Unnormalised, as the reference containers return get_text_features/get_image_features.
    text_vectors = np.array(out["textVectors"], dtype=np.float32)
    image_vectors = np.array(out["imageVectors"], dtype=np.float32)
    assert np.array_equal(text_vectors, clip.embed_texts(texts, normalize=False))
    decoded = [base64.b64decode(x) for x in images]
    assert np.array_equal(image_vectors, clip.embed_images(decoded, normalize=False).embeddings)
    # Identical images in one batch give identical vectors.
    assert np.array_equal(image_vectors[0], image_vectors[2])


def test_vectorize_each_part_is_optional(url: str) -> None:
    only_texts = requests.post(f"{url}/vectorize", json={"texts": ["x"]}, timeout=30).json()
    assert len(only_texts["textVectors"]) == 1 and only_texts["imageVectors"] == []
    empty = requests.post(f"{url}/vectorize", json={}, timeout=30).json()
    assert empty == {"textVectors": [], "imageVectors": []}


def test_vectorize_error_shape(url: str) -> None:
    response = requests.post(f"{url}/vectorize", json={"images": ["bm90IGFuIGltYWdl"]}, timeout=30)
    assert response.status_code == 500  # what Weaviate's own containers answer
    assert set(response.json()) == {"error"} and response.json()["error"].startswith("images[0]: ")


def test_text2vec_single_and_batch_forms(url: str) -> None:
    minilm = handspring.load("all-minilm-l6-v2", precision="fp32")
    assert minilm.modalities == ("text",)
    for path in ("/vectors", "/vectors/"):
        single = requests.post(
            url + path,
            json={"text": "hello there", "config": {"pooling_strategy": "masked_mean"}},
            timeout=30,
        ).json()
        assert single["text"] == "hello there" and single["dim"] == 384
        assert np.array_equal(np.float32(single["vector"]), minilm.embed_texts(["hello there"])[0])
    batch = requests.post(f"{url}/vectors", json={"texts": ["a", "b c"]}, timeout=30).json()
    assert batch["dims"] == 384
    assert np.array_equal(np.float32(batch["vectors"]), minilm.embed_texts(["a", "b c"]))
    cut = requests.post(
        f"{url}/vectors", json={"text": "a", "config": {"dimensions": 32}}, timeout=30
    ).json()
    assert cut["dim"] == 32 and len(cut["vector"]) == 32
