"""The server's runtime choice: `--backend` reaches every model, `/meta` says which runtime
each tower runs on, and a model may name its precision, bf16 included."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

import handspring
from handspring.server.config import ModelSpec
from tests.server.conftest import ServerFactory

TEXTS = ["a photo of a cat", "two dogs on a beach"]


def test_a_model_names_its_precision() -> None:
    assert ModelSpec.parse("clip=clip-vit-b-32:bf16", "int8") == ModelSpec(
        "clip", "clip-vit-b-32", "bf16"
    )
    assert ModelSpec.parse("clip-vit-b-32", "fp32").precision == "fp32"
    with pytest.raises(ValueError, match=r"NAME=SOURCE\[:fp32\|:int8\|:bf16\]"):
        ModelSpec.parse("=x", "fp32")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_the_backend_reaches_every_tower(
    serve: ServerFactory, models: tuple[ModelSpec, ...], backend: str
) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino")
    clip = models[0]
    with serve(backend=backend, models=(clip,)) as url:
        answer = httpx.post(
            f"{url}/v1/embeddings", json={"model": "clip", "input": TEXTS}, timeout=120
        )
        assert answer.status_code == 200, answer.text
        meta = httpx.get(f"{url}/meta", timeout=30).json()
    got = np.array([row["embedding"] for row in answer.json()["data"]], dtype=np.float32)
    (entry,) = meta["models"]
    assert entry["backends"] == {m: backend for m in entry["modalities"]}
    expected = handspring.load(clip.source, precision="fp32").embed_texts(TEXTS)
    difference = float(np.abs(got - expected).max())
    print(f"{backend} through the server vs the library on ONNX Runtime: max abs {difference:.1e}")
    assert difference <= (0 if backend == "onnxruntime" else 1e-5)
