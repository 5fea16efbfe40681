"""The Open Inference Protocol over REST (`/v2/...`) on a real server: Triton's own HTTP
client (`tritonclient.http`, binary extension and JSON) and plain JSON; every route, bad
input of each kind as KServe's `{"error": str}`, keys and limits, and equality with the
native routes' vectors."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

import handspring
from handspring.server.config import ModelSpec
from tests.server.conftest import ServerFactory
from tests.server.images import png_b64, png_bytes

TEXTS = ["a cat on a mat", "ein Hund", "", "naïve café ☕"]
IMAGES = [png_b64(0), png_b64(1, (64, 48))]
KEY = "rest-test-key"


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url.removeprefix("http://"))
    yield c
    c.close()


def _get(url: str, path: str, **kwargs: object) -> requests.Response:
    return requests.get(url + path, timeout=60, **kwargs)  # type: ignore[arg-type]


def _infer(url: str, model: str, body: object, **kwargs: object) -> requests.Response:
    sent = {"data": body} if isinstance(body, bytes) else {"json": body}
    return requests.post(f"{url}/v2/models/{model}/infer", timeout=60, **sent, **kwargs)  # type: ignore[arg-type]


def _native(url: str, path: str, body: dict) -> np.ndarray:
    answer = requests.post(f"{url}{path}", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    return np.asarray(answer.json()["embeddings"], dtype=np.float32)


def _texts(values: list[str], *, shape: list[int] | None = None) -> dict:
    return {"name": "text", "datatype": "BYTES", "shape": shape or [len(values)], "data": values}


# ------------------------------------------------------------------ metadata


def test_server_routes(url: str, client: triton.InferenceServerClient) -> None:
    assert _get(url, "/v2").json() == {
        "name": "handspring",
        "version": handspring.__version__,
        "extensions": [],
    }
    assert _get(url, "/v2/health/live").json() == {"live": True}
    assert _get(url, "/v2/health/ready").json() == {"ready": True}
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["name"] == "handspring"


def test_model_metadata_and_readiness(url: str, client: triton.InferenceServerClient) -> None:
    clip = _get(url, "/v2/models/clip").json()
    assert clip == {
        "name": "clip",
        "versions": ["1"],
        "platform": "handspring_onnxruntime",
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [-1]},
            {"name": "text", "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, 40]}],
    }
    assert _get(url, "/v2/models/clip/versions/1").json() == clip
    assert client.get_model_metadata("minilm")["inputs"] == [
        {"name": "text", "datatype": "BYTES", "shape": [-1]}
    ]
    assert _get(url, "/v2/models/clip/ready").json() == {"name": "clip", "ready": True}
    assert _get(url, "/v2/models/minilm/versions/1/ready").status_code == 200
    assert client.is_model_ready("clip")
    for path in ("/v2/models/nope", "/v2/models/nope/ready", "/v2/models/clip/versions/2"):
        answer = _get(url, path)
        assert answer.status_code == 404 and set(answer.json()) == {"error"}, answer.text
        assert "nope" in answer.json()["error"] or "version '2'" in answer.json()["error"]


# ----------------------------------------------------------------- inference


def test_json_texts_and_images_equal_the_native_vectors(url: str) -> None:
    body = {"id": "r1", "inputs": [_texts(TEXTS)]}
    answer = _infer(url, "clip", body).json()
    assert (answer["model_name"], answer["model_version"], answer["id"]) == ("clip", "1", "r1")
    [output] = answer["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("embedding", "FP32", [4, 40])
    got = np.asarray(output["data"], dtype=np.float32).reshape(4, 40)
    want = _native(url, "/api/embed/texts", {"texts": TEXTS, "model": "clip"})
    text_diff = float(np.abs(got - want).max())
    # Images as base64 and as a data URL, nested [N, 1] as KServe allows.
    images = {
        "name": "image",
        "datatype": "BYTES",
        "shape": [2, 1],
        "data": [[IMAGES[0]], ["data:image/png;base64," + IMAGES[1]]],
    }
    answer = _infer(url, "clip", {"inputs": [images]}).json()
    got = np.asarray(answer["outputs"][0]["data"], dtype=np.float32).reshape(2, 40)
    want = _native(url, "/api/embed/images", {"images": IMAGES, "model": "clip"})
    image_diff = float(np.abs(got - want).max())
    print(f"REST v2 vs native max abs: texts {text_diff:.1e}, images {image_diff:.1e}")
    assert text_diff == 0 and image_diff == 0


def test_parameters_and_several_inputs(url: str) -> None:
    body = {
        "parameters": {"normalize": False, "dimensions": 8},
        "inputs": [
            _texts(TEXTS[:1]),
            {"name": "image", "datatype": "BYTES", "shape": [1], "data": IMAGES[:1]},
        ],
        "outputs": [{"name": "embedding"}],
    }
    output = _infer(url, "clip", body).json()["outputs"][0]
    assert output["shape"] == [2, 8]
    options = {"model": "clip", "normalize": False, "dimensions": 8}
    want = np.concatenate([
        _native(url, "/api/embed/texts", {"texts": TEXTS[:1], **options}),
        _native(url, "/api/embed/images", {"images": IMAGES[:1], **options}),
    ])  # fmt: skip
    assert np.array_equal(np.asarray(output["data"], dtype=np.float32).reshape(2, 8), want)


def _bytes_input(name: str, values: list[bytes], binary: bool) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array(values, dtype=object), binary_data=binary)
    return tensor


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_triton_client(url: str, client: triton.InferenceServerClient, binary: bool) -> None:
    texts = [t.encode() for t in TEXTS]
    outputs = [triton.InferRequestedOutput("embedding", binary_data=binary)]
    got = client.infer("clip", [_bytes_input("text", texts, binary)], outputs=outputs)
    want = _native(url, "/api/embed/texts", {"texts": TEXTS, "model": "clip"})
    assert np.array_equal(got.as_numpy("embedding"), want)
    if binary:  # raw image bytes, not base64, through the binary extension
        images = [png_bytes(0), png_bytes(1, (64, 48))]
        got = client.infer("clip", [_bytes_input("image", images, True)])  # binary out by default
        want = _native(url, "/api/embed/images", {"images": IMAGES, "model": "clip"})
        assert np.array_equal(got.as_numpy("embedding"), want)
    wrong = triton.InferInput("text", [1], "FP32")
    wrong.set_data_from_numpy(np.zeros(1, dtype=np.float32), binary_data=binary)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("clip", [wrong])
    assert caught.value.status() == "400" and "datatype 'FP32'" in caught.value.message()


def _binary_body(header: dict, tail: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + tail, {"Inference-Header-Content-Length": str(len(head))}


BAD_BODIES: dict[str, tuple[object, str]] = {
    "wrong datatype": (
        {"inputs": [{"name": "text", "datatype": "INT32", "shape": [1], "data": [1]}]},
        "datatype 'INT32'",
    ),
    "wrong shape": ({"inputs": [_texts(["a", "b"], shape=[2, 2])]}, "shape [2, 2]"),
    "count not the shape's": ({"inputs": [_texts(["a", "b"], shape=[3])]}, "holds 2 elements"),
    "empty batch": ({"inputs": [_texts([], shape=[0])]}, "empty"),
    "no inputs": ({"inputs": []}, "inputs: no inputs given"),
    "not a string": (
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", 5]}]},
        "element 1 is int",
    ),
    "unknown input": (
        {"inputs": [{"name": "audio", "datatype": "BYTES", "shape": [1], "data": ["AAAA"]}]},
        "inputs: image, text",
    ),
    "unknown output": (
        {"inputs": [_texts(["a"])], "outputs": [{"name": "logits"}]},
        "output 'logits'",
    ),
    "not base64": (
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]},
        "image[0]: not valid base64",
    ),
    "not an image": (
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "data": [base64.b64encode(b"GIF89a junk").decode()],
                }
            ]
        },
        "image[0]",
    ),
    "missing field": ({"inputs": [{"name": "text", "data": ["a"]}]}, "shape"),
    "bad parameter": (
        {"parameters": {"normalize": "yes"}, "inputs": [_texts(["a"])]},
        "'normalize'",
    ),
    "not JSON": (b"{not json", "not JSON"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_requests_are_400_with_kserve_errors(url: str, case: str) -> None:
    body, named = BAD_BODIES[case]
    answer = _infer(url, "clip", body)
    assert answer.status_code == 400, (case, answer.text)
    assert set(answer.json()) == {"error"} and named in answer.json()["error"], answer.text
    assert _get(url, "/v2/health/live").status_code == 200  # nothing crashed


def test_bad_binary_bodies(url: str) -> None:
    header = {
        "inputs": [
            {
                "name": "text",
                "datatype": "BYTES",
                "shape": [1],
                "parameters": {"binary_data_size": 9},
            }
        ]
    }
    element = (3).to_bytes(4, "little") + b"abc"
    cases = {
        "remain after the JSON": _binary_body(header, element),  # 7 bytes for 9
        "belong to no input": _binary_body(
            {"inputs": [{**header["inputs"][0], "parameters": {"binary_data_size": 7}}]},
            element + b"xx",
        ),
        "says 3 bytes": _binary_body(
            {"inputs": [{**header["inputs"][0], "parameters": {"binary_data_size": 6}}]},
            element[:-1],
        ),
        "not a length": (b"{}", {"Inference-Header-Content-Length": "99"}),
    }
    for named, (body, headers) in cases.items():
        answer = _infer(url, "clip", body, headers=headers)
        assert answer.status_code == 400 and named in answer.json()["error"], (named, answer.text)


def test_unknown_model_is_404(url: str) -> None:
    answer = _infer(url, "nope", {"inputs": [_texts(["a"])]})
    assert answer.status_code == 404 and "nope" in answer.json()["error"]
    answer = requests.post(
        f"{url}/v2/models/clip/versions/3/infer", json={"inputs": []}, timeout=60
    )
    assert answer.status_code == 404 and "version '3'" in answer.json()["error"]


def test_keys_and_limits(serve: ServerFactory, models: tuple[ModelSpec, ...]) -> None:
    with serve(models=models[:1], api_keys=(KEY,), max_items=3, max_body_bytes=4096) as base:
        keyed = {"Authorization": f"Bearer {KEY}"}
        body = {"inputs": [_texts(["a"])]}
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            assert _infer(base, "clip", body, headers=headers).status_code == 401
            assert _get(base, "/v2/models/clip", headers=headers).status_code == 401
        assert _infer(base, "clip", body, headers=keyed).status_code == 200
        too_many = _infer(base, "clip", {"inputs": [_texts(["a"] * 4)]}, headers=keyed)
        assert too_many.status_code == 413 and "limit of 3" in too_many.json()["error"]
        too_big = _infer(base, "clip", {"inputs": [_texts(["x" * 5000])]}, headers=keyed)
        assert too_big.status_code == 413
