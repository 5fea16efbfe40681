"""TEI's `/embed`, `/info`, `/health`, and the original photo-search server's
`/v1/embed` and `/_health`."""

from __future__ import annotations

import numpy as np
import pytest
import requests

import handspring
from handspring.embedder import Model

LONG = "word " * 600


@pytest.fixture(scope="module")
def minilm() -> Model:
    model = handspring.load("all-minilm-l6-v2", precision="fp32")
    assert model.modalities == ("text",)
    return model


def test_tei_embed_is_always_nested(url: str, minilm: Model) -> None:
    one = requests.post(f"{url}/embed", json={"inputs": "hello"}, timeout=30).json()
    assert np.array_equal(np.float32(one), minilm.embed_texts(["hello"]))
    many = requests.post(f"{url}/embed", json={"inputs": ["a", "b"]}, timeout=30).json()
    assert np.array_equal(np.float32(many), minilm.embed_texts(["a", "b"]))
    raw = requests.post(
        f"{url}/embed", json={"inputs": ["a"], "normalize": False}, timeout=30
    ).json()
    assert np.array_equal(np.float32(raw), minilm.embed_texts(["a"], normalize=False))
    cut = requests.post(f"{url}/embed", json={"inputs": "a", "dimensions": 16}, timeout=30).json()
    assert np.array_equal(np.float32(cut), minilm.embed_texts(["a"], dimensions=16))


def test_tei_truncation_per_request(url: str) -> None:
    refused = requests.post(f"{url}/embed", json={"inputs": [LONG], "truncate": False}, timeout=30)
    assert refused.status_code == 422
    assert refused.json()["error_type"] == "Validation"
    assert refused.json()["error"].startswith("inputs[0]: longer than the 256 tokens")
    cut = requests.post(f"{url}/embed", json={"inputs": [LONG], "truncate": True}, timeout=30)
    assert cut.status_code == 200


def test_tei_validation_error_shape(url: str) -> None:
    response = requests.post(f"{url}/embed", json={"inputs": 3}, timeout=30)
    assert response.status_code == 422
    assert set(response.json()) == {"error", "error_type"}
    assert "inputs" in response.json()["error"]


def test_tei_info_and_health(url: str) -> None:
    info = requests.get(f"{url}/info", timeout=30).json()
    assert info["model_id"] == "all-minilm-l6-v2"
    assert info["max_input_length"] == 256
    assert info["max_client_batch_size"] == 256
    assert requests.get(f"{url}/health", timeout=10).status_code == 200


def test_photo_search_embed_form(url: str, minilm: Model) -> None:
    body = requests.post(f"{url}/v1/embed", data={"query": "a red car"}, timeout=30).json()
    assert set(body) == {"v"}
    assert np.array_equal(np.float32(body["v"]), minilm.embed_texts(["a red car"])[0])


@pytest.mark.parametrize("query", ["", "   ", LONG])
def test_photo_search_empty_or_oversized_query_is_400(url: str, query: str) -> None:
    response = requests.post(f"{url}/v1/embed", data={"query": query}, timeout=30)
    assert response.status_code == 400
    assert set(response.json()) == {"message"} and response.json()["message"]


def test_photo_search_health(url: str) -> None:
    response = requests.get(f"{url}/_health", timeout=10)
    assert response.json() == {"status": "healthy"}
