"""The public API on the tiny random-weight checkpoints: inputs, errors, streaming,
texts, zero-shot, modalities, the graph cache, threads, EXIF and fast decoding.

No torch here: every expectation is computed from Handspring itself (a vector
alone vs in a batch, a picture given one way vs another) or by hand.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import itertools
import json
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from PIL import Image, ImageOps
from safetensors.numpy import load_file, save_file

import handspring
from handspring.embedder import Model, l2_normalize
from handspring.errors import HandspringError, ImageError
from handspring.preprocess.decode import ImageInput
from handspring.runtime.graph_cache import cache_root
from handspring.towers.base import Tower
from tests.support.checkpoints import TINY, write_hf_clip
from tests.support.images import ORIENTATION_TAG, jpeg, photo_array, png_photo
from tests.support.samples import TEXTS

DIM = TINY.projection_dim
T = TypeVar("T")
EXACT = 1e-6  # same pixels in, same vector out
TEXT_TOL = 1e-5


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


@pytest.fixture(scope="module")
def pics(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three lossless pictures of different sizes and content."""
    folder = tmp_path_factory.mktemp("pics")
    return [
        png_photo(folder / f"p{i}.png", h, w, seed=10 + i)
        for i, (h, w) in enumerate([(48, 64), (64, 40), (37, 53)])
    ]


def _alone(model: Model, item: ImageInput) -> np.ndarray:
    result = model.embed_images([item])
    assert not result.errors, result.errors
    return result.embeddings[0]


# ------------------------------------------------------------------ inputs


def test_every_input_kind_gives_the_same_vector(model: Model, pics: list[Path]) -> None:
    path = pics[0]
    pixels = photo_array(48, 64, seed=10)
    kinds = {
        "str": str(path),
        "Path": path,
        "bytes": path.read_bytes(),
        "PIL (opened file)": Image.open(path),
        "PIL (from array)": Image.fromarray(pixels),
        "array": pixels,
    }
    result = model.embed_images(list(kinds.values()))
    assert result.embeddings.shape == (len(kinds), DIM)
    assert result.embeddings.dtype == np.float32
    assert not result.errors
    assert result.ok.all()
    reference = result.embeddings[0]
    assert np.isfinite(reference).all()
    for row, name in enumerate(kinds):
        assert _max_abs(result.embeddings[row], reference) <= EXACT, name
    # A different picture really gives a different vector.
    assert _max_abs(_alone(model, pics[1]), reference) > 1e-3


@pytest.mark.parametrize("batch_size", [16, 2])
def test_rows_come_back_in_input_order(model: Model, pics: list[Path], batch_size: int) -> None:
    a, b, c = pics
    singles = np.stack([_alone(model, p) for p in (a, b, c)])
    order = [a, b, c, b, a]
    result = model.embed_images(order, batch_size=batch_size)
    np.testing.assert_allclose(result.embeddings, singles[[0, 1, 2, 1, 0]], rtol=0, atol=EXACT)
    assert np.asarray(result).shape == (5, DIM)  # __array__ gives the matrix
    assert len(result) == 5


# ------------------------------------------------------------- bad images


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    data = jpeg(folder / "whole.jpg", 60, 80, seed=3).read_bytes()
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    text = folder / "notes.jpg"
    text.write_text("this is a shopping list, not a photo\n")
    return {
        "missing": folder / "no-such-image.jpg",
        "empty": empty,
        "truncated": truncated,
        "text": text,
        "large": png_photo(folder / "large.png", 100, 100, seed=4),  # 10,000 pixels
    }


