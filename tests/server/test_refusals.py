"""Issue 14: requests refused in each contract's own words and shape. An empty text is
refused by name (OpenAI answers 400), except where a contract's reference embeds one
(Weaviate's multi2vec containers; the Open Inference Protocol and Handspring's own routes,
which embed as the library does: test_oip_grpc); a
body that is not JSON says so, with no field named; and `/predict` answers a broken form
in Immich's shape and a broken JSON body in TEI's."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import requests

from tests.server.tei_fixtures import tei_folders, tei_url  # noqa: F401

TIMEOUT = 60


def post(url: str, path: str, body: Any) -> requests.Response:
    return requests.post(url + path, json=body, timeout=TIMEOUT)


def openai_error(message: str, param: str | None) -> dict:
    kind = "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


# ------------------------------------------------------------------ empty texts


@pytest.mark.parametrize(
    ("path", "body", "item", "param"),
    [
        ("/v1/embeddings", {"input": "", "model": "clip"}, "input[0]", "input"),
        ("/v1/embeddings", {"input": ["a", ""], "model": "minilm"}, "input[1]", "input"),
    ],
)
def test_an_empty_text_is_openais_400(
    url: str, path: str, body: dict, item: str, param: str
) -> None:
    response = post(url, path, body)
    assert response.status_code == 400
    assert response.json() == openai_error(f"{item}: the input is empty", param)


def test_native_text_errors_name_the_field_sent(url: str) -> None:
    # /api/embed's texts ran through /api/embed/texts, whose field is `texts`.
    body = {"modality": "text", "inputs": ["a", "x" * 100_001]}
    response = post(url, "/api/embed", body)
    assert response.status_code == 422
    message = "inputs[1]: 100,001 characters is over the limit of 100,000"
    assert response.json() == openai_error(message, "inputs")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"text": ""}, "text[0]: the input is empty"),
        ({"texts": ["a", ""]}, "texts[1]: the input is empty"),
        ({}, "text: Field required (or texts, for a batch)"),  # was embedded as ""
    ],
)
def test_weaviate_text2vec_refuses_an_empty_text_with_its_500(
    url: str, body: dict, message: str
) -> None:
    response = post(url, "/vectors", body)
    assert response.status_code == 500 and response.json() == {"error": message}


def test_weaviate_multi2vec_embeds_an_empty_text_as_its_containers_do(url: str) -> None:
    # Weaviate sends an object's empty text property as "": refusing it would fail the
    # object's import, where multi2vec-clip's container gives it a vector.
    answer = post(url, "/vectorize", {"texts": ["a", ""]})
    assert answer.status_code == 200, answer.text
    vectors = answer.json()["textVectors"]
    alone = post(url, "/vectorize", {"texts": [""]}).json()["textVectors"]
    assert len(vectors) == 2
    np.testing.assert_allclose(vectors[1], alone[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/embed", {"inputs": ["a", ""], "model": "minilm"}, "inputs[1]: the input is empty"),
        ("/predict", {"inputs": ""}, "inputs[0]: the input is empty"),
    ],
)
def test_tei_refuses_an_empty_text_as_empty(
    tei_url: str,  # noqa: F811
    path: str,
    body: dict,
    message: str,
) -> None:
    response = post(tei_url, path, body)
    assert response.status_code == 400
    assert response.json() == {"error": message, "error_type": "Empty"}


def test_infinity_refuses_an_empty_pair_in_openais_shape(tei_url: str) -> None:  # noqa: F811
    # A query with an empty document is a pair with text in it, as TEI reads it.
    response = post(tei_url, "/v1/rerank", {"query": "", "documents": ["a", ""]})
    assert response.status_code == 400
    assert response.json() == openai_error("documents[1]: the input is empty", "documents")


def test_immich_reads_an_empty_text_as_none_given(url: str) -> None:
    # FastAPI, which Immich's service runs on, reads an empty form field as a missing one.
    entries = json.dumps({"clip": {"textual": {"modelName": "clip"}}})
    files = {"entries": (None, entries), "text": (None, "")}
    response = requests.post(f"{url}/predict", files=files, timeout=TIMEOUT)
    assert response.status_code == 400
    assert response.json() == {"detail": "Either image or text must be provided"}


# ------------------------------------------------------------ bodies not JSON

NOT_JSON = [
    (b'{"model": ', "Expecting value at position 10"),
    (b'{"model": "m",}', "Expecting property name enclosed in double quotes at position 14"),
]


def _tei(message: str) -> tuple[int, dict]:
    return 422, {"error": message, "error_type": "Validation"}


CONTRACTS = {
    "/v1/embeddings": lambda m: (422, openai_error(m, None)),
    "/v1/rerank": lambda m: (422, openai_error(m, None)),  # infinity
    "/api/embed/texts": lambda m: (422, openai_error(m, None)),
    "/embed": _tei,
    "/predict": _tei,  # a JSON body is TEI's
    "/vectorize": lambda m: (500, {"error": m}),
    "/vectors": lambda m: (500, {"error": m}),
    "/v2/models/clip/infer": lambda m: (400, {"error": m}),
}


@pytest.mark.parametrize("path", CONTRACTS)
@pytest.mark.parametrize(("body", "reason"), NOT_JSON)
def test_a_body_that_is_not_json_says_so_in_each_contract(
    url: str, path: str, body: bytes, reason: str
) -> None:
    headers = {"Content-Type": "application/json"}
    response = requests.post(url + path, data=body, headers=headers, timeout=TIMEOUT)
    status, expected = CONTRACTS[path](f"the request body is not JSON: {reason}")
    assert (response.status_code, response.json()) == (status, expected)


# --------------------------------------------------- /predict: Immich's form or TEI's JSON

ENTRIES = json.dumps({"clip": {"textual": {"modelName": "clip"}}})
PART = b'--XYZ\r\nContent-Disposition: form-data; name="entries"\r\n\r\n{}\r\n--XYZ--\r\n'


@pytest.mark.parametrize(
    ("content_type", "body", "status", "detail"),
    [
        ("multipart/form-data", PART, 400, "Missing boundary in multipart."),
        ("multipart/form-data; boundary=XYZ", b"--XYZ\r\nnot a header\r\n\r\n", 400, None),
        ("multipart/form-data; boundary=XYZ", b"", 422, "entries: Field required"),
        ("Multipart/Form-Data; boundary=XYZ", b"", 422, "entries: Field required"),
        ("application/x-www-form-urlencoded", b"text=a", 422, "entries: Field required"),
        ("application/x-www-form-urlencoded", b"entries=&text=a", 422, "entries: Field required"),
        ("application/x-www-form-urlencoded", b"entries={&text=a", 422, "Invalid request format."),
    ],
)
def test_a_broken_form_is_answered_in_immichs_shape(
    url: str, content_type: str, body: bytes, status: int, detail: str | None
) -> None:
    headers = {"Content-Type": content_type}
    response = requests.post(f"{url}/predict", data=body, headers=headers, timeout=TIMEOUT)
    assert response.status_code == status
    assert response.json() == {"detail": detail or "Invalid multipart data."}


def test_entries_sent_as_a_file_are_named(url: str) -> None:
    files = {"entries": ("entries.json", ENTRIES.encode(), "application/json"), "text": (None, "a")}
    response = requests.post(f"{url}/predict", files=files, timeout=TIMEOUT)
    assert response.status_code == 422
    assert response.json() == {
        "detail": "entries: expected a form field (a JSON string), not a file"
    }


def test_a_json_body_on_predict_keeps_teis_shape(url: str) -> None:
    # This server has no cross-encoder: TEI's 424, not Immich's {"detail"}.
    response = post(url, "/predict", {"inputs": "a"})
    assert response.status_code == 424 and response.json()["error_type"] == "Backend"
    assert set(response.json()) == {"error", "error_type"}
    malformed = requests.post(f"{url}/predict", data=b'{"inputs": ', timeout=TIMEOUT)
    assert malformed.json() == {
        "error": "the request body is not JSON: Expecting value at position 11",
        "error_type": "Validation",
    }
