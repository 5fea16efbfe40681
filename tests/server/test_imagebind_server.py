"""ImageBind served beside a CLIP model: sounds, depth, thermal and IMU arrays (and the
image and CSV files multi2vec-bind sends for them) through the OpenAI, native and Weaviate
contracts, compared with the library's own vectors, and the audio limits in each
contract's error shape."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

import handspring
from handspring.embedder import Model
from handspring.server.command import config_from_options
from handspring.server.command import serve as serve_command
from handspring.server.config import ModelSpec
from tests.server.conftest import ServerFactory
from tests.server.images import png_b64, png_bytes
from tests.server.metrics_text import metric_value
from tests.support.images import photo_array
from tests.support.sounds import npy_bytes, random_arrays, wav_bytes

SOUNDS = [wav_bytes(3.0, seed=0), wav_bytes(1.5, seed=1)]
ARRAYS = random_arrays(seed=7)
NOT_AUDIO = b"RIFF but not a wave file at all"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _post(url: str, path: str, **kwargs: object) -> requests.Response:
    return requests.post(url + path, timeout=60, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def bind_spec(tiny_imagebind: Path) -> ModelSpec:
    return ModelSpec("bind", str(tiny_imagebind), "fp32")


@pytest.fixture(scope="module")
def bind(tiny_imagebind: Path) -> Model:
    return handspring.load(tiny_imagebind, precision="fp32")


@pytest.fixture(scope="module")
def clip(tiny_hf: Path) -> Model:
    return handspring.load(tiny_hf, precision="fp32")


@pytest.fixture(scope="module")
def url(serve: ServerFactory, bind_spec: ModelSpec, models: tuple[ModelSpec, ...]) -> Iterator[str]:
    """ImageBind listed first, and texts configured to go to the CLIP: requests naming no
    model still send images to the CLIP and sounds to the only model that hears."""
    clip_spec = models[0]
    with serve(models=(bind_spec, clip_spec), default_text_model="clip") as base:
        yield base


def _openai_vectors(response: requests.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.float32([row["embedding"] for row in response.json()["data"]])


# ------------------------------------------------------------------------------ OpenAI


def test_openai_audio_as_base64_and_data_url(url: str, bind: Model) -> None:
    inputs = [_b64(SOUNDS[0]), "data:audio/wav;base64," + _b64(SOUNDS[1])]
    response = _post(url, "/v1/embeddings", json={"input": inputs, "modality": "audio"})
    assert response.json()["model"] == "bind"  # named no model: the one that embeds audio
    expected = bind.embed_audio(SOUNDS).embeddings
    np.testing.assert_allclose(_openai_vectors(response), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(expected, axis=1), 1.0, atol=1e-6)


def test_openai_depth_from_npy(url: str, bind: Model) -> None:
    body = {"input": [_b64(npy_bytes(ARRAYS["depth"]))], "model": "bind", "modality": "depth"}
    got = _openai_vectors(_post(url, "/v1/embeddings", json=body))
    expected = bind.embed("depth", [ARRAYS["depth"]]).embeddings
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_openai_refuses_a_modality_the_model_lacks(url: str) -> None:
    body = {"input": [_b64(SOUNDS[0])], "model": "clip", "modality": "audio"}
    response = _post(url, "/v1/embeddings", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["message"] == "model 'clip' does not embed audio (it embeds: image, text)"
    assert error["type"] == "invalid_request_error" and error["param"] == "model"
    nobody = _post(url, "/v1/embeddings", json={"input": ["eA=="], "modality": "smell"})
    assert nobody.status_code == 422
    message = nobody.json()["error"]["message"]
    assert message.startswith("no model served here embeds smell (served: bind: image, text, ")


def test_images_and_texts_naming_no_model_keep_their_models(
    url: str, clip: Model, bind: Model
) -> None:
    image = _post(url, "/v1/embeddings", json={"input": [png_b64(1)], "modality": "image"})
    assert image.json()["model"] == "clip"
    expected = clip.embed_images([png_bytes(1)]).embeddings
    np.testing.assert_allclose(_openai_vectors(image), expected, rtol=0, atol=1e-6)
    text = _post(url, "/embed", json={"inputs": ["a dog"]})  # TEI: the configured text model
    np.testing.assert_allclose(text.json(), clip.embed_texts(["a dog"]), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------ native


def test_native_audio_keeps_good_rows_and_names_bad_ones(url: str, bind: Model) -> None:
    audio = [_b64(SOUNDS[0]), "not base64!", _b64(SOUNDS[1]), _b64(npy_bytes(ARRAYS["imu"]))]
    response = _post(url, "/api/embed/audio", json={"audio": audio})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "bind" and body["dim"] == bind.dim
    rows = body["embeddings"]
    assert rows[1] is None and rows[3] is None
    expected = bind.embed_audio(SOUNDS).embeddings
    np.testing.assert_allclose(np.float32([rows[0], rows[2]]), expected, rtol=0, atol=1e-6)
    assert body["errors"] == [
        {
            "index": 1,
            "item": "audio[1]",
            "reason": "audio[1]: not valid base64 (and not a data URL or an http(s) URL)",
        },
        {"index": 3, "item": "audio[3]", "reason": "audio[3]: not a readable audio file"},
    ]


@pytest.mark.parametrize("modality", ["imu", "thermal"])
def test_native_generic_route_with_arrays(url: str, bind: Model, modality: str) -> None:
    inputs = [_b64(npy_bytes(ARRAYS[modality])), _b64(npy_bytes(ARRAYS["depth"][:, :10]))]
    body = _post(url, "/api/embed", json={"modality": modality, "inputs": inputs}).json()
    assert body["model"] == "bind"
    expected = bind.embed(modality, [ARRAYS[modality]]).embeddings
    np.testing.assert_allclose(np.float32(body["embeddings"][:1]), expected, rtol=0, atol=1e-6)
    [error] = body["errors"]
    assert error["index"] == 1
    shape = (6, 2000) if modality == "imu" else (1, 224, 224)
    assert error["reason"] == f"inputs[1]: shape (1, 10, 224), but {modality} input is {shape}"
    assert body["embeddings"][1] is None


def test_native_upload_of_sound_files(url: str, bind: Model) -> None:
    files = [
        ("files", ("dog.wav", SOUNDS[1], "audio/wav")),
        ("files", ("notes.txt", b"hello, not a sound", "text/plain")),
    ]
    response = _post(url, "/api/embed/images/upload", files=files, data={"modality": "audio"})
    body = response.json()
    assert body["model"] == "bind" and body["embeddings"][1] is None
    expected = bind.embed_audio([SOUNDS[1]]).embeddings
    np.testing.assert_allclose(np.float32(body["embeddings"][:1]), expected, rtol=0, atol=1e-6)
    [error] = body["errors"]
    assert error["item"] == "files[1] 'notes.txt'"
    assert error["reason"] == "files[1] 'notes.txt': not a readable audio file"


# ---------------------------------------------------------------------------- Weaviate


def test_weaviate_vectorize_in_the_multi2vec_bind_shape(url: str, bind: Model) -> None:
    depth2 = ARRAYS["depth"][:, ::-1].copy()
    body = {
        "texts": ["a dog", "a barking dog"],
        "images": [png_b64(2), png_b64(3)],
        "audio": [_b64(SOUNDS[1]), _b64(SOUNDS[0])],
        "depth": [_b64(npy_bytes(ARRAYS["depth"])), _b64(npy_bytes(depth2))],
        "thermal": [_b64(npy_bytes(ARRAYS["thermal"]))],
        "imu": [_b64(npy_bytes(ARRAYS["imu"]))],
    }
    response = _post(url, "/vectorize", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {
        "textVectors",
        "imageVectors",
        "audioVectors",
        "depthVectors",
        "thermalVectors",
        "imuVectors",
    }
    expected = {
        "textVectors": bind.embed("text", body["texts"], normalize=False),
        "imageVectors": bind.embed("image", [png_bytes(2), png_bytes(3)], normalize=False),
        "audioVectors": bind.embed("audio", [SOUNDS[1], SOUNDS[0]], normalize=False),
        "depthVectors": bind.embed("depth", [ARRAYS["depth"], depth2], normalize=False),
        "thermalVectors": bind.embed("thermal", [ARRAYS["thermal"]], normalize=False),
        "imuVectors": bind.embed("imu", [ARRAYS["imu"]], normalize=False),
    }
    for field, vectors in expected.items():  # the model's own vectors, in input order
        np.testing.assert_allclose(
            np.float32(answer[field]), vectors.embeddings, rtol=0, atol=1e-5, err_msg=field
        )
    video = _post(url, "/vectorize", json={"video": [_b64(SOUNDS[0])]})
    assert video.status_code == 500 and video.json() == {
        "error": "video: not supported by this server"
    }


def test_weaviate_images_alone_stay_with_the_clip(url: str, clip: Model) -> None:
    answer = _post(url, "/vectorize", json={"texts": ["a cat"], "images": [png_b64(4)]}).json()
    image = clip.embed("image", [png_bytes(4)], normalize=False).embeddings
    np.testing.assert_allclose(np.float32(answer["imageVectors"]), image, rtol=0, atol=1e-5)
    text = clip.embed("text", ["a cat"], normalize=False).embeddings
    np.testing.assert_allclose(np.float32(answer["textVectors"]), text, rtol=0, atol=1e-5)


def _gray_png(seed: int, size: tuple[int, int], *, bits: int = 8) -> bytes:
    gray = photo_array(*size, seed=seed).mean(axis=2)
    pixels = (gray * 2).astype(np.uint16) if bits == 16 else gray.astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _imu_csv(steps: int, seed: int) -> bytes:
    rows = np.random.default_rng(seed).normal(0, 2, (steps, 6))
    lines = ["gyro_x,gyro_y,gyro_z,accl_x,accl_y,accl_z"]
    lines += [",".join(repr(float(v)) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def test_weaviate_vectorize_with_multi2vec_bind_files(url: str, bind: Model) -> None:
    """What Weaviate's multi2vec-bind module sends: depth and thermal as base64 images
    (8- and 16-bit PNGs here), IMU as base64 CSV."""
    files = {
        "depth": [_gray_png(5, (300, 457)), _gray_png(6, (225, 331), bits=16)],
        "thermal": [_gray_png(7, (513, 97)), png_bytes(8, (240, 320), fmt="JPEG")],
        "imu": [_imu_csv(1500, seed=1), _imu_csv(3072, seed=2)],
    }
    body = {"texts": ["a depth map"]} | {m: [_b64(f) for f in fs] for m, fs in files.items()}
    response = _post(url, "/vectorize", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    for modality, items in files.items():
        expected = bind.embed(modality, items, normalize=False)
        assert expected.errors == []
        np.testing.assert_allclose(
            np.float32(answer[f"{modality}Vectors"]),
            expected.embeddings,
            rtol=0,
            atol=1e-5,
            err_msg=modality,
        )
    bad_depth = {"depth": [body["depth"][0], _b64(b"hello, not an image")]}
    response = _post(url, "/vectorize", json=bad_depth)
    assert response.status_code == 500
    assert response.json() == {"error": "depth[1]: neither a .npy array nor an image file"}
    bad_imu = {"imu": [_b64(b"gyro_x,gyro_y\n1,2\n3,4\n")]}
    response = _post(url, "/vectorize", json=bad_imu)
    assert response.status_code == 500
    assert response.json() == {"error": "imu[0]: 2 columns, but an IMU CSV has 6"}


# ---------------------------------------------------------------------- listing, metrics


def test_models_are_listed_and_audio_batches_counted(url: str) -> None:
    before = metric_value(url, "handspring_embedded_items_total", model="bind", modality="audio")
    _post(url, "/api/embed/audio", json={"audio": [_b64(SOUNDS[0])]}).raise_for_status()
    after = metric_value(url, "handspring_embedded_items_total", model="bind", modality="audio")
    assert after == before + 1
    batches = metric_value(url, "handspring_batch_size_count", model="bind", modality="audio")
    assert batches >= 1
    openai = requests.get(f"{url}/v1/models", timeout=10).json()
    assert [m["id"] for m in openai["data"]] == ["bind", "clip"]
    native = requests.get(f"{url}/api/models", timeout=10).json()["models"]
    [entry] = [m for m in native if m["name"] == "bind"]
    assert entry["loaded"] and entry["dim"] == 40
    assert entry["modalities"] == ["image", "text", "audio", "depth", "thermal", "imu"]


# ------------------------------------------------------------------------------ limits

# 2.0 s of stereo float samples is 256 kB; 3.0 s of mono 16-bit PCM is 96 kB.
BIG = wav_bytes(2.0, seed=2, channels=2, subtype="FLOAT")
LONG = wav_bytes(3.0, seed=3)


@pytest.fixture(scope="module")
def limited_url(serve: ServerFactory, bind_spec: ModelSpec) -> Iterator[str]:
    with serve(models=(bind_spec,), max_audio_bytes=100_000, max_audio_seconds=2.5) as base:
        yield base


def test_audio_limits_in_the_openai_shape(limited_url: str) -> None:
    def request(sound: bytes) -> requests.Response:
        body = {"input": [_b64(SOUNDS[1]), _b64(sound)], "modality": "audio"}
        return _post(limited_url, "/v1/embeddings", json=body)

    big = request(BIG)
    assert big.status_code == 413
    assert big.json()["error"] == {
        "message": f"input[1]: {len(BIG):,} bytes of audio is over the limit of 100,000",
        "type": "invalid_request_error",
        "param": None,
        "code": "too_large",
    }
    long = request(LONG)
    assert long.status_code == 422
    assert long.json()["error"]["message"] == (
        "input[1]: too long: 3.0 s is over the limit of 2.5 s"
    )
    assert request(SOUNDS[1]).status_code == 200


def test_audio_limits_in_the_native_shape(limited_url: str) -> None:
    big = _post(limited_url, "/api/embed/audio", json={"audio": [_b64(SOUNDS[1]), _b64(BIG)]})
    assert big.status_code == 413
    assert big.json()["error"]["message"].startswith("audio[1]: 256,")
    # Too long is one bad item there: its row is null and the reason says why.
    long = _post(limited_url, "/api/embed/audio", json={"audio": [_b64(SOUNDS[1]), _b64(LONG)]})
    assert long.status_code == 200
    body = long.json()
    assert body["embeddings"][0] is not None and body["embeddings"][1] is None
    assert body["errors"] == [
        {
            "index": 1,
            "item": "audio[1]",
            "reason": "audio[1]: too long: 3.0 s is over the limit of 2.5 s",
        }
    ]


def test_audio_limits_in_the_weaviate_shape(limited_url: str) -> None:
    big = _post(limited_url, "/vectorize", json={"audio": [_b64(BIG)]})
    assert big.status_code == 413 and set(big.json()) == {"error"}
    assert big.json()["error"].startswith("audio[0]: 256,")
    long = _post(limited_url, "/vectorize", json={"audio": [_b64(LONG)]})
    assert long.status_code == 500
    assert long.json() == {"error": "audio[0]: too long: 3.0 s is over the limit of 2.5 s"}


def test_audio_limits_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDSPRING_MAX_AUDIO_SECONDS", "12.5")
    params = serve_command.make_context("serve", ["--max-audio-bytes", "5000"]).params
    config = config_from_options(params)
    assert (config.max_audio_seconds, config.max_audio_bytes) == (12.5, 5000)