@pytest.mark.parametrize("batch_size", [16, 3])
def test_bad_images_are_reported_and_never_sink_the_batch(
    tiny_hf: Path, pics: list[Path], bad_files: dict[str, Path], batch_size: int
) -> None:
    model = handspring.load(tiny_hf, max_pixels=5_000)
    good_array = photo_array(40, 50, seed=20)
    random_bytes = b"\x00\xff" + np.random.default_rng(5).bytes(254)
    items: list[ImageInput] = [
        pics[0],  # 0 good
        str(bad_files["missing"]),  # 1
        bad_files["empty"],  # 2
        good_array,  # 3 good
        bad_files["truncated"],  # 4
        bad_files["text"],  # 5
        random_bytes,  # 6
        Image.open(pics[1]),  # 7 good
        bad_files["large"],  # 8
        np.zeros((20, 20, 3), np.float32),  # 9
        pics[2],  # 10 good
    ]
    expected = {  # row -> (item name, reason pattern)
        1: (str(bad_files["missing"]), r"^file not found$"),
        2: (str(bad_files["empty"]), r"^empty file \(0 bytes\)$"),
        4: (str(bad_files["truncated"]), r"^truncated: the image data ends early"),
        5: (str(bad_files["text"]), r"^not an image: looks like a text file"),
        6: ("<bytes #6>", r"^not an image"),
        8: (str(bad_files["large"]), r"^too large: 100x100 = 10,000 pixels.*5,000"),
        9: ("<array #9>", r"^unsupported array float32 \(20, 20, 3\)"),
    }
    result = model.embed_images(items, batch_size=batch_size)

    assert result.embeddings.shape == (len(items), DIM)
    assert sorted(result.error_index) == sorted(expected)
    assert len(result.errors) == len(expected)
    for row, error in zip(result.error_index, result.errors, strict=True):
        name, reason = expected[row]
        assert isinstance(error, ImageError)
        assert error.item == name
        detail = f" ({error.detail})" if error.detail else ""
        assert str(error) == f"{name}: {error.reason}{detail}"
        assert re.search(reason, error.reason), (row, error.reason)
        assert np.isnan(result.embeddings[row]).all()
    ok = np.array([row not in expected for row in range(len(items))])
    np.testing.assert_array_equal(result.ok, ok)
    for row in np.flatnonzero(ok):
        assert _max_abs(result.embeddings[row], _alone(model, items[row])) <= EXACT, row


def test_only_bad_images_give_all_nan(model: Model, bad_files: dict[str, Path]) -> None:
    result = model.embed_images([bad_files["missing"], bad_files["empty"]])
    assert result.embeddings.shape == (2, DIM)
    assert np.isnan(result.embeddings).all()
    assert result.error_index == [0, 1]
    assert not result.ok.any()


# --------------------------------------------------------------- streaming


def _recorded(items: list[T]) -> tuple[Iterator[T], list[int]]:
    """A generator over `items`, and the list of indices it has handed out so far."""
    pulled: list[int] = []

    def stream() -> Iterator[T]:
        for i, item in enumerate(items):
            pulled.append(i)
            yield item

    return stream(), pulled


def test_iter_embed_images_streams_a_generator(model: Model, pics: list[Path]) -> None:
    items = [pics[i % 3] for i in range(7)]
    stream, pulled = _recorded(items)
    batches = model.iter_embed_images(stream, batch_size=3)
    first = next(batches)
    # Lazy: at most the next batch is read ahead to decode it while this one runs.
    assert len(pulled) <= 6
    rest = list(batches)
    assert [len(b) for b in [first, *rest]] == [3, 3, 1]
    streamed = np.concatenate([b.embeddings for b in [first, *rest]])
    np.testing.assert_allclose(streamed, model.embed_images(items).embeddings, rtol=0, atol=EXACT)


def test_iter_embed_images_on_an_endless_generator(model: Model, pics: list[Path]) -> None:
    def endless() -> Iterator[ImageInput]:
        for i in itertools.count():
            yield b"not an image" if i == 4 else pics[i % 3]

    batches = list(itertools.islice(model.iter_embed_images(endless(), batch_size=3), 3))
    assert [len(b) for b in batches] == [3, 3, 3]
    # Each batch reports its own rows; the item name counts from the start of the stream.
    assert [b.error_index for b in batches] == [[], [1], []]
    assert batches[1].errors[0].item == "<bytes #4>"


def test_iter_embed_texts_streams_a_generator(model: Model) -> None:
    texts = [f"photo number {i} of {'a very ' * (i % 7)}big cat" for i in range(70)]
    stream, pulled = _recorded(texts)
    chunks = model.iter_embed_texts(stream, batch_size=4)
    first = next(chunks)
    assert len(pulled) < len(texts)  # not read to the end before the first result
    parts = [first, *chunks]
    sizes = [len(p) for p in parts]
    assert sum(sizes) == len(texts)
    assert len(parts) > 1
    # Chunks of one fixed size (a multiple of batch_size), the last one shorter.
    assert len(set(sizes[:-1])) == 1 and sizes[0] % 4 == 0 and sizes[-1] <= sizes[0]
    np.testing.assert_allclose(
        np.concatenate(parts), model.embed_texts(texts), rtol=0, atol=TEXT_TOL
    )


