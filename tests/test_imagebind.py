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


# ------------------------------------------- multi2vec-bind's image and CSV files
#
# Weaviate's multi2vec-bind container (weaviate/multi2vec-bind-inference, bind_data.py)
# sends depth and thermal as image files and IMU as CSV. Its steps are rebuilt here from
# torchvision's transforms and numpy/torch calls with the same parameters.

IMU_HEADER = "gyro_x,gyro_y,gyro_z,accl_x,accl_y,accl_z"


def _multi2vec_bind_gray(data: bytes) -> np.ndarray:
    """The container's depth/thermal input: L image, Resize(224, bicubic), CenterCrop(224),
    ToTensor, Normalize with the first CLIP channel's mean and std."""
    from torchvision import transforms

    image = Image.open(io.BytesIO(data))
    if image.mode != "L":
        image = image.convert("L")
    transform = transforms.Compose(
        [
            transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=(0.48145466), std=(0.26862954)),
        ]
    )
    return transform(image).numpy()


def _multi2vec_bind_imu(path: Path) -> np.ndarray:
    """The container's IMU input: the table after its header, reshaped (not transposed)
    to [channels, steps], zero-padded on the right or cut to 2000 steps."""
    import torch

    table = np.loadtxt(path, dtype=np.float32, delimiter=",", skiprows=1)
    window = torch.from_numpy(table.reshape((table.shape[1], table.shape[0])))
    if window.shape[1] < 2000:
        window = torch.nn.functional.pad(window, (0, 2000 - window.shape[1]), value=0)
    return window[:, :2000].numpy()


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _depth16(h: int, w: int, seed: int) -> np.ndarray:
    """uint16 millimetre-like depth from 0 to 600: a ramp, shapes, noise; about a third
    of it above 255."""
    gray = photo_array(h, w, seed=seed).mean(axis=2)
    ramp = np.linspace(0, 300, w)[None, :]
    return np.clip(gray + ramp, 0, 600).astype(np.uint16)


def _gray_files() -> dict[str, bytes]:
    """Sizes with odd crop offsets both ways, one already 224 x 224."""
    return {
        "depth8.png": _encoded(Image.fromarray(photo_array(300, 457, seed=1)).convert("L"), "PNG"),
        "depth16.png": _encoded(Image.fromarray(_depth16(225, 331, seed=2)), "PNG"),
        "thermal.jpg": _encoded(Image.fromarray(photo_array(513, 97, seed=3)), "JPEG"),
        "alpha.png": _encoded(
            Image.fromarray(np.dstack([photo_array(224, 224, seed=4)] * 2)[..., :4], "RGBA"),
            "PNG",
        ),
    }


