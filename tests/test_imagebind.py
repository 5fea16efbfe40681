"""ImageBind through `handspring.load`, end to end from files and arrays, against the
reference: imagebind-unofficial's model and the real `data.py` preprocessing (run with
torchaudio's and pytorchvideo's own code, see tests/support/audio_reference.py).

Checkpoints are tiny random-weight ones the tests write (tests/support/imagebind_reference.py);
the full-size parity and speed are bench/imagebind_bench.py's."""

from __future__ import annotations

import io
import logging
import pickle
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import handspring
from handspring import registry
from handspring.embedder import Model
from handspring.errors import AudioError, CheckpointError, HandspringError, InputError
from handspring.registry import Int8Gate, KnownModel
from handspring.weights.safetensors_io import TensorSource
from tests.support.images import photo_array

UNIT = 1e-5  # unit vectors, fp32, vs the reference
AUDIO_END_TO_END = 1e-4  # from a WAV file, through the reference's own fbank

TEXTS = [
    "a dog barking in the park",
    "",
    "Ünïcödé &amp; HTML   spacing",
    "word " * 100,  # cut to 77 tokens, the end token kept
    "the sound of rain on a tin roof",
]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


@pytest.fixture(scope="module")
def bind(tiny_imagebind: Path) -> Model:
    return handspring.load(tiny_imagebind)


@pytest.fixture(scope="module")
def reference() -> Any:
    from tests.support.imagebind_reference import TINY, reference_model

    return reference_model(TINY, seed=3)  # the weights of the tiny_imagebind fixture


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, (h, w) in enumerate([(300, 400), (401, 299), (224, 224), (97, 513)]):
        path = folder / f"p{i}.png"
        Image.fromarray(photo_array(h, w, seed=i)).save(path)
        paths.append(path)
    # Transparency: data.py's convert("RGB") drops it (transformers would composite on white).
    rgba = np.dstack(
        [
            photo_array(260, 330, seed=9),
            np.linspace(0, 255, 330, dtype=np.uint8)[None].repeat(260, 0),
        ]
    )
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    return [*paths, folder / "alpha.png"]