def test_empty_inputs_give_empty_matrices(model: Model) -> None:
    images = model.embed_images([])
    assert images.embeddings.shape == (0, DIM)
    assert images.embeddings.dtype == np.float32
    assert images.errors == [] and images.ok.shape == (0,)
    texts = model.embed_texts([])
    assert texts.shape == (0, DIM) and texts.dtype == np.float32
    assert model.embed_texts(iter([])).shape == (0, DIM)
    assert list(model.iter_embed_images(iter([]))) == []


# ------------------------------------------------------------------- texts


def test_text_order_survives_length_sorting(model: Model) -> None:
    texts = [*TEXTS, "cat", "a photo of a cat on a red sofa in the afternoon sun"]
    singles = np.concatenate([model.embed_texts([t]) for t in texts])
    for batch_size in (32, 3):
        batch = model.embed_texts(texts, batch_size=batch_size)
        assert batch.shape == (len(texts), DIM)
        assert _max_abs(batch, singles) <= TEXT_TOL, batch_size
    # The texts are not all alike: the comparison above could fail.
    assert _max_abs(singles[0], singles[1]) > 1e-3


def test_text_vector_does_not_depend_on_its_batch(model: Model) -> None:
    target = "a photo of a cat"
    with_short = model.embed_texts([target, "dog"])[0]
    with_long = model.embed_texts(["word " * 60, target, "a b c d e f g h i j k l m n o p"])[1]
    alone = model.embed_texts([target])[0]
    assert _max_abs(with_short, alone) <= TEXT_TOL
    assert _max_abs(with_long, alone) <= TEXT_TOL


def test_normalize(model: Model, pics: list[Path]) -> None:
    texts = ["a cat", "a dog on a skateboard", ""]
    unit = model.embed_texts(texts, normalize=True)
    raw = model.embed_texts(texts, normalize=False)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1, atol=1e-5)
    assert np.abs(np.linalg.norm(raw, axis=1) - 1).max() > 1e-2
    np.testing.assert_allclose(
        unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=0, atol=1e-6
    )
    image_unit = model.embed_images(pics, normalize=True).embeddings
    image_raw = model.embed_images(pics, normalize=False).embeddings
    np.testing.assert_allclose(np.linalg.norm(image_unit, axis=1), 1, atol=1e-5)
    assert np.abs(np.linalg.norm(image_raw, axis=1) - 1).max() > 1e-2


@pytest.mark.parametrize(
    "texts", ["a single string", ["fine", 3], ["fine", b"bytes"], [None]], ids=repr
)
def test_non_text_input_is_a_type_error(model: Model, texts: object) -> None:
    with pytest.raises(TypeError):
        model.embed_texts(texts)  # type: ignore[arg-type]


def test_over_long_text_is_truncated(model: Model) -> None:
    thousand = model.embed_texts(["word " * 1000])
    assert thousand.shape == (1, DIM) and np.isfinite(thousand).all()
    # Both are cut at the context length, so they are the same tokens.
    assert _max_abs(thousand, model.embed_texts(["word " * 200])) <= TEXT_TOL
    assert _max_abs(thousand, model.embed_texts(["word " * 5])) > 1e-3


# -------------------------------------------------------------- zero-shot


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("template", [None, "{} in a painting"])
def test_classify_is_scaled_cosine_softmax(
    model: Model, pics: list[Path], template: str | None
) -> None:
    labels = ["cat", "dog", "red car", "tree"]
    kwargs = {} if template is None else {"template": template}
    probs, images = model.classify(pics, labels, **kwargs)
    assert probs.shape == (len(pics), len(labels))
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-6)
    assert model.logit_scale == pytest.approx(1 / 0.07, rel=1e-6)  # exp of the stored log
    image_emb = model.embed_images(pics).embeddings
    text_emb = model.embed_texts([(template or "a photo of a {}.").format(x) for x in labels])
    expected = _softmax(model.logit_scale * image_emb @ text_emb.T)
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(images.embeddings, image_emb, rtol=0, atol=EXACT)


