"""`/v1/embeddings` against the official `openai` client, vector for vector with the library."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import openai
import pytest
import requests

import handspring
from handspring.embedder import Model
from tests.server.images import png_b64

TEXTS = ["a photo of a cat", " ", "über café ☕", "word " * 400]


@pytest.fixture(scope="module")
def minilm() -> Model:
    model = handspring.load("all-minilm-l6-v2", precision="fp32")
    assert model.modalities == ("text",)
    return model


@pytest.fixture(scope="module")
def clip(tiny_hf: Path) -> Model:
    model = handspring.load(tiny_hf, precision="fp32")
    assert model.modalities == ("image", "text")
    return model


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_client_default_base64_equals_the_library(client: openai.OpenAI, minilm: Model) -> None:
    # The client asks for base64 when the caller names no encoding, and decodes it itself.
    response = client.embeddings.create(input=TEXTS, model="minilm")
    got = np.array([d.embedding for d in response.data], dtype=np.float32)
    assert np.array_equal(got, minilm.embed_texts(TEXTS))
    assert [d.index for d in response.data] == list(range(len(TEXTS)))
    assert response.model == "minilm"
    tokens = int(minilm.count_tokens(TEXTS)[0].sum())
    assert response.usage.prompt_tokens == response.usage.total_tokens == tokens


def test_float_encoding_and_single_string(client: openai.OpenAI, minilm: Model) -> None:
    response = client.embeddings.create(input="hello", model="minilm", encoding_format="float")
    assert np.array_equal(np.float32(response.data[0].embedding), minilm.embed_texts(["hello"])[0])


def test_raw_base64_is_little_endian_float32(url: str, minilm: Model) -> None:
    body = requests.post(
        f"{url}/v1/embeddings",
        json={"input": ["hello"], "model": "minilm", "encoding_format": "base64"},
        timeout=30,
    ).json()
    assert body["object"] == "list" and body["data"][0]["object"] == "embedding"
    raw = np.frombuffer(base64.b64decode(body["data"][0]["embedding"]), dtype="<f4")
    assert np.array_equal(raw, minilm.embed_texts(["hello"])[0])


def test_dimensions_cut_and_renormalise(client: openai.OpenAI, minilm: Model) -> None:
    response = client.embeddings.create(input=TEXTS[:2], model="minilm", dimensions=64)
    got = np.array([d.embedding for d in response.data], dtype=np.float32)
    assert got.shape == (2, 64)
    assert np.array_equal(got, minilm.embed_texts(TEXTS[:2], dimensions=64))


def test_images_by_data_url_and_plain_base64(client: openai.OpenAI, clip: Model) -> None:
    images = [png_b64(1), png_b64(2, (64, 31))]
    inputs = [f"data:image/png;base64,{images[0]}", images[1]]
    response = client.embeddings.create(
        input=inputs, model="clip", extra_body={"modality": "image"}
    )
    got = np.array([d.embedding for d in response.data], dtype=np.float32)
    expected = clip.embed_images([base64.b64decode(x) for x in images]).embeddings
    assert np.array_equal(got, expected)
    assert response.usage.prompt_tokens == 0


def test_clip_text_through_the_same_route(client: openai.OpenAI, clip: Model) -> None:
    response = client.embeddings.create(input=TEXTS, model="clip")
    got = np.array([d.embedding for d in response.data], dtype=np.float32)
    assert np.array_equal(got, clip.embed_texts(TEXTS))


def test_unknown_model_is_a_404_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(input="x", model="gpt-nope")
    error = caught.value.body
    assert isinstance(error, dict)
    assert "gpt-nope" in error["message"] and "minilm" in error["message"]
    assert error["code"] == "model_not_found" and error["param"] == "model"


def test_bad_image_is_a_422_naming_the_item(client: openai.OpenAI) -> None:
    bad = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode()
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.embeddings.create(
            input=[png_b64(1), bad], model="clip", extra_body={"modality": "image"}
        )
    message = caught.value.body["message"]  # type: ignore[index]
    assert message.startswith("input[1]: ")


def test_token_arrays_and_text_only_models_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError, match="token-id arrays"):
        client.embeddings.create(input=[[1, 2, 3]], model="minilm")
    with pytest.raises(openai.UnprocessableEntityError, match="does not embed images"):
        client.embeddings.create(
            input=[png_b64(1)], model="minilm", extra_body={"modality": "image"}
        )


def test_models_are_listed_and_found_by_alias(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["clip", "minilm"]
    response = client.embeddings.create(input="x", model="sentence-transformers/all-MiniLM-L6-v2")
    assert response.model == "minilm"


# ------------------------------------------------------- files sent without a modality


def test_image_data_urls_without_a_modality_are_images(url: str, clip: Model) -> None:
    urls = ["data:image/png;base64," + png_b64(s) for s in (1, 2)]
    response = requests.post(url + "/v1/embeddings", json={"input": urls}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "clip"
    got = np.float32([row["embedding"] for row in response.json()["data"]])
    expected = clip.embed_images([base64.b64decode(png_b64(s)) for s in (1, 2)]).embeddings
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("inputs", "said"),
    [
        (["a cat", "data:image/png;base64," + png_b64(1)], "[1] is a image/png data URL"),
        (["a cat", png_b64(1)], "[1] is the base64 of a PNG image"),
        ([png_b64(3, size=(200, 200), fmt="JPEG")], "[0] is the base64 of a JPEG image"),
    ],
)
def test_a_file_sent_as_text_is_refused_by_name(url: str, inputs: list[str], said: str) -> None:
    """Never embedded as words: refused, naming what it is and how to send it, whatever its
    length (a long one is not reported as an over-long text)."""
    for path, field in (("/v1/embeddings", "input"), ("/embed", "inputs")):
        response = requests.post(url + path, json={field: inputs}, timeout=30)
        assert response.status_code == 422, (path, response.text)
        message = response.text
        assert field + said in message and '\\"modality\\": \\"image\\"' in message, message