@pytest.fixture(scope="module")
def sounds(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    import soundfile

    from tests.support.audio_reference import noise, speech_like, stereo_with_offsets, tones

    folder = tmp_path_factory.mktemp("sounds")
    cases = {
        "speech.wav": (speech_like(4.3, 44100, seed=1), 44100),
        "tones.flac": (tones(1.2, 16000), 16000),
        "stereo.wav": (stereo_with_offsets(6.1, 48000), 48000),
        "noise.ogg": (noise(2.5, 22050, seed=2), 22050),
    }
    paths = []
    for name, (samples, rate) in cases.items():
        path = folder / name
        data = samples.T if samples.ndim == 2 else samples
        soundfile.write(path, data, rate)
        paths.append(path)
    return paths


def _reference_outputs(reference: Any, modality: str, inputs: Any) -> np.ndarray:
    import torch

    name = "vision" if modality == "image" else modality
    with torch.inference_mode():
        return reference({name: inputs})[name].numpy()


# ------------------------------------------------------------------ parity


@pytest.mark.reference
def test_images_from_files_equal_the_reference(
    bind: Model, reference: Any, photos: list[Path]
) -> None:
    from tests.support.imagebind_reference import imagebind_vision_and_text

    pixels = imagebind_vision_and_text()["load_and_transform_vision_data"](
        [str(p) for p in photos], "cpu"
    )
    expected = _reference_outputs(reference, "image", pixels)
    ours = bind.embed_images(photos)
    error = _max_abs(ours.embeddings, _unit(expected))
    print(f"image, from PNG files: max abs {error:.2e} on unit vectors")
    assert error <= UNIT
    raw = bind.embed_images(photos, normalize=False).embeddings
    assert _max_abs(raw, expected) <= UNIT * np.abs(expected).max()


@pytest.mark.reference
def test_texts_equal_the_reference(bind: Model, reference: Any) -> None:
    from tests.support.imagebind_reference import imagebind_vision_and_text

    ids = imagebind_vision_and_text()["load_and_transform_text"](TEXTS, "cpu")
    expected = _reference_outputs(reference, "text", ids)
    error = _max_abs(bind.embed_texts(TEXTS), _unit(expected))
    print(f"text: max abs {error:.2e} on unit vectors")
    assert error <= UNIT
    # Unnormalised, the text tower gives the reference's own output: unit x logit scale.
    raw = bind.embed_texts(TEXTS, normalize=False)
    assert _max_abs(raw, expected) <= UNIT * np.abs(expected).max()


@pytest.mark.reference
def test_sounds_from_files_equal_the_reference(
    bind: Model, reference: Any, sounds: list[Path]
) -> None:
    import torch

    from tests.support.audio_reference import imagebind_data_functions, load_like_torchaudio

    # The reference pipeline in float64 (its float32 FFT alone is 1e-3 off in the floor
    # bins, see test_preprocess_audio), then the model in float32 as it runs.
    data = imagebind_data_functions(load_like_torchaudio(torch.float64))
    clips = data["load_and_transform_audio_data"]([str(p) for p in sounds], "cpu")
    expected = _reference_outputs(reference, "audio", clips.float())
    ours = bind.embed_audio(sounds)
    assert ours.errors == []
    error = _max_abs(ours.embeddings, _unit(expected))
    print(f"audio, from WAV/FLAC/OGG files: max abs {error:.2e} on unit vectors")
    assert error <= AUDIO_END_TO_END
    # Clips are averaged after the postprocessor (x 20), as the reference does.
    raw = bind.embed_audio(sounds, normalize=False).embeddings
    assert _max_abs(raw, expected) <= AUDIO_END_TO_END * np.abs(expected).max()


@pytest.mark.reference
@pytest.mark.parametrize(
    ("modality", "shape"),
    [("depth", (1, 224, 224)), ("thermal", (1, 224, 224)), ("imu", (6, 2000))],
)
def test_arrays_equal_the_reference(
    bind: Model, reference: Any, modality: str, shape: tuple[int, ...]
) -> None:
    import torch

    rng = np.random.default_rng(7)
    arrays = [rng.normal(size=shape).astype(np.float32) for _ in range(3)]
    expected = _reference_outputs(reference, modality, torch.from_numpy(np.stack(arrays)))
    # Each input kind gives the same rows: arrays, a leading 1 left out, .npy bytes and files.
    npy = io.BytesIO()
    np.save(npy, arrays[1].astype(np.float64))
    items: list[Any] = [arrays[0], npy.getvalue(), arrays[2].tolist()]
    if shape[0] == 1:
        items[0] = arrays[0][0]
    ours = bind.embed(modality, items)
    assert ours.errors == []
    error = _max_abs(ours.embeddings, _unit(expected))
    print(f"{modality}: max abs {error:.2e} on unit vectors")
    assert error <= UNIT


# ----------------------------------------------------------------- checkpoints


def _state_dict_pth(folder: Path, target: Path) -> Path:
    import torch

    tensors = TensorSource.open([folder / "model.safetensors"])
    state = {k: torch.from_numpy(np.array(tensors[k])) for k in tensors}
    target.mkdir(parents=True)
    shutil.copy(folder / "config.json", target / "config.json")
    torch.save(state, target / "imagebind_huge.pth")
    return target


@pytest.mark.reference
def test_the_official_pickle_format_loads_without_torch_and_equals_safetensors(
    bind: Model, tiny_imagebind: Path, tmp_path: Path, photos: list[Path]
) -> None:
    folder = _state_dict_pth(tiny_imagebind, tmp_path / "pth")
    from_pickle = handspring.load(folder, modalities=["image", "text", "imu"])
    # The same tensors give the same graph key: the cached graphs are reused.
    assert not any(t.built for t in from_pickle.towers.values())
    assert np.array_equal(
        from_pickle.embed_images(photos).embeddings, bind.embed_images(photos).embeddings
    )
    assert np.array_equal(from_pickle.embed_texts(TEXTS), bind.embed_texts(TEXTS))


def _malicious_pth(folder: Path, marker: Path) -> Path:
    class Exploit:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    folder.mkdir(parents=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"x": Exploit()}, protocol=2))
        archive.writestr("archive/version", "3\n")
    (folder / "imagebind_huge.pth").write_bytes(buffer.getvalue())
    return folder


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = _malicious_pth(tmp_path / "evil", marker)
    with pytest.raises(CheckpointError, match=r"imagebind_huge\.pth.*forbidden global"):
        handspring.load(folder, modalities=["imu"])
    assert not marker.exists()


