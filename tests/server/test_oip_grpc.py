"""gRPC on a real server (`--grpc-port`): the Open Inference Protocol through Triton's own
client (`tritonclient.grpc`) and the generated stubs, and the seed project's
`Embeddings.GetEmbeddings`; every method, bad input of each kind, keys, limits, load
shedding shared with HTTP, metrics, and a SIGTERM drain of `handspring serve`."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as triton
from fastapi import FastAPI
from tritonclient.utils import InferenceServerException

import handspring
from handspring.embedder import Model
from handspring.server.app import create_app
from handspring.server.config import ModelSpec, ServerConfig
from handspring.server.grpc.generated import embeddings_pb2_grpc, tensor_pb2
from handspring.server.grpc.generated import grpc_predict_v2_pb2 as pb
from handspring.server.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.server.images import png_b64, png_bytes
from tests.server.metrics_text import metric_value
from tests.server.test_shutdown import held_server
from tests.support.gates import EngineGate
from tests.support.live_server import free_port, running
from tests.support.sounds import wav_bytes

TEXTS = ["a cat on a mat", "ein Hund", "", "naïve café ☕"]
IMAGES = [png_bytes(0), png_bytes(1, (64, 48))]
INFER = "/inference.GRPCInferenceService/ModelInfer"
KEY = "grpc-test-key"


@dataclass
class Served:
    url: str  # HTTP
    target: str  # gRPC host:port
    app: FastAPI


@contextmanager
def serving(models: tuple[ModelSpec, ...], **settings: object) -> Iterator[Served]:
    app = create_app(ServerConfig(models=models, grpc_port=0, **settings))  # type: ignore[arg-type]
    with running(app) as url:
        yield Served(url, f"127.0.0.1:{app.state.grpc_port}", app)


@pytest.fixture(scope="module")
def served(models: tuple[ModelSpec, ...]) -> Iterator[Served]:
    with serving(models) as server:
        yield server


@pytest.fixture(scope="module")
def bind_served(tiny_imagebind: Path) -> Iterator[Served]:
    """A tiny ImageBind, whose checkpoint the reference (torch) writes."""
    with serving((ModelSpec("bind", str(tiny_imagebind), "fp32"),)) as server:
        yield server


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(served.target) as c:
        yield c


@pytest.fixture(scope="module")
def stub(served: Served) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(served.target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def seed_stub(served: Served) -> Iterator[embeddings_pb2_grpc.EmbeddingsStub]:
    with grpc.insecure_channel(served.target) as channel:
        yield embeddings_pb2_grpc.EmbeddingsStub(channel)


def _bytes_input(
    name: str, values: list[bytes], shape: list[int] | None = None
) -> triton.InferInput:
    tensor = triton.InferInput(name, shape or [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array(values, dtype=object).reshape(shape or [len(values)]))
    return tensor


def _http_vectors(url: str, path: str, body: dict) -> np.ndarray:
    answer = requests.post(f"{url}{path}", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    return np.asarray(answer.json()["embeddings"], dtype=np.float32)


def _code(call: object) -> tuple[grpc.StatusCode, str]:
    """The status code and message a failing stub call raised."""
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code(), caught.value.details()


def _typed(
    name: str, values: list[bytes], shape: list[int], datatype: str = "BYTES"
) -> pb.ModelInferRequest.InferInputTensor:
    tensor = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    tensor.contents.bytes_contents.extend(values)
    return tensor


# ------------------------------------------------------------- health, metadata


def test_server_live_ready_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "handspring" and meta["version"] == handspring.__version__


def test_model_metadata_lists_what_each_model_embeds(client: triton.InferenceServerClient) -> None:
    clip = client.get_model_metadata("clip", as_json=True)
    assert clip["versions"] == ["1"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in clip["inputs"]] == [
        ("image", "BYTES", ["-1"]),
        ("text", "BYTES", ["-1"]),
    ]  # int64 shapes come as strings in protobuf's JSON
    assert clip["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": ["-1", "40"]}]
    minilm = client.get_model_metadata("minilm", as_json=True)
    assert [t["name"] for t in minilm["inputs"]] == ["text"]
    assert minilm["outputs"][0]["shape"] == ["-1", "384"]


def test_model_ready_and_unknown_models(
    client: triton.InferenceServerClient, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    assert client.is_model_ready("clip") and client.is_model_ready("minilm", "1")
    for call in (
        lambda: stub.ModelReady(pb.ModelReadyRequest(name="nope")),
        lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="nope")),
        lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="clip", version="2")),
        lambda: stub.ModelInfer(
            pb.ModelInferRequest(model_name="nope", inputs=[_typed("text", [b"x"], [1])])
        ),
    ):
        code, message = _code(call)
        assert code is grpc.StatusCode.NOT_FOUND, message
        assert "nope" in message or "version '2'" in message


# ------------------------------------------------------------------- inference


def test_texts_and_images_equal_the_http_vectors(
    served: Served, client: triton.InferenceServerClient
) -> None:
    texts = client.infer("clip", [_bytes_input("text", [t.encode() for t in TEXTS])])
    got = texts.as_numpy("embedding")
    want = _http_vectors(served.url, "/api/embed/texts", {"texts": TEXTS, "model": "clip"})
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 40)
    text_diff = float(np.abs(got - want).max())
    images = client.infer("clip", [_bytes_input("image", IMAGES, [2, 1])])  # [N, 1] too
    body = {"images": [png_b64(0), png_b64(1, (64, 48))], "model": "clip"}
    image_diff = float(np.abs(images.as_numpy("embedding") - _http_vectors(
        served.url, "/api/embed/images", body
    )).max())  # fmt: skip
    print(f"gRPC vs HTTP max abs: texts {text_diff:.1e}, images {image_diff:.1e}")
    assert text_diff == 0 and image_diff == 0


@pytest.mark.reference
def test_every_modality_a_model_has_is_an_input(bind_served: Served) -> None:
    with triton.InferenceServerClient(bind_served.target) as client:
        meta = client.get_model_metadata("bind", as_json=True)
        assert [t["name"] for t in meta["inputs"]] == [
            "image", "text", "audio", "depth", "thermal", "imu",
        ]  # fmt: skip
        sound = wav_bytes(1.5, seed=4)
        got = client.infer("bind", [_bytes_input("audio", [sound])]).as_numpy("embedding")
    body = {"audio": [base64.b64encode(sound).decode()], "model": "bind"}
    want = _http_vectors(bind_served.url, "/api/embed/audio", body)
    diff = float(np.abs(got - want).max())
    print(f"gRPC vs HTTP max abs: audio {diff:.1e}")
    assert diff == 0


def test_typed_contents_get_typed_outputs_in_input_order(
    served: Served, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    request = pb.ModelInferRequest(
        model_name="clip",
        id="req-7",
        inputs=[_typed("text", [TEXTS[0].encode()], [1, 1]), _typed("image", IMAGES[:1], [1])],
    )
    request.parameters["normalize"].bool_param = False
    request.parameters["dimensions"].int64_param = 8
    answer = stub.ModelInfer(request)
    assert (answer.model_name, answer.model_version, answer.id) == ("clip", "1", "req-7")
    assert not answer.raw_output_contents  # typed in, typed out (KServe's rule)
    [output] = answer.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("embedding", "FP32", [2, 8])
    got = np.asarray(output.contents.fp32_contents, dtype=np.float32).reshape(2, 8)
    options = {"model": "clip", "normalize": False, "dimensions": 8}
    text = _http_vectors(served.url, "/api/embed/texts", {"texts": TEXTS[:1], **options})
    image = _http_vectors(served.url, "/api/embed/images", {"images": [png_b64(0)], **options})
    assert np.array_equal(got, np.concatenate([text, image]))


def _raw_bytes(values: list[bytes]) -> bytes:
    return b"".join(len(v).to_bytes(4, "little") + v for v in values)


BAD_REQUESTS = {
    "wrong datatype": (
        pb.ModelInferRequest(
            model_name="clip",
            inputs=[pb.ModelInferRequest.InferInputTensor(name="text", datatype="FP32", shape=[1])],
            raw_input_contents=[np.float32(1).tobytes()],
        ),
        "datatype 'FP32'",
    ),
    "wrong shape": (
        pb.ModelInferRequest(model_name="clip", inputs=[_typed("text", [b"a", b"b"], [1, 2])]),
        "shape [1, 2]",
    ),
    "count not the shape's": (
        pb.ModelInferRequest(model_name="clip", inputs=[_typed("text", [b"a", b"b"], [3])]),
        "holds 2 elements",
    ),
    "empty batch": (
        pb.ModelInferRequest(model_name="clip", inputs=[_typed("text", [], [0])]),
        "empty",
    ),
    "no inputs": (pb.ModelInferRequest(model_name="clip"), "no inputs"),
    "unknown input": (
        pb.ModelInferRequest(model_name="clip", inputs=[_typed("audio", [b"RIFF"], [1])]),
        "inputs: image, text",
    ),
    "input twice": (
        pb.ModelInferRequest(
            model_name="clip", inputs=[_typed("text", [b"a"], [1]), _typed("text", [b"b"], [1])]
        ),
        "twice",
    ),
    "unknown output": (
        pb.ModelInferRequest(
            model_name="clip",
            inputs=[_typed("text", [b"a"], [1])],
            outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="logits")],
        ),
        "output 'logits'",
    ),
    "raw for some inputs": (
        pb.ModelInferRequest(
            model_name="clip",
            inputs=[
                pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[1]),
                pb.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=[1]),
            ],
            raw_input_contents=[_raw_bytes([b"a"])],
        ),
        "1 entries for 2 inputs",
    ),
    "raw cut short": (
        pb.ModelInferRequest(
            model_name="clip",
            inputs=[
                pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[1])
            ],
            raw_input_contents=[_raw_bytes([b"abc"])[:-1]],
        ),
        "says 3 bytes",
    ),
    "not UTF-8": (
        pb.ModelInferRequest(model_name="clip", inputs=[_typed("text", [b"ok", b"\xff\xfe"], [2])]),
        "text[1]: not valid UTF-8",
    ),
    "not an image": (
        pb.ModelInferRequest(model_name="clip", inputs=[_typed("image", [b"GIF89a junk"], [1])]),
        "image[0]",
    ),
    "bad parameter": (
        pb.ModelInferRequest(
            model_name="clip",
            inputs=[_typed("text", [b"a"], [1])],
            parameters={"dimensions": pb.InferParameter(string_param="eight")},
        ),
        "'dimensions'",
    ),
    "dimensions too wide": (
        pb.ModelInferRequest(
            model_name="clip",
            inputs=[_typed("text", [b"a"], [1])],
            parameters={"dimensions": pb.InferParameter(int64_param=41)},
        ),
        "dimensions",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_are_invalid_argument(
    case: str, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    request, named = BAD_REQUESTS[case]
    code, message = _code(lambda: stub.ModelInfer(request))
    assert code is grpc.StatusCode.INVALID_ARGUMENT, (case, message)
    assert named in message, message
    assert stub.ServerLive(pb.ServerLiveRequest()).live  # nothing crashed


def test_triton_client_sees_the_status(client: triton.InferenceServerClient) -> None:
    wrong = triton.InferInput("text", [2], "INT64")
    wrong.set_data_from_numpy(np.array([1, 2], dtype=np.int64))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("clip", [wrong])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "datatype 'INT64'" in caught.value.message()


# -------------------------------------------------------- the seed's service


@pytest.fixture(scope="module")
def clip_model(tiny_hf: Path) -> Model:
    return handspring.load(tiny_hf, precision="fp32")


def _pixels_request(
    pixels: np.ndarray, *, order: str = "<", one_element: bool = False
) -> tensor_pb2.TensorProto:
    values = pixels.astype(f"{order}f4").reshape(-1)
    content = (
        [values.tobytes()]
        if one_element
        else [values[i : i + 1].tobytes() for i in range(values.size)]
    )
    byte_order = tensor_pb2.LE if order == "<" else tensor_pb2.BE
    return tensor_pb2.TensorProto(
        content=content, shape=pixels.shape, dtype=tensor_pb2.F32, byte_order=byte_order
    )


def test_get_embeddings_equals_the_http_vectors(
    served: Served, seed_stub: embeddings_pb2_grpc.EmbeddingsStub, clip_model: Model
) -> None:
    tower = clip_model.towers["image"]
    pixels = np.stack([tower.prepare(data, f"image {i}", {}) for i, data in enumerate(IMAGES)])
    body = {"images": [png_b64(0), png_b64(1, (64, 48))], "model": "clip", "normalize": False}
    want = _http_vectors(served.url, "/api/embed/images", body)
    for order, one in (("<", False), (">", False), ("<", True)):
        answer = seed_stub.GetEmbeddings(
            _pixels_request(pixels, order=order, one_element=one), metadata=(("model", "clip"),)
        )
        assert list(answer.shape) == [2, 40] and answer.dtype == tensor_pb2.F32
        assert answer.byte_order == tensor_pb2.LE and all(len(c) == 4 for c in answer.content)
        got = np.frombuffer(b"".join(answer.content), dtype="<f4").reshape(2, 40)
        diff = float(np.abs(got - want).max())
        assert diff == 0, (order, one, diff)
    print(f"GetEmbeddings vs HTTP max abs: {diff:.1e}")


def test_get_embeddings_refuses_bad_tensors(
    seed_stub: embeddings_pb2_grpc.EmbeddingsStub,
) -> None:
    good = np.zeros((1, 3, 32, 32), dtype=np.float32)
    clip = (("model", "clip"),)
    cases = {
        "shape [1, 3, 16, 16]": (_pixels_request(good[:, :, :16, :16]), clip),
        "not [N, 3, S, S]": (_pixels_request(good[0]), clip),
        "batch is empty": (_pixels_request(good[:0]), clip),
        "content holds 5 elements": (
            tensor_pb2.TensorProto(content=[b"\0\0\0\0"] * 5, shape=good.shape),
            clip,
        ),
        "NaN": (_pixels_request(np.full_like(good, np.nan)), clip),
        "dtype 3": (tensor_pb2.TensorProto(shape=good.shape, dtype=3), clip),  # type: ignore[arg-type]
        "does not embed images": (_pixels_request(good), (("model", "minilm"),)),
    }
    for named, (request, metadata) in cases.items():
        code, message = _code(lambda r=request, m=metadata: seed_stub.GetEmbeddings(r, metadata=m))
        assert code is grpc.StatusCode.INVALID_ARGUMENT, (named, message)
        assert named in message, message
    code, message = _code(
        lambda: seed_stub.GetEmbeddings(_pixels_request(good), metadata=(("model", "nope"),))
    )
    assert code is grpc.StatusCode.NOT_FOUND and "nope" in message


# ------------------------------------------------- keys, limits, shedding, metrics


def test_keys_limits_and_metrics(models: tuple[ModelSpec, ...]) -> None:
    with serving(models[:1], api_keys=(KEY, "another"), max_items=3, max_body_bytes=4096) as s:
        channel = grpc.insecure_channel(s.target)
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        seed = embeddings_pb2_grpc.EmbeddingsStub(channel)
        request = pb.ModelInferRequest(model_name="clip", inputs=[_typed("text", [b"a"], [1])])
        keyed = (("authorization", f"Bearer {KEY}"),)
        # Probes are public; everything else needs a key.
        assert stub.ServerLive(pb.ServerLiveRequest()).live
        assert stub.ServerReady(pb.ServerReadyRequest()).ready
        for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", KEY),)):
            for call in (
                lambda m=metadata: stub.ModelInfer(request, metadata=m),
                lambda m=metadata: stub.ModelMetadata(
                    pb.ModelMetadataRequest(name="clip"), metadata=m
                ),
                lambda m=metadata: seed.GetEmbeddings(tensor_pb2.TensorProto(), metadata=m),
            ):
                code, message = _code(call)
                assert code is grpc.StatusCode.UNAUTHENTICATED, message
                assert "authorization: Bearer" in message
        assert stub.ModelInfer(request, metadata=keyed).outputs[0].shape == [1, 40]
        with triton.InferenceServerClient(s.target) as client:
            headers = {"authorization": "Bearer another"}
            assert client.get_model_metadata("clip", headers=headers).name == "clip"

        too_many = pb.ModelInferRequest(model_name="clip", inputs=[_typed("text", [b"a"] * 4, [4])])
        code, message = _code(lambda: stub.ModelInfer(too_many, metadata=keyed))
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "limit of 3" in message
        too_big = pb.ModelInferRequest(
            model_name="clip", inputs=[_typed("image", [b"x" * 5000], [1])]
        )
        code, message = _code(lambda: stub.ModelInfer(too_big, metadata=keyed))
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, message
        channel.close()

        def calls(code: str) -> float:
            return metric_value(s.url, "handspring_grpc_requests_total", method=INFER, code=code)

        assert calls("OK") == 1 and calls("UNAUTHENTICATED") == 3
        assert calls("RESOURCE_EXHAUSTED") == 1  # the message grpc refused never got here
        items = metric_value(
            s.url, "handspring_embedded_items_total", model="clip", modality="text"
        )
        assert items == 1


def test_overload_is_shed_across_both_ports(models: tuple[ModelSpec, ...]) -> None:
    # A budget of 1 ms admits one request at a time once a completion rate is measured.
    with (
        serving(models[:1], max_batch=1, max_queue_ms=1) as s,
        grpc.insecure_channel(s.target) as channel,
    ):
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        text = pb.ModelInferRequest(model_name="clip", inputs=[_typed("text", [b"warm"], [1])])
        for _ in range(3):  # texts measure the rate; their batcher is made before the gate
            stub.ModelInfer(text)
        with EngineGate.install(s.app) as gate:
            image = pb.ModelInferRequest(
                model_name="clip", inputs=[_typed("image", IMAGES[:1], [1])]
            )
            held = stub.ModelInfer.future(image)
            gate.wait_for_runs(1)
            call = stub.ModelInfer.with_call
            with pytest.raises(grpc.RpcError) as caught:
                call(text)
            assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "overloaded" in caught.value.details()
            assert dict(caught.value.trailing_metadata())["retry-after"].isdigit()
            # The HTTP port sees the same backlog.
            answer = requests.post(f"{s.url}/api/embed/texts", json={"texts": ["x"]}, timeout=60)
            assert answer.status_code == 429
            gate.open()
            assert held.result(timeout=60).outputs[0].shape == [1, 40]
        assert metric_value(s.url, "handspring_shed_requests_total", contract="grpc") == 1


# --------------------------------------------------------------------- shutdown


def test_sigterm_lets_calls_in_flight_finish_and_refuses_new_ones(tmp_path: Path) -> None:
    port = free_port()
    with held_server(tmp_path, "--grpc-port", str(port), "--max-batch", "1") as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest()).live
        request = pb.ModelInferRequest(model_name="minilm", inputs=[_typed("text", [b"a"], [1])])
        server.hold.touch()
        in_flight = stub.ModelInfer.future(request)
        server.wait_for_runs(held=1, queued_items=0)
        server.terminate()
        code, message = _code(lambda: stub.ModelInfer(request, timeout=30))
        assert code is grpc.StatusCode.UNAVAILABLE, message
        server.hold.unlink()
        assert list(in_flight.result(timeout=60).outputs[0].shape) == [1, 384]
        assert server.process.wait(timeout=60) == 0
        channel.close()
    log = server.log.read_text()
    assert '"path": "/inference.GRPCInferenceService/ModelInfer", "status": "OK"' in log


def test_grpc_starts_and_stops_with_the_http_server(models: tuple[ModelSpec, ...]) -> None:
    with serving(models[:1]) as s, grpc.insecure_channel(s.target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest()).live
    with grpc.insecure_channel(s.target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        code, _ = _code(lambda: stub.ServerLive(pb.ServerLiveRequest(), timeout=5))
        assert code is grpc.StatusCode.UNAVAILABLE


def test_grpc_port_is_off_unless_given_and_never_the_http_port() -> None:
    from handspring.server.command import serve

    assert ServerConfig(models=(ModelSpec("m", "x"),)).grpc_port is None
    with pytest.raises(ValueError, match="is the HTTP --port"):
        ServerConfig(models=(ModelSpec("m", "x"),), port=9000, grpc_port=9000)
    assert "--grpc-port" in {p.opts[0] for p in serve.params}