def test_classify_reports_unreadable_images(model: Model, pics: list[Path]) -> None:
    labels = ["cat", "dog"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        probs, images = model.classify([pics[0], b"junk bytes", pics[1]], labels)
    assert [e.item for e in images.errors] == ["<bytes #1>"]
    assert images.error_index == [1]
    assert np.isnan(probs[1]).all()
    good, _ = model.classify([pics[0], pics[1]], labels)
    np.testing.assert_allclose(probs[[0, 2]], good, rtol=0, atol=1e-6)


def test_classify_with_unreadable_image_warns_nothing(model: Model, pics: list[Path]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.classify([b"junk bytes", pics[0]], ["cat", "dog"])


def test_classify_needs_labels(model: Model, pics: list[Path]) -> None:
    with pytest.raises(ValueError, match="at least one label"):
        model.classify(pics, [])


def test_classify_no_images(model: Model) -> None:
    probs, images = model.classify([], ["cat", "dog"])
    assert probs.shape == (0, 2)
    assert images.embeddings.shape == (0, DIM)


# -------------------------------------------------------------- modalities


def test_image_only_model_refuses_texts(tiny_hf: Path, pics: list[Path]) -> None:
    model = handspring.load(tiny_hf, modalities=["image"])
    assert model.modalities == ("image",) and "text" not in model.towers
    assert model.embed_images(pics[:1]).embeddings.shape == (1, DIM)
    with pytest.raises(HandspringError, match="text tower is not loaded"):
        model.embed_texts(["a cat"])


def test_text_only_model_refuses_images(tiny_hf: Path, pics: list[Path]) -> None:
    model = handspring.load(tiny_hf, modalities=["text"])
    assert model.modalities == ("text",) and "image" not in model.towers
    assert model.embed_texts(["a cat"]).shape == (1, DIM)
    with pytest.raises(HandspringError, match="image tower is not loaded"):
        model.embed_images(pics[:1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"modalities": []}, "modalities"),
        ({"modalities": ["audio"]}, "modalities"),
        ({"modalities": ["image", "video"]}, "modalities"),
        ({"precision": "int4"}, "precision"),
    ],
    ids=repr,
)
def test_bad_load_options_are_value_errors(
    tiny_hf: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        handspring.load(tiny_hf, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------- graph cache


def _unique_copy(src: Path, dst: Path, nudge: float) -> Path:
    """A copy of the checkpoint with one weight changed, so its graphs are not cached yet."""
    shutil.copytree(src, dst)
    _set_weight(dst, nudge)
    return dst


def _set_weight(folder: Path, nudge: float) -> None:
    weights = load_file(folder / "model.safetensors")
    for key in ("visual_projection.weight", "text_projection.weight"):
        weights[key][0, 0] += nudge
    save_file(weights, str(folder / "model.safetensors"))


def _image(model: Model) -> Tower:
    return model.towers["image"]


def _towers_built(model: Model) -> tuple[bool, bool]:
    return model.towers["image"].built, model.towers["text"].built


def test_graph_cache_reuses_and_rebuilds(tiny_hf: Path, pics: list[Path], tmp_path: Path) -> None:
    folder = _unique_copy(tiny_hf, tmp_path / "ckpt", nudge=0.25)
    first = handspring.load(folder)
    assert _towers_built(first) == (True, True)
    second = handspring.load(folder)
    assert _towers_built(second) == (False, False)
    assert _image(second).graph_path == _image(first).graph_path
    before = second.embed_images(pics[:1]).embeddings
    np.testing.assert_allclose(before, first.embed_images(pics[:1]).embeddings, atol=EXACT)

    _set_weight(folder, 0.5)  # one weight changes: the cached graph must not be reused
    changed = handspring.load(folder)
    assert _towers_built(changed) == (True, True)
    assert _image(changed).graph_path != _image(first).graph_path
    assert _max_abs(changed.embed_images(pics[:1]).embeddings, before) > 1e-4

    int8 = handspring.load(folder, precision="int8")
    assert _towers_built(int8) == (True, True)
    assert _image(int8).graph_path != _image(changed).graph_path
    assert _towers_built(handspring.load(folder, precision="int8")) == (False, False)


def test_stale_staging_folder_does_not_break_loading(
    tiny_hf: Path, pics: list[Path], tmp_path: Path
) -> None:
    folder = _unique_copy(tiny_hf, tmp_path / "ckpt", nudge=-0.125)
    built = handspring.load(folder, modalities=["image"])
    assert _image(built).built
    expected = built.embed_images(pics).embeddings
    graph_dir = _image(built).graph_path.parent
    key = graph_dir.name
    del built
    # A crash mid-build leaves a staging folder and no entry under the key.
    shutil.rmtree(graph_dir)
    staging = graph_dir.parent / f".{key}.junk"
    staging.mkdir()
    (staging / "model.onnx").write_bytes(b"\x08\x07\x12\x04half")
    (staging / "model.onnx.data").write_bytes(b"\x00" * 100)
    # ... and perhaps a half-written fingerprint memo, from an older version.
    (cache_root() / "fingerprints.json").write_text('{"/some/file:12')

    reloaded = handspring.load(folder, modalities=["image"])
    assert _image(reloaded).built
    assert _image(reloaded).graph_path == graph_dir / "model.onnx"
    np.testing.assert_allclose(reloaded.embed_images(pics).embeddings, expected, atol=EXACT)
    assert not _image(handspring.load(folder, modalities=["image"])).built


# ----------------------------------------------------------------- threads


@pytest.mark.parametrize("threads", [1, 3])
def test_threads_are_honoured(tiny_hf: Path, threads: int) -> None:
    model = handspring.load(tiny_hf, threads=threads)
    for tower in model.towers.values():
        assert tower.session.get_session_options().intra_op_num_threads == threads


# -------------------------------------------------------------------- EXIF


def test_exif_orientation(tiny_hf: Path, model: Model, tmp_path: Path) -> None:
    path = jpeg(tmp_path / "rotated.jpg", 48, 80, seed=7, orientation=6)
    with Image.open(path) as opened:
        assert opened.getexif()[ORIENTATION_TAG] == 6
        raw = np.asarray(opened.convert("RGB"))
        upright = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    assert raw.shape == (48, 80, 3) and upright.shape == (80, 48, 3)
    np.testing.assert_array_equal(upright, np.rot90(raw, -1))  # 6: turn 90 degrees clockwise

    as_upright, as_raw = _alone(model, upright), _alone(model, raw)
    assert _max_abs(as_upright, as_raw) > 1e-3
    assert _max_abs(_alone(model, path), as_upright) <= EXACT
    assert _max_abs(_alone(model, path.read_bytes()), as_upright) <= EXACT

    ignoring = handspring.load(tiny_hf, modalities=["image"], exif_orientation=False)
    assert _max_abs(_alone(ignoring, path), as_raw) <= EXACT
    assert _max_abs(_alone(ignoring, path.read_bytes()), as_raw) <= EXACT


# ------------------------------------------------------------- fast decode


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_fast_decode_is_close_to_exact(tiny_hf: Path, model: Model, tmp_path: Path) -> None:
    picture = Image.fromarray(photo_array(1500, 2000, seed=8))
    paths = []
    for orientation in (None, 6, 3):
        path = tmp_path / f"big-{orientation}.jpg"
        params: dict[str, object] = {"quality": 90}
        if orientation is not None:
            exif = Image.Exif()
            exif[ORIENTATION_TAG] = orientation
            params["exif"] = exif.tobytes()
        picture.save(path, format="JPEG", **params)
        paths.append(path)
    fast = handspring.load(tiny_hf, modalities=["image"], fast_decode=True)
    fast_vectors = fast.embed_images(paths).embeddings
    exact_vectors = model.embed_images(paths).embeddings
    for path, f, e in zip(paths, fast_vectors, exact_vectors, strict=True):
        assert _cosine(f, e) >= 0.999, path.name
    # Draft decoding really ran (it is not bit-identical to a full decode).
    assert not np.array_equal(fast_vectors, exact_vectors)


# ----------------------------------------------------------------- layouts


@pytest.mark.parametrize("layout", ["tiny_st", "tiny_open_clip"])
def test_other_layouts_load_through_the_same_api(
    layout: str, request: pytest.FixtureRequest, pics: list[Path]
) -> None:
    model = handspring.load(request.getfixturevalue(layout))
    assert model.dim == DIM
    assert model.modalities == ("image", "text")
    image = model.embed_images(pics[:1])
    text = model.embed_texts(["a cat"])
    for vector in (image.embeddings[0], text[0]):
        assert vector.shape == (DIM,)
        assert np.isfinite(vector).all()
        assert np.linalg.norm(vector) == pytest.approx(1, abs=1e-5)
    probs, _ = model.classify(pics[:1], ["cat", "dog"])
    assert probs.shape == (1, 2)


@pytest.fixture(scope="module")
def many_patches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP whose images are 145 token rows each (12 x 12 patches and the class
    token): at int8 its image tower runs them one at a time, quantized per item."""
    vision = dataclasses.replace(TINY.vision, image_size=96)
    cfg = dataclasses.replace(TINY, vision=vision)
    return write_hf_clip(tmp_path_factory.mktemp("many_patches"), cfg, seed=3)


@pytest.mark.parametrize("checkpoint", ["tiny_hf", "many_patches"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_vectors_do_not_depend_on_the_rest_of_the_batch(
    request: pytest.FixtureRequest, checkpoint: str, precision: str
) -> None:
    """Bit for bit: int8 activations are quantized per row, or per item where items run
    one at a time, so no other image or text in a batch (or its padding) can change a
    row's result."""
    model = handspring.load(request.getfixturevalue(checkpoint), precision=precision)
    arrays = [photo_array(40 + 7 * i, 50 + 3 * i, seed=i) for i in range(6)]
    together = model.embed_images(arrays, batch_size=6).embeddings
    for i, array in enumerate(arrays):
        np.testing.assert_array_equal(model.embed_images([array]).embeddings[0], together[i])
    texts = ["a cat", "a much longer sentence about a dog running on a beach", "x", ""]
    batch = model.embed_texts(texts, batch_size=4)
    for i, text in enumerate(texts):
        np.testing.assert_array_equal(model.embed_texts([text])[0], batch[i])


def test_int8_of_an_unmeasured_clip_warns_per_tower(
    tiny_hf: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """CLIP goes through the same int8 gate as every family: a folder the registry has
    never measured loads, with a warning naming each tower."""
    with caplog.at_level("WARNING", logger="handspring"):
        handspring.load(tiny_hf, precision="int8")
    for tower in ("image", "text"):
        assert f"int8 accuracy has not been measured for the {tower} tower" in caplog.text


def test_images_of_many_rows_run_alone_with_one_int8_scale_each(
    many_patches: Path, tiny_hf: Path
) -> None:
    """An image tower of 128 rows or more per item runs items one per session run, its
    int8 activations quantized per tensor (ONNX Runtime folds that scale into the GEMM);
    a tower of fewer rows batches them with one scale per row."""
    import onnx

    def ops(tower: Tower) -> set[str]:
        graph = onnx.load(str(tower.graph_path), load_external_data=False).graph
        return {node.op_type for node in graph.node}

    model = handspring.load(many_patches, precision="int8")
    fp32 = handspring.load(many_patches, precision="fp32")
    image, text = model.towers["image"], model.towers["text"]
    assert image.run_rows == 1
    assert "DynamicQuantizeLinear" in ops(image) and "ReduceMax" not in ops(image)
    assert "ReduceMax" in ops(text) and "DynamicQuantizeLinear" not in ops(text)
    few_rows = handspring.load(tiny_hf, precision="int8").towers["image"]  # 17 rows per image
    assert few_rows.run_rows > 1 and "ReduceMax" in ops(few_rows)
    arrays = [photo_array(90 + 9 * i, 120, seed=i) for i in range(4)]
    got = model.embed_images(arrays).embeddings
    want = fp32.embed_images(arrays).embeddings
    cosines = (got * want).sum(axis=1)
    print(f"int8 per item vs fp32, tiny 145-row CLIP: min cosine {cosines.min():.5f}")
    assert cosines.min() >= 0.99


def test_prepare_then_run_equals_embed_images(model: Model, pics: list[Path]) -> None:
    """A tower's two halves, as the server drives them, give what `embed_images` gives."""
    tower = model.towers["image"]
    pixels = [tower.prepare(p, str(p), {}) for p in pics]
    raw = tower.run(pixels)
    assert np.array_equal(l2_normalize(raw), model.embed_images(pics).embeddings)
    with pytest.raises(ImageError, match=r"^not-an-image: "):
        tower.prepare(b"definitely not an image", "not-an-image", {})


def test_count_tokens_reports_truncation(model: Model) -> None:
    lengths, truncated = model.count_tokens(["a photo", "", "word " * 200])
    context = model.towers["text"].tokenizer.context_length  # type: ignore[attr-defined]
    assert lengths.tolist() == [4, 2, context]
    assert truncated.tolist() == [False, False, True]
    assert model.max_tokens == context
    with pytest.raises(ValueError, match="no prompt named 'query'"):
        model.count_tokens(["x"], prompt_name="query")


@pytest.mark.parametrize("spinning", [True, False])
def test_spinning_reaches_every_session(tiny_hf: Path, spinning: bool) -> None:
    model = handspring.load(tiny_hf, spinning=spinning)
    assert model.modalities == ("image", "text")
    for tower in model.towers.values():
        options = tower.session.get_session_options()
        entry = options.get_session_config_entry("session.intra_op.allow_spinning")
        assert entry == ("1" if spinning else "0")


# A run from a built graph cache imports only the runtime-only install's packages
# (requirements-runtime.txt); what it leaves out is refused with a message naming it.
RUNTIME_ONLY = """
import json, sys
at_start = set(sys.modules)  # what the interpreter loaded itself (site, .pth hooks)
for left_out in ("onnx", "huggingface_hub", "sentencepiece"):
    sys.modules[left_out] = None  # `import` now fails, as where it is not installed
import numpy as np
import handspring
from handspring.errors import HandspringError
try:
    model = handspring.load(sys.argv[1], precision=sys.argv[2])
except HandspringError as exc:
    print("refused:", exc)
    raise SystemExit(3)
vectors = np.concatenate([model.embed_texts(["a cat"]), model.embed_images([sys.argv[3]]).embeddings])
np.save(sys.argv[4], vectors)
loaded = {name for name, module in sys.modules.items() if module is not None} - at_start
print(json.dumps(sorted({name.split(".")[0] for name in loaded})))
"""
RUNTIME_REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements-runtime.txt"


def requirement_name(line: str) -> str:
    return re.split(r"[<>=!~; \[]", line.strip(), maxsplit=1)[0].lower()


def runtime_requirements() -> list[str]:
    lines = RUNTIME_REQUIREMENTS.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_a_run_from_the_graph_cache_imports_only_the_runtime_install(
    tiny_hf: Path, pics: list[Path], tmp_path: Path
) -> None:
    folder = _unique_copy(tiny_hf, tmp_path / "ckpt", nudge=0.125)
    out = tmp_path / "vectors.npy"
    argv = [sys.executable, "-c", RUNTIME_ONLY, str(folder)]
    cold = subprocess.run([*argv, "int8", str(pics[0]), str(out)], capture_output=True, text=True)
    assert cold.returncode == 3, cold.stderr
    assert "is not in the graph cache" in cold.stdout and "pip install onnx" in cold.stdout
    built = handspring.load(folder, precision="int8")  # builds, with onnx
    warm = subprocess.run([*argv, "int8", str(pics[0]), str(out)], capture_output=True, text=True)
    assert warm.returncode == 0, warm.stdout + warm.stderr
    expected = np.concatenate(
        [built.embed_texts(["a cat"]), built.embed_images(pics[:1]).embeddings]
    )
    np.testing.assert_array_equal(np.load(out), expected)
    # Every module the run imported that belongs to an installed distribution belongs to
    # one the runtime-only install has.
    owners = importlib.metadata.packages_distributions()
    imported = json.loads(warm.stdout.splitlines()[-1])
    used = {dist.lower() for name in imported for dist in owners.get(name, [])}
    assert used, imported
    runtime = {requirement_name(line) for line in runtime_requirements()}
    assert used <= runtime | {"handspring"}, used - runtime
    repo_id = subprocess.run(
        [sys.executable, "-c", RUNTIME_ONLY, "some-org/some-model", "fp32", "-", "-"],
        capture_output=True,
        text=True,
    )
    assert repo_id.returncode == 3, repo_id.stderr
    assert "needs huggingface_hub, which this install leaves out" in repo_id.stdout


def test_the_runtime_install_has_the_package_floors() -> None:
    import tomllib

    project = tomllib.loads((RUNTIME_REQUIREMENTS.parent / "pyproject.toml").read_text())
    declared = {requirement_name(r): r for r in project["project"]["dependencies"]}
    lines = runtime_requirements()
    assert lines, "requirements-runtime.txt lists no package"
    for line in lines:
        assert declared.get(requirement_name(line)) == line, (line, declared)