def _imu_csv(path: Path, steps: int, seed: int) -> Path:
    """As the container's samples: a header, then one row of 6 values per step, written
    with more digits than float32 keeps."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(0, 2, (steps, 6))
    lines = [IMU_HEADER, *(",".join(repr(float(v)) for v in row) for row in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.reference
@pytest.mark.parametrize("modality", ["depth", "thermal"])
def test_image_files_equal_the_multi2vec_bind_transform(
    bind: Model, modality: str, tmp_path: Path
) -> None:
    tower = bind.tower(modality)
    files = _gray_files()
    expected = {name: _multi2vec_bind_gray(data) for name, data in files.items()}
    for name, data in files.items():
        ours = tower.prepare(data, name, {})
        path = tmp_path / name
        path.write_bytes(data)
        assert np.array_equal(tower.prepare(path, str(path), {}), ours)
        error = _max_abs(ours, expected[name])
        print(f"{modality} {name} ({Image.open(path).mode}): max abs {error:.2e} on [1,224,224]")
        assert ours.shape == (1, 224, 224) and ours.dtype == np.float32
        assert error <= 1e-6
    # Files through the model give the vectors of the container's inputs as arrays.
    from_files = bind.embed(modality, list(files.values()), normalize=False)
    from_arrays = bind.embed(modality, list(expected.values()), normalize=False)
    assert from_files.errors == []
    assert _max_abs(from_files.embeddings, from_arrays.embeddings) <= 1e-6


def test_16_bit_depth_maps_are_clipped_at_255_as_pillow_converts_them() -> None:
    # A 16-bit PNG opens as I;16 in today's Pillow and as I in older ones (the container's
    # Pillow is not pinned): convert("L") clips at 255 from either, with no scaling.
    depth = _depth16(225, 331, seed=2)
    image = Image.open(io.BytesIO(_encoded(Image.fromarray(depth), "PNG")))
    clipped = np.minimum(depth, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(image.convert("L")), clipped)
    assert np.array_equal(np.asarray(image.convert("I").convert("L")), clipped)


@pytest.mark.reference
def test_imu_csv_equals_the_multi2vec_bind_reading(bind: Model, tmp_path: Path) -> None:
    tower = bind.tower("imu")
    for steps in (1500, 2000, 3072):  # padded, as it is, cut
        path = _imu_csv(tmp_path / f"imu_{steps}.csv", steps, seed=steps)
        ours = tower.prepare(path, str(path), {})
        assert np.array_equal(tower.prepare(path.read_bytes(), "<bytes #0>", {}), ours)
        error = _max_abs(ours, _multi2vec_bind_imu(path))
        print(f"imu CSV of {steps} steps: max abs {error:.2e} on [6,2000]")
        assert ours.shape == (6, 2000) and error <= 1e-6
    # The reshape interleaves the channels: not ImageBind's layout, but the container's.
    table = np.loadtxt(path, dtype=np.float32, delimiter=",", skiprows=1)
    assert not np.array_equal(ours, table.T[:, :2000])
    rows = [_multi2vec_bind_imu(tmp_path / f"imu_{n}.csv") for n in (1500, 2000, 3072)]
    from_files = bind.embed("imu", [tmp_path / f"imu_{n}.csv" for n in (1500, 2000, 3072)])
    assert from_files.errors == []
    assert _max_abs(from_files.embeddings, bind.embed("imu", rows).embeddings) <= 1e-6


def test_bad_image_and_csv_files_are_named(bind: Model, tmp_path: Path) -> None:
    from handspring.errors import ImageError
    from handspring.towers.arrays import ArrayTower

    good = _gray_files()["depth8.png"]
    truncated = good[: len(good) // 2]
    depth = bind.embed(
        "depth", [b"hello, not an image", truncated, tmp_path / "nope.png", tmp_path, good]
    )
    assert depth.ok.tolist() == [False, False, False, False, True]
    reasons = [e.reason for e in depth.errors]
    assert reasons[0] == "neither a .npy array nor an image file"
    assert reasons[1].startswith("truncated")
    assert reasons[2:] == ["file not found", "is a directory, not a file"]
    assert [e.item for e in depth.errors[:2]] == ["<bytes #0>", "<bytes #1>"]
    tower = bind.tower("thermal")
    small = ArrayTower("thermal", tower.compiled, tower.dim, (1, 224, 224), max_pixels=10_000)
    with pytest.raises(ImageError, match=r"^x: too large: 457x300 = 137,100 pixels is over"):
        small.prepare(good, "x", {})

    csv = IMU_HEADER + "\n"
    imu = bind.embed(
        "imu",
        [
            (csv + "1,2,3,4,5\n1,2,3,4,5\n").encode(),
            (csv + "1,2,3,4,5,six\n").encode(),
            b"\xff\xfe\x00binary",
            csv.encode(),
            (csv + "1,2,3,4,5,6\n").encode(),  # one row: padded (the container fails on it)
        ],
    )
    assert imu.ok.tolist() == [False, False, False, False, True]
    assert [e.reason for e in imu.errors] == [
        "5 columns, but an IMU CSV has 6",
        "not a CSV of numbers (a header line, then one row per time step)",
        "neither a .npy array nor a UTF-8 CSV file",
        "the CSV has no rows after its header line",
    ]


@pytest.mark.reference
@pytest.mark.parametrize("weights", ["safetensors", "pth"])
def test_a_hub_repo_resolves_offline(
    weights: str, tiny_imagebind: Path, tmp_path: Path, bind: Model
) -> None:
    """As `imagebind-huge` resolves `nielsr/imagebind-huge`: from the hub cache, offline."""
    from tests.support.hub_cache import hub_repo

    _, snapshot = hub_repo(f"acme/tiny-bind-{weights}")
    snapshot.mkdir(parents=True)
    if weights == "safetensors":
        for name in ("config.json", "model.safetensors"):
            shutil.copy(tiny_imagebind / name, snapshot / name)
    else:
        _state_dict_pth(tiny_imagebind, tmp_path / "pth")
        for name in ("config.json", "imagebind_huge.pth"):
            shutil.copy(tmp_path / "pth" / name, snapshot / name)
    model = handspring.load(f"acme/tiny-bind-{weights}", modalities=["text"])
    assert model.family == "imagebind"
    assert np.array_equal(model.embed_texts(TEXTS), bind.embed_texts(TEXTS))


def test_the_audio_tower_says_when_soundfile_is_missing(
    tiny_imagebind: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "soundfile", None)  # what `import soundfile` meets
    with pytest.raises(HandspringError, match=r"pip install 'handspring\[audio\]'"):
        handspring.load(tiny_imagebind, modalities=["audio"])
    assert handspring.load(tiny_imagebind, modalities=["imu"]).modalities == ("imu",)
