"""Each limit of the server, answered in the shape of the contract that was called."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests

from handspring.server.app import create_app
from handspring.server.config import ModelSpec, ServerConfig
from tests.server.conftest import ServerFactory
from tests.server.images import png_b64
from tests.server.metrics_text import metric_value
from tests.support.gates import EngineGate, wait_until
from tests.support.live_server import running

LONG = "word " * 600


def _post(url: str, path: str, **kwargs: object) -> requests.Response:
    return requests.post(url + path, timeout=30, **kwargs)  # type: ignore[arg-type]


def test_body_size_limit_with_and_without_content_length(serve: ServerFactory) -> None:
    with serve(max_body_bytes=1000) as url:
        big = {"input": ["x" * 2000], "model": "minilm"}
        declared = _post(url, "/v1/embeddings", json=big)
        assert declared.status_code == 413
        assert "1,000 bytes" in declared.json()["error"]["message"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"inputs": ["'
            for _ in range(20):
                yield b"y" * 100
            yield b'"]}'

        streamed = _post(url, "/embed", data=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        assert streamed.json()["error_type"] == "Validation"
        weaviate = _post(url, "/vectorize", json={"texts": ["x" * 2000]})
        assert weaviate.status_code == 413 and set(weaviate.json()) == {"error"}
        photo = _post(url, "/v1/embed", data={"query": "x" * 2000})
        assert photo.status_code == 413 and set(photo.json()) == {"message"}
        assert _post(url, "/embed", json={"inputs": "small"}).status_code == 200


def test_items_per_request(serve: ServerFactory) -> None:
    with serve(max_items=3) as url:
        openai = _post(url, "/v1/embeddings", json={"input": ["a"] * 4, "model": "minilm"})
        assert openai.status_code == 413
        assert "4 inputs is over the limit of 3" in openai.json()["error"]["message"]
        tei = _post(url, "/embed", json={"inputs": ["a"] * 4})
        assert tei.status_code == 413 and tei.json()["error_type"] == "Validation"
        assert _post(url, "/embed", json={"inputs": ["a"] * 3}).status_code == 200
        empty = _post(url, "/v1/embeddings", json={"input": [], "model": "minilm"})
        assert empty.status_code == 422 and "no inputs" in empty.json()["error"]["message"]


def test_text_length_truncates_or_refuses_as_configured(serve: ServerFactory) -> None:
    body = {"input": ["short", LONG], "model": "minilm"}
    with serve() as url:
        assert _post(url, "/v1/embeddings", json=body).status_code == 200
        # Long enough to be tokenized off the event loop; cut to the model's 256 tokens.
        huge = _post(url, "/v1/embeddings", json={"input": ["x " * 15000], "model": "minilm"})
        assert huge.json()["usage"]["prompt_tokens"] == 256
    with serve(truncate=False, max_text_chars=5000) as url:
        refused = _post(url, "/v1/embeddings", json=body)
        assert refused.status_code == 422
        assert refused.json()["error"]["message"].startswith("input[1]: longer than the 256")
        too_many_chars = _post(
            url, "/v1/embeddings", json={"input": ["x" * 5001], "model": "minilm"}
        )
        assert too_many_chars.status_code == 422
        assert "5,001 characters is over the limit of 5,000" in too_many_chars.text


def test_image_pixel_limit_format_and_corrupt_images(serve: ServerFactory) -> None:
    def image_request(url: str, image: str) -> requests.Response:
        body = {"input": [png_b64(0), image], "model": "clip", "modality": "image"}
        return _post(url, "/v1/embeddings", json=body)

    with serve(max_pixels=1000, image_formats=("PNG",)) as url:
        big = image_request(url, png_b64(1, (40, 56)))
        assert big.status_code == 422
        assert big.json()["error"]["message"] == (
            "input[0]: too large: 56x40 = 2,240 pixels is over the limit of 1,000 pixels"
        )
    with serve(image_formats=("PNG",)) as url:
        jpeg = image_request(url, png_b64(1, fmt="JPEG"))
        assert jpeg.status_code == 422
        assert jpeg.json()["error"]["message"] == (
            "input[1]: JPEG images are not accepted (accepted: PNG)"
        )
        # A broken stream: the decoder's own words stay out of the answer.
        broken = bytearray(__import__("base64").b64decode(png_b64(2)))
        broken[60:400] = b"\0" * 340
        corrupt = image_request(url, __import__("base64").b64encode(bytes(broken)).decode())
        assert corrupt.status_code == 422
        message = corrupt.json()["error"]["message"]
        assert message.startswith("input[1]: ") and "(" not in message, message


def _queue_depth(url: str) -> float:
    return metric_value(url, "handspring_queue_depth", model="minilm", modality="text")


def _wait_ready(url: str) -> None:
    wait_until(
        lambda: requests.get(f"{url}/.well-known/ready", timeout=30).status_code == 204,
        "the server is ready",
    )


def test_full_queue_is_429_at_once(models: tuple[ModelSpec, ...]) -> None:
    app = create_app(ServerConfig(models=models, max_queue=3))
    gate = EngineGate.install(app)  # the engine is busy until the test says otherwise
    with running(app) as url, gate:
        answers: list[requests.Response] = []

        def send(body: dict) -> threading.Thread:
            thread = threading.Thread(
                target=lambda: answers.append(_post(url, "/embed", json=body))
            )
            thread.start()
            return thread

        busy = send({"inputs": ["a"]})
        gate.wait_for_runs(1)  # it runs: no longer queued
        queued = send({"inputs": ["a", "b"]})  # waits behind it: 2 of 3 places taken
        wait_until(lambda: _queue_depth(url) == 2, "2 items queued")
        refused = _post(url, "/embed", json={"inputs": ["c", "d"]})
        assert refused.status_code == 429
        assert refused.json()["error_type"] == "Overloaded"
        openai = _post(url, "/v1/embeddings", json={"input": ["c", "d"], "model": "minilm"})
        assert openai.status_code == 429 and openai.json()["error"]["type"] == "rate_limit_error"
        assert not answers  # the 429s came while the others were in flight
        gate.open()
        busy.join()
        queued.join()
    assert [a.status_code for a in answers] == [200, 200]


def test_request_timeout_in_each_contract_shape(models: tuple[ModelSpec, ...]) -> None:
    # Loaded first, so each request's time goes to waiting for the held engine.
    app = create_app(ServerConfig(models=models, request_timeout_s=0.3, preload=True))
    gate = EngineGate.install(app)
    with running(app) as url, gate:
        _wait_ready(url)
        tei = _post(url, "/embed", json={"inputs": ["a"]})  # held: it outlasts the timeout
        assert tei.status_code == 504 and set(tei.json()) == {"error", "error_type"}
        # The abandoned run still holds the engine: these wait behind it and time out.
        openai = _post(url, "/v1/embeddings", json={"input": "a", "model": "minilm"})
        assert openai.status_code == 504
        assert openai.json()["error"]["type"] == "timeout_error"
        photo = _post(url, "/v1/embed", data={"query": "a"})
        assert photo.status_code == 504 and "0.3 s" in photo.json()["message"]


@pytest.mark.parametrize(
    "image, reason",
    [
        ("/etc/passwd", "not valid base64"),
        ("../../etc/passwd", "not valid base64"),
        ("file:///etc/passwd", "only http and https URLs"),
        ("http://example.com/cat.jpg", "--fetch-urls"),
    ],
)
def test_no_local_paths_and_no_urls_unless_enabled(url: str, image: str, reason: str) -> None:
    body = {"input": [image], "model": "clip", "modality": "image"}
    response = _post(url, "/v1/embeddings", json=body)
    assert response.status_code == 422 and reason in response.json()["error"]["message"]


def test_enabled_urls_never_reach_loopback(serve: ServerFactory) -> None:
    with serve(fetch_urls=True) as url:
        own = f"{url}/metrics"  # the server's own loopback address
        body = {"input": [own], "model": "clip", "modality": "image"}
        response = _post(url, "/v1/embeddings", json=body)
        assert response.status_code == 422
        message = response.json()["error"]["message"]
        assert message.startswith("input[0]: ") and "refused" in message and "127.0.0.1" in message


def test_api_key(serve: ServerFactory) -> None:
    with serve(api_keys=("s3cret",)) as url:
        missing = _post(url, "/v1/embeddings", json={"input": "a", "model": "minilm"})
        assert missing.status_code == 401
        assert missing.json()["error"]["type"] == "authentication_error"
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = _post(url, "/embed", json={"inputs": "a"}, headers={"Authorization": "Bearer x"})
        assert wrong.status_code == 401 and set(wrong.json()) == {"error", "error_type"}
        good = _post(
            url, "/embed", json={"inputs": "a"}, headers={"Authorization": "Bearer s3cret"}
        )
        assert good.status_code == 200
        for path in ("/.well-known/live", "/.well-known/ready", "/health", "/_health", "/metrics"):
            assert requests.get(url + path, timeout=10).status_code in (200, 204), path


def test_several_keys_and_each_contracts_401(serve: ServerFactory) -> None:
    with serve(api_keys=("first-key", "second-key")) as url:
        for key in ("first-key", "second-key"):
            good = _post(
                url, "/embed", json={"inputs": "a"}, headers={"Authorization": f"Bearer {key}"}
            )
            assert good.status_code == 200, key
        wrong = {"Authorization": "Bearer first-key-not"}
        answers = {
            "/v1/embeddings": _post(url, "/v1/embeddings", json={"input": "a"}, headers=wrong),
            "/embed": _post(url, "/embed", json={"inputs": "a"}, headers=wrong),
            "/vectorize": _post(url, "/vectorize", json={"texts": ["a"]}, headers=wrong),
            "/vectors": _post(url, "/vectors", json={"text": "a"}, headers=wrong),
            "/v1/embed": _post(url, "/v1/embed", data={"query": "a"}, headers=wrong),
        }
        assert {path: r.status_code for path, r in answers.items()} == dict.fromkeys(answers, 401)
        assert answers["/v1/embeddings"].json()["error"]["type"] == "authentication_error"
        assert answers["/embed"].json()["error_type"] == "Unauthorized"
        # Weaviate's containers answer exactly this, and its auth suite checks it.
        assert answers["/vectorize"].json() == {"error": "Unauthorized"}
        assert answers["/vectors"].json() == {"error": "Unauthorized"}
        assert "API key" in answers["/v1/embed"].json()["message"]
