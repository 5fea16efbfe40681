"""ImageBind towers against the reference ImageBindModel, on a random tiny checkpoint
with the real input sizes (224 images, 77 tokens, 128 x 204 fbank, 6 x 2000 IMU).

Thresholds: fp32 unit vectors max abs <= 1e-5, raw outputs (logit scale
included) max abs <= 1e-5 of the largest value; int8 cosine to fp32 >= 0.999
(a tiny random model says little about real int8 accuracy).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handspring.graph.layers import Precision
from handspring.models.imagebind import (
    IGNORED_KEYS,
    INPUTS,
    MODALITIES,
    OUTPUT_SCALES,
    REFERENCE_NAMES,
    TEXT_LOGIT_SCALE_KEY,
    ImageBindConfig,
    build_graph,
    weight_shapes,
)
from handspring.runtime.session import make_session
from handspring.weights.safetensors_io import TensorSource
from tests.support.imagebind_reference import (
    TINY,
    imagebind_model_module,
    write_imagebind_checkpoint,
)

torch = pytest.importorskip("torch")
if importlib.util.find_spec("imagebind") is None:
    pytest.skip("imagebind-unofficial is not installed", allow_module_level=True)
pytestmark = pytest.mark.reference

UNIT_MAX_ABS = 1e-5
RAW_MAX_REL = 1e-5
INT8_MIN_COSINE = 0.999
BATCH = 3
SOT, EOT = 49406, 49407
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32).reshape(1, 3, 1, 1)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32).reshape(1, 3, 1, 1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagebind_checkpoint(tmp_path_factory.mktemp("imagebind_tiny"), TINY, seed=0)


@pytest.fixture(scope="module")
def config(checkpoint: Path) -> ImageBindConfig:
    return ImageBindConfig.from_json(json.loads((checkpoint / "config.json").read_text()))


@pytest.fixture(scope="module")
def tensors(checkpoint: Path) -> TensorSource:
    return TensorSource.open([checkpoint / "model.safetensors"])


@pytest.fixture(scope="module")
def reference(checkpoint: Path, config: ImageBindConfig) -> Any:
    """The reference model, loaded (strictly) from the written checkpoint."""
    from safetensors.torch import load_file

    model = imagebind_model_module().ImageBindModel(**asdict(config)).eval()
    model.load_state_dict(load_file(str(checkpoint / "model.safetensors")), strict=True)
    return model


def _token_ids(lengths: list[int], rng: np.random.Generator) -> np.ndarray:
    """Start, random BPE ids, end; zero-padded to 77 as the reference tokenizer does."""
    ids = np.zeros((len(lengths), 77), np.int64)
    for row, length in zip(ids, lengths, strict=True):
        row[0], row[length - 1] = SOT, EOT
        row[1 : length - 1] = rng.integers(1, SOT, length - 2)
    return ids


def _model_input(modality: str, rng: np.random.Generator) -> np.ndarray:
    value = _random_input(modality, rng)
    if modality != "text":
        # A near-flat last item (a still sensor, a blank depth map) leaves little
        # variance for the stem's LayerNorm, so that its eps (1e-5) shows.
        value[-1] *= 0.02
    return value


def _random_input(modality: str, rng: np.random.Generator) -> np.ndarray:
    if modality == "image":
        pixels = rng.uniform(0, 1, (BATCH, 3, 224, 224)).astype(np.float32)
        return (pixels - CLIP_MEAN) / CLIP_STD
    if modality == "text":
        return _token_ids([5, 77, 12], rng)
    if modality == "audio":  # fbank after the reference's (x - mean) / (2 * std)
        return rng.normal(0.0, 0.5, (BATCH, 1, 128, 204)).astype(np.float32)
    if modality == "imu":
        return rng.normal(0.0, 1.0, (BATCH, 6, 2000)).astype(np.float32)
    return rng.normal(0.0, 1.0, (BATCH, 1, 224, 224)).astype(np.float32)  # depth, thermal


def _feed(modality: str, value: np.ndarray) -> dict[str, np.ndarray]:
    if modality != "text":
        return {INPUTS[modality][0]: value}
    longest = int((value != 0).sum(axis=1).max())  # texts are padded only to the longest
    return {"input_ids": value[:, :longest], "eot_index": value.argmax(axis=1)}


def _run(
    cfg: ImageBindConfig,
    modality: str,
    w: Mapping[str, np.ndarray],
    precision: Precision,
    folder: Path,
    feed: dict[str, np.ndarray],
) -> np.ndarray:
    path = folder / f"{modality}-{precision.tag}.onnx"
    path.write_bytes(build_graph(cfg, modality, w, precision).SerializeToString())
    return make_session(path, threads=2).run(["embedding"], feed)[0]


def _reference_output(reference: Any, modality: str, value: np.ndarray) -> np.ndarray:
    name = REFERENCE_NAMES[modality]
    with torch.no_grad():
        return reference({name: torch.from_numpy(value)})[name].numpy()


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_weight_shapes_are_the_reference_state_dict(
    reference: Any, config: ImageBindConfig
) -> None:
    state = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    covered: set[str] = set()
    for modality in MODALITIES:
        name = REFERENCE_NAMES[modality]
        own = {k: s for k, s in state.items() if k.split(".")[1] == name}
        assert weight_shapes(config, modality) == own, modality
        covered |= own.keys()
    assert covered == state.keys()
    assert set(IGNORED_KEYS) <= covered


def test_fixed_output_scales_are_the_reference_buffers(reference: Any) -> None:
    for modality, scale in OUTPUT_SCALES.items():
        post = reference.modality_postprocessors[REFERENCE_NAMES[modality]]
        if modality == "image":
            assert not list(post.state_dict())  # Normalize only
            continue
        assert not post[1].learnable
        assert float(post[1].log_logit_scale.exp()) == pytest.approx(scale, rel=1e-6)
    assert TEXT_LOGIT_SCALE_KEY in reference.state_dict()


class _ReadRecorder(Mapping[str, np.ndarray]):
    def __init__(self, inner: Mapping[str, np.ndarray]) -> None:
        self.inner, self.read = inner, set[str]()

    def __getitem__(self, key: str) -> np.ndarray:
        self.read.add(key)
        return self.inner[key]

    def __contains__(self, key: object) -> bool:
        return key in self.inner

    def __iter__(self) -> Iterator[str]:
        return iter(self.inner)

    def __len__(self) -> int:
        return len(self.inner)


@pytest.mark.parametrize("modality", MODALITIES)
def test_graph_reads_every_key_but_the_ignored(
    modality: str, config: ImageBindConfig, tensors: TensorSource
) -> None:
    recorder = _ReadRecorder(tensors)
    build_graph(config, modality, recorder, Precision())
    assert recorder.read == weight_shapes(config, modality).keys() - IGNORED_KEYS.keys()


@pytest.mark.parametrize("modality", MODALITIES)
def test_fp32_matches_reference(
    modality: str,
    config: ImageBindConfig,
    tensors: TensorSource,
    reference: Any,
    tmp_path: Path,
) -> None:
    value = _model_input(modality, np.random.default_rng(MODALITIES.index(modality)))
    ref = _reference_output(reference, modality, value)
    ours = _run(config, modality, tensors, Precision(), tmp_path, _feed(modality, value))
    unit_err = float(np.abs(_unit(ours) - _unit(ref)).max())
    raw_err = float(np.abs(ours - ref).max() / np.abs(ref).max())
    print(f"\n{modality} fp32: unit max abs {unit_err:.2e}, raw max abs / max {raw_err:.2e}")
    assert ours.shape == (BATCH, config.out_embed_dim)
    assert unit_err <= UNIT_MAX_ABS
    assert raw_err <= RAW_MAX_REL


def test_text_padded_to_the_longest_only(
    config: ImageBindConfig, tensors: TensorSource, reference: Any, tmp_path: Path
) -> None:
    ids = _token_ids([3, 20, 9], np.random.default_rng(7))
    feed = _feed("text", ids)
    assert feed["input_ids"].shape == (BATCH, 20)
    ref = _reference_output(reference, "text", ids)
    ours = _run(config, "text", tensors, Precision(), tmp_path, feed)
    assert np.abs(_unit(ours) - _unit(ref)).max() <= UNIT_MAX_ABS


@pytest.mark.parametrize("modality", MODALITIES)
def test_int8_close_to_fp32(
    modality: str, config: ImageBindConfig, tensors: TensorSource, tmp_path: Path
) -> None:
    feed = _feed(modality, _model_input(modality, np.random.default_rng(10)))
    fp32 = _run(config, modality, tensors, Precision(), tmp_path, feed)
    int8 = _run(config, modality, tensors, Precision(int8=True), tmp_path, feed)
    cosine = float((_unit(int8) * _unit(fp32)).sum(axis=1).min())
    print(f"\n{modality} int8: min cosine to fp32 {cosine:.6f}")
    assert cosine >= INT8_MIN_COSINE


def test_config_from_json() -> None:
    raw = {"model_type": "imagebind", **asdict(TINY), "imu_drop_path": 0.7}
    raw["kernel_size"] = list(TINY.kernel_size)
    assert ImageBindConfig.from_json(raw) == TINY
    assert ImageBindConfig.from_json({"model_type": "imagebind"}) == ImageBindConfig()
    with pytest.raises(ValueError, match="vision_mlp_ratio, vision_width"):
        ImageBindConfig.from_json({**raw, "vision_mlp_ratio": 4, "vision_width": 8})
    with pytest.raises(ValueError, match="not 'imagebind'"):
        ImageBindConfig.from_json({**raw, "model_type": "clip"})
    with pytest.raises(ValueError, match="vision_num_heads"):
        ImageBindConfig.from_json({**raw, "vision_num_heads": "16"})
    with pytest.raises(ValueError, match="kernel_size"):
        ImageBindConfig.from_json({**raw, "kernel_size": [1, 14, 14]})
