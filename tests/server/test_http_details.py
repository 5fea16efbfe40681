"""HTTP details every contract shares: 405s name the allowed methods, the OpenAPI schema
says which lists may be empty exactly as the code decides it, integers are integers, and
empty or oversized inputs are named for what they are."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import pytest
import requests

from tests.server.images import png_b64

TIMEOUT = 30


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header gives this size, with no pixels: enough for any header check."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------ 405 and Allow


@pytest.mark.parametrize(
    ("method", "path", "allowed", "shape"),
    [
        ("GET", "/v1/embeddings", "POST", {"error"}),  # OpenAI
        ("POST", "/v1/models", "GET", {"error"}),
        ("GET", "/embed", "POST", {"error", "error_type"}),  # TEI
        ("GET", "/vectorize", "POST", {"error"}),  # Weaviate
        ("DELETE", "/.well-known/live", "GET", {"error"}),
        ("GET", "/v1/embed", "POST", {"message"}),  # photo search
        ("PUT", "/api/embed/texts", "POST", {"error"}),  # native
    ],
)
def test_405_names_the_allowed_methods(
    url: str, method: str, path: str, allowed: str, shape: set[str]
) -> None:
    response = requests.request(method, url + path, timeout=TIMEOUT)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed  # RFC 9110: a 405 must carry Allow
    assert set(response.json()) == shape


# ------------------------------------------------------ empty lists: schema == code


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _array_members(schema: dict[str, Any], spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The array schemas a property may take (itself, or members of anyOf)."""
    schema = _resolve(schema, spec)
    members = schema.get("anyOf", [schema])
    return [m for m in (_resolve(m, spec) for m in members) if m.get("type") == "array"]


def _body_property(spec: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    return _resolve(body["schema"], spec)["properties"][name]


# What each contract's reference does with an empty list: OpenAI and TEI refuse one,
# Weaviate's containers answer it with an empty list; Handspring's own routes refuse one.
V2_TEXT = {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a cat"]}
EMPTY_LISTS = [
    ("/v1/embeddings", {"input": [], "model": "minilm"}, "input", 422),
    ("/embed", {"inputs": []}, "inputs", 400),  # TEI: 400, error_type "Empty"
    ("/embed_all", {"inputs": []}, "inputs", 400),
    ("/embed_sparse", {"inputs": []}, "inputs", 400),
    ("/rerank", {"query": "q", "texts": []}, "texts", 400),
    ("/predict", {"inputs": []}, "inputs", 400),
    ("/tokenize", {"inputs": []}, "inputs", 400),
    ("/decode", {"ids": []}, "ids", 400),
    ("/v1/rerank", {"query": "q", "documents": []}, "documents", 422),  # infinity
    ("/api/embed/texts", {"texts": []}, "texts", 422),
    ("/api/embed/images", {"images": []}, "images", 422),
    ("/api/embed/audio", {"audio": []}, "audio", 422),
    ("/api/embed", {"modality": "text", "inputs": []}, "inputs", 422),
    ("/vectorize", {"texts": [], "images": []}, "texts", 200),
    ("/vectorize", {"texts": ["a cat"], "images": []}, "images", 200),
    ("/vectors", {"texts": []}, "texts", 200),
    # KServe: a request without inputs is a 400; `outputs` may be empty (all outputs)
    ("/v2/models/{name}/infer", {"inputs": []}, "inputs", 400),
    ("/v2/models/{name}/versions/{version}/infer", {"inputs": []}, "inputs", 400),
    ("/v2/models/{name}/infer", {"inputs": [V2_TEXT], "outputs": []}, "outputs", 200),
    (
        "/v2/models/{name}/versions/{version}/infer",
        {"inputs": [V2_TEXT], "outputs": []},
        "outputs",
        200,
    ),
]


@pytest.mark.parametrize(("path", "body", "field", "status"), EMPTY_LISTS)
def test_an_empty_list_is_refused_exactly_where_the_schema_says(
    url: str, path: str, body: dict, field: str, status: int
) -> None:
    spec = requests.get(f"{url}/openapi.json", timeout=TIMEOUT).json()
    arrays = _array_members(_body_property(spec, path, field), spec)
    assert arrays, f"{path} {field} is not a list in the schema"
    refused_by_schema = all(a.get("minItems", 0) >= 1 for a in arrays)
    sent = url + path.format(name="minilm", version="1")
    response = requests.post(sent, json=body, timeout=TIMEOUT)
    assert response.status_code == status, response.text
    assert refused_by_schema == (status != 200)
    if status != 200:
        assert f"{field}: no inputs given" in response.text, response.text


def test_empty_weaviate_lists_get_empty_answers(url: str) -> None:
    vectorize = requests.post(f"{url}/vectorize", json={"texts": [], "images": []}, timeout=30)
    assert vectorize.json() == {"textVectors": [], "imageVectors": []}
    vectors = requests.post(
        f"{url}/vectors", json={"texts": [], "config": {"dimensions": 8}}, timeout=TIMEOUT
    )
    assert vectors.json() == {"vectors": [], "dims": 8}
    too_wide = requests.post(
        f"{url}/vectors", json={"texts": [], "config": {"dimensions": 9999}}, timeout=TIMEOUT
    )
    assert too_wide.status_code == 500 and "dimensions must be between 1 and" in too_wide.text


def test_every_list_in_a_request_body_says_whether_it_may_be_empty(url: str) -> None:
    spec = requests.get(f"{url}/openapi.json", timeout=TIMEOUT).json()
    checked = {(path, field) for path, _, field, _ in EMPTY_LISTS}
    for path, item in spec["paths"].items():
        post = item.get("post", {})
        content = post.get("requestBody", {}).get("content", {})
        if "application/json" not in content:
            continue
        body = _resolve(content["application/json"]["schema"], spec)
        for field, schema in body.get("properties", {}).items():
            arrays = _array_members(schema, spec)
            if not arrays or (path, field) in checked:
                continue
            # A list not in the table above: it must be one Weaviate accepts empty.
            assert path in ("/vectorize",), (path, field)
            assert all("minItems" not in a for a in arrays), (path, field)


# ------------------------------------------------------------ integers are integers


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/embeddings", {"input": "a", "model": "minilm", "dimensions": True}, 422),
        ("/embed", {"inputs": "a", "dimensions": True}, 422),
        ("/api/embed/texts", {"texts": ["a"], "dimensions": True}, 422),
        ("/api/embed", {"modality": "text", "inputs": ["a"], "dimensions": False}, 422),
        ("/vectors", {"text": "a", "config": {"dimensions": True}}, 500),  # Weaviate's 422
        ("/v1/embeddings", {"input": "a", "model": "minilm", "dimensions": 8.0}, 422),
        ("/v1/embeddings", {"input": "a", "model": "minilm", "dimensions": "8"}, 422),
    ],
)
def test_dimensions_must_be_a_json_integer(url: str, path: str, body: dict, status: int) -> None:
    response = requests.post(url + path, json=body, timeout=TIMEOUT)
    assert response.status_code == status, response.text
    assert "dimensions" in response.text and "valid integer" in response.text