def test_loading_one_modality_reads_only_its_tensors(
    tiny_imagebind: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def nudge(state: dict[str, np.ndarray]) -> None:  # so no graph of it is cached yet
        state["modality_heads.audio.2.weight"][0, 0] += 0.5

    folder = _rewritten(tiny_imagebind, tmp_path / "copy", nudge)
    read: list[str] = []
    original = TensorSource.__getitem__

    def spy(self: TensorSource, key: str) -> np.ndarray:
        read.append(key)
        return original(self, key)

    monkeypatch.setattr(TensorSource, "__getitem__", spy)
    model = handspring.load(folder, modalities=["audio"])
    assert model.modalities == ("audio",) and model.towers["audio"].built
    assert read, "the audio tower was built from nothing?"
    strays = [k for k in read if ".audio." not in k]
    assert strays == [], f"loading audio read other towers' tensors: {strays[:3]}"


def _rewritten(folder: Path, target: Path, change: Any) -> Path:
    from safetensors.numpy import save_file

    shutil.copytree(folder, target)
    tensors = TensorSource.open([folder / "model.safetensors"])
    state = {k: np.array(tensors[k]) for k in tensors}
    change(state)
    save_file(state, str(target / "model.safetensors"))
    return target


def test_loading_is_loud(tiny_imagebind: Path, tmp_path: Path) -> None:
    key = "modality_trunks.audio.blocks.1.attn.bias_k"
    missing = _rewritten(tiny_imagebind, tmp_path / "missing", lambda s: s.pop(key))
    with pytest.raises(
        CheckpointError, match=r"\[modality_trunks\.audio\.blocks\.1\.attn\.bias_k\]"
    ):
        handspring.load(missing, modalities=["audio"])
    handspring.load(missing, modalities=["depth"])  # another tower's loss is not this one's

    def widen(state: dict[str, np.ndarray]) -> None:
        state["modality_heads.imu.3.weight"] = np.zeros((40, 33), np.float32)

    wrong = _rewritten(tiny_imagebind, tmp_path / "wrong", widen)
    with pytest.raises(CheckpointError, match=r"modality_heads\.imu\.3\.weight.*shape \(40, 33\)"):
        handspring.load(wrong, modalities=["imu"])

    def extra(state: dict[str, np.ndarray]) -> None:
        state["modality_trunks.thermal.blocks.9.norm_1.weight"] = np.ones(48, np.float32)

    leftover = _rewritten(tiny_imagebind, tmp_path / "extra", extra)
    with pytest.raises(CheckpointError, match="does not account for"):
        handspring.load(leftover, modalities=["thermal"])


def test_config_sizes_are_checked(tiny_imagebind: Path, tmp_path: Path) -> None:
    import json

    folder = shutil.copytree(tiny_imagebind, tmp_path / "bad-config")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"vision_embed_dimension": 3}))
    with pytest.raises(CheckpointError, match="vision_embed_dimension"):
        handspring.load(folder, modalities=["text"])
    (folder / "config.json").write_text(json.dumps(config | {"audio_embed_dim": 64}))
    with pytest.raises(CheckpointError, match="config implies"):
        handspring.load(folder, modalities=["audio"])


# ------------------------------------------------------------------ the API


def test_modalities_and_unknown_ones(bind: Model, tiny_imagebind: Path) -> None:
    assert bind.modalities == ("image", "text", "audio", "depth", "thermal", "imu")
    assert bind.family == "imagebind" and bind.dim == 40
    with pytest.raises(ValueError, match="has no video modality"):
        handspring.load(tiny_imagebind, modalities=["video"])
    audio_only = handspring.load(tiny_imagebind, modalities=["audio"])
    with pytest.raises(HandspringError, match="image tower is not loaded"):
        audio_only.embed_images([np.zeros((8, 8, 3), np.uint8)])


def test_bad_items_are_named_and_cost_only_their_row(
    bind: Model, sounds: list[Path], tmp_path: Path
) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    not_audio = tmp_path / "photo.wav"
    Image.fromarray(photo_array(20, 20, seed=1)).save(not_audio, format="PNG")
    items = [sounds[0], empty, b"RIFF....WAVEfmt", not_audio, tmp_path / "nope.wav", sounds[1]]
    result = bind.embed_audio(items)
    assert result.ok.tolist() == [True, False, False, False, False, True]
    assert all(isinstance(e, AudioError) for e in result.errors)
    reasons = {e.item: e.reason for e in result.errors}
    assert "empty" in reasons[str(empty)]
    assert "not found" in reasons[str(tmp_path / "nope.wav")]
    assert set(reasons) == {str(empty), "<bytes #2>", str(not_audio), str(tmp_path / "nope.wav")}
    alone = bind.embed_audio([sounds[0], sounds[1]]).embeddings
    assert np.array_equal(result.embeddings[[0, 5]], alone)
    # Arrays: a wrong shape, NaN, a pickle inside .npy bytes.
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    arrays = bind.embed(
        "imu",
        [np.zeros((6, 1999)), np.full((6, 2000), np.nan), pickled.getvalue(), np.zeros((6, 2000))],
    )
    assert arrays.ok.tolist() == [False, False, False, True]
    assert all(isinstance(e, InputError) for e in arrays.errors)
    assert "pickle" in arrays.errors[2].reason


