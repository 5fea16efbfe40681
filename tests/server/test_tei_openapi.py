"""Every TEI route against TEI's own OpenAPI document (tests/support/tei_openapi.json): the
requests sent here conform to TEI's request schemas, and every answer, success or error,
has a status TEI documents for that route and conforms to its schema.

Bodies TEI's schema refuses are sent too: they must be refused with a documented status
in TEI's error shape."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from handspring.server.errors import Contract, error_body
from tests.server.tei_fixtures import tei_folders, tei_url  # noqa: F401
from tests.support.tei_schema import TEI_OPENAPI, request_errors, response_errors

TIMEOUT = 60
LONG = "word " * 600
IDS = [101, 7592, 2088, 102]

# (path, body, status) of requests TEI's schema accepts.
CONFORMING: list[tuple[str, dict[str, Any], int]] = [
    ("/embed", {"inputs": "a photo of a cat"}, 200),
    ("/embed", {"inputs": ["a", "b"], "normalize": False, "truncate": True}, 200),
    ("/embed", {"inputs": IDS}, 200),
    ("/embed", {"inputs": [IDS, "x"], "truncation_direction": "Left"}, 200),
    ("/embed", {"inputs": "a", "dimensions": 8, "prompt_name": None}, 200),
    ("/embed", {"inputs": [""]}, 400),
    ("/embed", {"inputs": ["a"] * 17}, 413),
    ("/embed", {"inputs": LONG, "truncate": False}, 422),
    ("/embed", {"inputs": "a", "prompt_name": "nope"}, 422),
    ("/embed_all", {"inputs": ["a", "b c"]}, 200),
    ("/embed_all", {"inputs": IDS, "truncation_direction": "Right"}, 200),
    ("/embed_sparse", {"inputs": ["what is deep learning?", "cats"]}, 200),
    ("/embed_sparse", {"inputs": "a", "truncate": False}, 200),
    ("/embed_sparse", {"inputs": ""}, 400),
    ("/rerank", {"query": "q", "texts": ["a", "b"]}, 200),
    ("/rerank", {"query": "q", "texts": ["a"], "return_text": True, "raw_scores": True}, 200),
    ("/rerank", {"query": "q", "texts": ["a", "b"], "truncation_direction": "Left"}, 200),
    ("/rerank", {"query": "q", "texts": []}, 400),
    ("/rerank", {"query": "q", "texts": [LONG], "truncate": False}, 422),
    ("/predict", {"inputs": "I love it"}, 200),
    ("/predict", {"inputs": ["q", "d"], "raw_scores": True}, 200),
    ("/predict", {"inputs": [["a"], ["b", "c"]]}, 200),
    ("/predict", {"inputs": "I love it", "model": "classifier"}, 200),
    ("/predict", {"inputs": [["a", "b"]], "model": "classifier", "truncate": True}, 200),
    ("/predict", {"inputs": []}, 400),  # TEI's schema takes an empty batch: refused as empty
    ("/similarity", {"inputs": {"source_sentence": "a", "sentences": ["b", "c"]}}, 200),
    (
        "/similarity",
        {
            "inputs": {"source_sentence": "a", "sentences": ["b"]},
            "parameters": {"truncate": True, "truncation_direction": "Left", "prompt_name": None},
        },
        200,
    ),
    ("/similarity", {"inputs": {"source_sentence": "a", "sentences": []}}, 400),
    ("/tokenize", {"inputs": "Héllo wörld"}, 200),
    ("/tokenize", {"inputs": ["a b", "c"], "add_special_tokens": False}, 200),
    ("/tokenize", {"inputs": ""}, 400),
    ("/decode", {"ids": IDS}, 200),
    ("/decode", {"ids": [IDS, [2088]], "skip_special_tokens": False}, 200),
    ("/decode", {"ids": [[]]}, 400),
    ("/v1/embeddings", {"input": ["a", "b"], "model": "minilm"}, 200),
    ("/v1/embeddings", {"input": "a", "model": "minilm", "encoding_format": "base64"}, 200),
]

# (path, body) of requests TEI's schema refuses: refused here too, in TEI's shape.
NOT_CONFORMING: list[tuple[str, dict[str, Any]]] = [
    ("/embed", {"inputs": []}),
    ("/embed", {"inputs": 3}),
    ("/embed", {"inputs": "a", "truncation_direction": "Up"}),
    ("/embed_all", {"inputs": [1, "a"]}),
    ("/rerank", {"query": "q"}),
    ("/predict", {"inputs": ["a", "b", "c"]}),
    ("/similarity", {"inputs": {"sentences": ["a"]}}),
    ("/tokenize", {"inputs": 5}),
    ("/decode", {"ids": ["a"]}),
]


@pytest.mark.parametrize(("path", "body", "status"), CONFORMING)
def test_conforming_requests_get_conforming_answers(
    tei_url: str,  # noqa: F811
    path: str,
    body: dict[str, Any],
    status: int,
) -> None:
    assert request_errors(path, body) == [], "the test's own request does not conform"
    response = requests.post(tei_url + path, json=body, timeout=TIMEOUT)
    assert response.status_code == status, response.text
    assert response_errors(path, "post", status, response.json()) == [], response.text


@pytest.mark.parametrize(("path", "body"), NOT_CONFORMING)
def test_requests_teis_schema_refuses_are_refused(
    tei_url: str,  # noqa: F811
    path: str,
    body: dict[str, Any],
) -> None:
    assert request_errors(path, body) != [], "the test's request was meant not to conform"
    response = requests.post(tei_url + path, json=body, timeout=TIMEOUT)
    assert response.status_code in (400, 413, 422), response.text
    assert response_errors(path, "post", response.status_code, response.json()) == []


@pytest.mark.parametrize("query", ["", "?model=reranker", "?model=classifier", "?model=splade"])
def test_info_conforms_for_every_kind(tei_url: str, query: str) -> None:  # noqa: F811
    response = requests.get(f"{tei_url}/info{query}", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response_errors("/info", "get", 200, response.json()) == [], response.text


def test_health_and_metrics(tei_url: str) -> None:  # noqa: F811
    health = requests.get(f"{tei_url}/health", timeout=TIMEOUT)
    assert health.status_code == 200 and response_errors("/health", "get", 200, None) == []
    assert requests.get(f"{tei_url}/metrics", timeout=TIMEOUT).status_code == 200


def test_every_documented_error_status_has_teis_shape() -> None:
    """Statuses the tests above cannot provoke at will (429 overloaded, 424, 503) are
    rendered by the same function: each conforms where TEI documents it."""
    for path, item in TEI_OPENAPI["paths"].items():
        if path == "/v1/embeddings":  # OpenAI's error object there, which its clients read
            continue
        for method, operation in item.items():
            for status in map(int, operation["responses"]):
                if status >= 400:
                    body = error_body(Contract.TEI, status, "reason", None)
                    assert response_errors(path, method, status, body) == [], (path, status)