def test_integer_dimensions_still_work(url: str) -> None:
    body = {"input": "a", "model": "minilm", "dimensions": 8}
    response = requests.post(f"{url}/v1/embeddings", json=body, timeout=TIMEOUT)
    assert response.status_code == 200
    assert len(response.json()["data"][0]["embedding"]) == 8


# ------------------------------------------------------------------------ messages


def test_an_empty_upload_is_called_empty(url: str) -> None:
    files = [("files", ("empty.png", b"", "image/png")), ("files", ("cat.png", b"", "image/png"))]
    body = requests.post(f"{url}/api/embed/images/upload", files=files, timeout=TIMEOUT).json()
    assert body["embeddings"] == [None, None]
    reasons = [e["reason"] for e in body["errors"]]
    assert reasons[0] == "files[0] 'empty.png': the input is empty (0 bytes)"
    assert all("not an image" not in r for r in reasons)


@pytest.mark.parametrize("empty", ["", "   ", "data:image/png;base64,"])
def test_an_empty_openai_input_is_called_empty(url: str, empty: str) -> None:
    body = {"input": [png_b64(1), empty], "model": "clip", "modality": "image"}
    response = requests.post(f"{url}/v1/embeddings", json=body, timeout=TIMEOUT)
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert message.startswith("input[1]: the input is empty"), message


def test_a_decompression_bomb_gives_its_size_and_the_limit(url: str) -> None:
    # Past Pillow's own refusal (2 x 89,478,485 pixels): the header check names the size
    # and the server's limit, as a merely large image gets.
    bomb = base64.b64encode(_png_header(20_000, 10_000)).decode()
    body = {"input": [bomb], "model": "clip", "modality": "image"}
    response = requests.post(f"{url}/v1/embeddings", json=body, timeout=TIMEOUT)
    assert response.status_code == 422
    assert response.json()["error"]["message"] == (
        "input[0]: too large: 20000x10000 = 200,000,000 pixels is over the limit of "
        "50,000,000 pixels"
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/no-such-route"), ("POST", "/v1/embeddings/extra"), ("GET", "/v1/no-such-route")],
)
def test_an_unknown_route_is_not_found_not_a_missing_model(
    url: str, method: str, path: str
) -> None:
    response = requests.request(method, url + path, json={}, timeout=30)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_an_unknown_model_is_still_model_not_found(url: str) -> None:
    body = {"input": ["a cat"], "model": "no-such-model"}
    response = requests.post(url + "/v1/embeddings", json=body, timeout=30)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/decode", {"ids": [101, 102], "skip_special_tokens": 1}),
        ("/embed", {"inputs": "a", "normalize": 1}),
        ("/embed", {"inputs": "a", "truncate": "yes"}),
        ("/api/embed/texts", {"texts": ["a"], "normalize": "true"}),
    ],
)
def test_booleans_must_be_json_booleans(url: str, path: str, body: dict) -> None:
    response = requests.post(url + path, json=body, timeout=TIMEOUT)
    assert response.status_code == 422, response.text
    assert "valid boolean" in response.text