def test_errors_do_not_keep_their_traceback(bind: Model) -> None:
    result = bind.embed_images([b"\x89PNG\r\n\x1a\n" + b"\x00" * 64])
    (error,) = result.errors
    assert error.__traceback__ is None and error.__context__ is None


def test_vectors_do_not_depend_on_the_batch(tiny_imagebind: Path, sounds: list[Path]) -> None:
    for precision in ("fp32", "int8"):
        model = handspring.load(tiny_imagebind, modalities=["audio", "text"], precision=precision)
        together = model.embed_audio(sounds, batch_size=4).embeddings
        for i, sound in enumerate(sounds):
            assert np.array_equal(model.embed_audio([sound]).embeddings[0], together[i])
        texts = model.embed_texts(TEXTS)
        assert np.array_equal(model.embed_texts(TEXTS[1:2])[0], texts[1])


def test_zero_shot_sounds(bind: Model, sounds: list[Path]) -> None:
    probs, embedded = bind.classify(sounds, ["rain", "a dog"], modality="audio")
    assert probs.shape == (len(sounds), 2) and embedded.errors == []
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-6)
    # The reference's own recipe: softmax(audio_raw @ text_raw.T).
    audio = bind.embed_audio(sounds, normalize=False).embeddings
    text = bind.embed_texts(["a photo of a rain.", "a photo of a a dog."], normalize=False)
    logits = audio @ text.T
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, expected / expected.sum(axis=1, keepdims=True), atol=1e-5)


# --------------------------------------------------------------- int8 and licence


@pytest.fixture
def failing_audio_gate(monkeypatch: pytest.MonkeyPatch, tiny_imagebind: Path) -> Iterator[str]:
    entry = KnownModel(
        "tiny-bind",
        str(tiny_imagebind),
        "imagebind",
        "imagebind",
        40,
        224,
        int8_gates=(
            ("image", Int8Gate(0.9995, required_cosine=0.999)),
            ("audio", Int8Gate(0.98, required_cosine=0.995)),
        ),
    )
    monkeypatch.setattr(registry, "KNOWN_MODELS", (*registry.KNOWN_MODELS, entry))
    yield str(tiny_imagebind)


def test_int8_is_offered_per_tower_by_its_gate(
    failing_audio_gate: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="handspring"):
        model = handspring.load(failing_audio_gate, modalities=["image"], precision="int8")
    assert model.modalities == ("image",)
    assert "not been measured" not in caplog.text
    with pytest.raises(
        ValueError, match=r"int8 is refused \(measured min cosine 0\.9800\) for the audio tower"
    ):
        handspring.load(failing_audio_gate, modalities=["audio"], precision="int8")
    with caplog.at_level(logging.WARNING, logger="handspring"):
        handspring.load(failing_audio_gate, modalities=["imu"], precision="int8")
    assert "int8 accuracy has not been measured for the imu tower" in caplog.text


def test_the_licence_is_said_once(tmp_path: Path, tiny_imagebind: Path) -> None:
    from handspring.loaders import imagebind as loader

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("handspring")
    logger.addHandler(handler)
    try:
        loader._licence_told = False
        handspring.load(tiny_imagebind, modalities=["imu"])
        handspring.load(tiny_imagebind, modalities=["depth"])
    finally:
        logger.removeHandler(handler)
    said = [r.getMessage() for r in records if "CC-BY-NC-SA 4.0" in r.getMessage()]
    assert len(said) == 1


def test_the_registry_names_imagebind_and_its_licence() -> None:
    entry = registry.known_model("imagebind-huge")
    assert entry is not None and entry.repo_id == "nielsr/imagebind-huge"
    assert entry.family == "imagebind" and entry.dim == 1024
    assert "CC-BY-NC-SA" in entry.licence
    assert {m for m, _ in entry.int8_gates} == set(registry.IMAGEBIND_MODALITIES)


def test_disparity_from_depth() -> None:
    from handspring.preprocess.arrays import disparity_from_depth

    depth = np.array([[1.0, 2.0], [0.0, np.nan]])
    out = disparity_from_depth(depth, focal_length_px=500.0, baseline_m=0.1)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[50.0, 25.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="positive"):
        disparity_from_depth(depth, focal_length_px=0.0, baseline_m=0.1)
