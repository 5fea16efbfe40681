"""Image decoding and preprocessing: equal to the transformers PIL processor and to open_clip.

Every image is generated here (tests/support/images.py). Tests marked `reference` compare with
transformers / open_clip; the others need only numpy and Pillow.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from handspring.errors import ImageError
from handspring.preprocess import decode as decode_module
from handspring.preprocess import image as transform_module
from handspring.preprocess.decode import DEFAULT_MAX_PIXELS, decode_image, describe_item
from handspring.preprocess.image import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ImageTransform
from tests.support import images

TOLERANCE = 1e-6
ONE_LEVEL = 1 / 255 / min(OPENAI_CLIP_STD)  # one 8-bit step, in normalized units
CLIP = ImageTransform(224, None, (224, 224), OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)


class Reference:
    """transformers' PIL-backend CLIP processor, giving one float32 [3, H, W] array."""

    def __init__(self, **kwargs: Any) -> None:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        self.processor = CLIPImageProcessorPil(**kwargs)

    def __call__(self, image: Any, **kwargs: Any) -> np.ndarray:
        return self.processor(image, return_tensors="np", **kwargs)["pixel_values"][0]

    def saved_config(self) -> dict[str, Any]:
        """As a checkpoint stores it: preprocessor_config.json."""
        return json.loads(self.processor.to_json_string())


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference()


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.dtype == np.float32
    return float(np.abs(a - b).max())


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a64 @ b64 / np.linalg.norm(a64) / np.linalg.norm(b64))


# name -> writer(path); sizes include 1x1, extreme aspect ratios and sizes below the crop.
KINDS: dict[str, Callable[[Path], Path]] = {
    "jpeg": lambda d: images.jpeg(d / "a.jpg", 300, 400),
    "jpeg_portrait_odd": lambda d: images.jpeg(d / "a.jpg", 401, 299, seed=3),
    "rgba": lambda d: images.png_rgba(d / "a.png", 250, 260),
    "la": lambda d: images.png_la(d / "a.png", 230, 500),
    "gray": lambda d: images.png_gray(d / "a.png", 500, 230),
    "palette": lambda d: images.png_palette(d / "a.png", 240, 300, transparent=False),
    "palette_transparent": lambda d: images.png_palette(d / "a.png", 240, 300, transparent=True),
    "cmyk_jpeg": lambda d: images.cmyk_jpeg(d / "a.jpg", 300, 301),
    "png_16bit": lambda d: images.png_16bit(d / "a.png", 300, 300),
    "bilevel": lambda d: images.bilevel_png(d / "a.png", 100, 100),
    "one_pixel": lambda d: images.jpeg(d / "a.jpg", 1, 1),
    "one_by_500": lambda d: images.png_gray(d / "a.png", 1, 500),
    "3000_by_7": lambda d: images.jpeg(d / "a.jpg", 3000, 7),
    "below_crop": lambda d: images.png_rgba(d / "a.png", 100, 150),
}


@pytest.mark.reference
@pytest.mark.parametrize("kind", list(KINDS))
def test_equals_pil_reference(kind: str, tmp_path: Path, reference: Reference) -> None:
    path = KINDS[kind](tmp_path)
    ours = CLIP(decode_image(path, item=str(path)))
    with Image.open(path) as opened:
        assert _max_abs(ours, reference(opened)) <= TOLERANCE


@pytest.mark.reference
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(orientation: int, tmp_path: Path, reference: Reference) -> None:
    from transformers.image_utils import load_image

    path = images.jpeg(tmp_path / "o.jpg", 200, 330, seed=orientation, orientation=orientation)
    upright = CLIP(decode_image(path, item="o"))
    assert _max_abs(upright, reference(load_image(str(path)))) <= TOLERANCE
    as_stored = CLIP(decode_image(path, item="o", exif_orientation=False))
    with Image.open(path) as opened:
        assert _max_abs(as_stored, reference(opened)) <= TOLERANCE
    # The caller's own PIL image gets the same treatment, and is left as it was.
    with Image.open(path) as opened:
        assert _max_abs(CLIP(decode_image(opened, item="o")), upright) == 0
        assert opened.getexif().get(images.ORIENTATION_TAG) == orientation


CONFIGS: dict[str, dict[str, Any]] = {
    "336": {"size": {"shortest_edge": 336}, "crop_size": {"height": 336, "width": 336}},
    "squash": {"size": {"height": 224, "width": 224}, "do_center_crop": False},
    "squash_rect_crop": {"size": {"height": 240, "width": 200}, "crop_size": 180},
    "crop_pads": {"size": {"shortest_edge": 200}, "crop_size": {"height": 256, "width": 256}},
    "no_resize": {"do_resize": False, "crop_size": {"height": 120, "width": 90}},
    "bilinear_imagenet": {
        "resample": 2,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
    },
    "no_normalize_no_rescale": {"do_normalize": False, "do_rescale": False},
}


@pytest.mark.reference
@pytest.mark.parametrize("name", list(CONFIGS))
def test_from_hf_config(name: str, tmp_path: Path) -> None:
    reference = Reference(**CONFIGS[name])
    transform = ImageTransform.from_hf(reference.saved_config())
    assert transform == ImageTransform.from_hf(reference.processor.to_dict())
    for i, (h, w) in enumerate([(300, 400), (401, 299), (77, 61)]):
        image = Image.fromarray(images.photo_array(h, w, seed=i))
        assert _max_abs(transform(image), reference(image)) <= TOLERANCE


def test_from_hf_reads_every_size_form() -> None:
    assert ImageTransform.from_hf({"size": 224, "crop_size": 224}) == CLIP
    assert ImageTransform.from_hf({}) == CLIP
    squash = ImageTransform.from_hf({"size": {"height": 384, "width": 384}, "resample": 2})
    assert (squash.resize_to, squash.resample, squash.output_size) == (
        (384, 384),
        "bilinear",
        (224, 224),
    )
    with pytest.raises(ValueError, match="unsupported image size"):
        ImageTransform.from_hf({"size": {"shortest_edge": 224, "longest_edge": 448}})


@pytest.mark.reference
def test_exif_on_png_with_alpha(tmp_path: Path, reference: Reference) -> None:
    from PIL import ImageOps

    exif = Image.Exif()
    exif[images.ORIENTATION_TAG] = 6
    rgba = Image.fromarray(np.dstack([images.photo_array(120, 200), images.alpha_array(120, 200)]))
    path = images.save(rgba, tmp_path / "o.png", exif=exif.tobytes())
    upright = decode_image(path, item="o")
    assert upright.size == (120, 200)
    with Image.open(path) as opened:
        expected = reference(ImageOps.exif_transpose(opened))  # rotated, then composited
    assert _max_abs(CLIP(upright), expected) <= TOLERANCE
    # The tag is gone from the result: decoding it again does not rotate it twice.
    assert decode_image(upright, item="o").size == (120, 200)


@pytest.mark.reference
@pytest.mark.parametrize("layout", ["rgb", "gray", "gray_hw1", "rgba"])
def test_arrays(layout: str, reference: Reference) -> None:
    rgb = images.photo_array(90, 120, seed=5)
    alpha = images.alpha_array(90, 120)
    array = {
        "rgb": rgb,
        "gray": rgb[..., 1].copy(),
        "gray_hw1": rgb[..., 1:2].copy(),
        "rgba": np.dstack([rgb, alpha]),
    }[layout]
    ours = CLIP(decode_image(array, item="<array #0>"))
    if array.ndim == 2 or array.shape[2] == 1:  # transformers takes no 2-D array
        expected = reference(Image.fromarray(array.reshape(array.shape[:2])))
    else:
        expected = reference(array, input_data_format="channels_last")
    assert _max_abs(ours, expected) <= TOLERANCE


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((8, 8, 3), np.float32),
        np.zeros((8, 8, 2), np.uint8),
        np.zeros((2, 8, 8, 3), np.uint8),
        np.zeros((0, 8, 3), np.uint8),
        np.zeros(8, np.uint8),
    ],
)
def test_bad_arrays(array: np.ndarray) -> None:
    with pytest.raises(ImageError, match=r"<array #2>: unsupported array .* expected uint8"):
        decode_image(array, item=describe_item(array, 2))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated_jpeg(tmp_path: Path) -> Path:
    data = images.jpeg(tmp_path / "full.jpg", 300, 400).read_bytes()
    return _write(tmp_path / "cut.jpg", data[: len(data) // 2])


BAD_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (lambda d: d / "nope.jpg", "file not found"),
    "empty": (lambda d: _write(d / "empty.jpg", b""), r"empty file \(0 bytes\)"),
    "truncated": (_truncated_jpeg, "truncated: the image data ends early"),
    "random_bytes": (
        lambda d: _write(d / "noise.jpg", np.random.default_rng(0).bytes(4096)),
        "not an image, or in a format Pillow cannot read",
    ),
    "text": (lambda d: _write(d / "notes.png", b"hello, world\n" * 20), "looks like a text file"),
    "directory": (lambda d: d, "is a directory"),
    "a few bytes": (lambda d: _write(d / "gif.gif", b"GIF8"), r"only 4 bytes \(b'GIF8'\)"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_name_item_and_reason(case: str, tmp_path: Path) -> None:
    make, reason = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(ImageError, match=reason) as raised:
        decode_image(path, item=str(path))
    assert raised.value.item == str(path)
    assert str(raised.value).startswith(f"{path}: ")


HEIC_HEADER_ONLY = b"\0\0\0\x18ftypheic" + bytes(64)


def test_heic_without_the_plugin_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "ID", [i for i in Image.ID if i != "HEIF"])
    path = _write(tmp_path / "p.heic", HEIC_HEADER_ONLY)
    with pytest.raises(ImageError, match="HEIC/HEIF image: Pillow reads it only with the pillow"):
        decode_image(path, item=str(path))


def test_a_damaged_heic_with_the_plugin_is_corrupt(tmp_path: Path) -> None:
    pytest.importorskip("pillow_heif").register_heif_opener()
    path = _write(tmp_path / "p.heic", HEIC_HEADER_ONLY)
    with pytest.raises(ImageError, match="corrupt or truncated HEIC/HEIF image"):
        decode_image(path, item=str(path))


def test_a_fifo_is_refused_never_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    # A writer that would unblock a reader, so that a regression fails here instead of
    # hanging; it is itself released by a non-blocking reader at the end.
    writer = threading.Thread(target=lambda: open(fifo, "wb").close(), daemon=True)
    writer.start()
    try:
        with pytest.raises(ImageError, match=r"not a regular file \(a FIFO\)"):
            decode_image(fifo, item=str(fifo))
    finally:
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # held until the writer is done
        writer.join()
        os.close(reader)


def test_bad_bytes_and_types() -> None:
    with pytest.raises(ImageError, match=r"^<bytes #3>: empty data \(0 bytes\)"):
        decode_image(b"", item=describe_item(b"", 3))
    with pytest.raises(ImageError, match=r"^<bytes #0>: not an image"):
        decode_image(b"\x00\xff" * 100, item="<bytes #0>")
    with pytest.raises(ImageError, match=r"^<int #1>: unsupported input type int"):
        decode_image(7, item=describe_item(7, 1))  # type: ignore[arg-type]


def test_pixel_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    path = images.jpeg(tmp_path / "big.jpg", 300, 400)
    with pytest.raises(ImageError, match=r"too large: 400x300 = 120,000 pixels .* 100,000 pixels"):
        decode_image(path, item=str(path), max_pixels=100_000)
    image = Image.fromarray(images.photo_array(300, 400))
    with pytest.raises(ImageError, match="over the limit"):
        decode_image(image, item="<PIL image #0>", max_pixels=100_000)
    assert decode_image(path, item=str(path), max_pixels=120_000).size == (400, 300)
    assert DEFAULT_MAX_PIXELS >= 50_000_000  # a 48 MP phone photo must pass


def test_pillow_bomb_limit_becomes_image_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = images.jpeg(tmp_path / "big.jpg", 300, 400)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
    # Our own limit decides when one is given: Pillow's warning level does not get in the way.
    assert decode_image(path, item="big").size == (400, 300)
    # Without one, Pillow's warning level is an error, as is its error level (2x) always.
    # The reason gives the size and the limit, as the pixel limit's own does.
    with pytest.raises(ImageError) as caught:
        decode_image(path, item="big", max_pixels=None)
    assert caught.value.reason == (
        "too large: 400x300 = 120,000 pixels is over Pillow's decompression-bomb limit of "
        "100,000 pixels"
    )
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)  # refuses from 100,000
    with pytest.raises(ImageError) as caught:
        decode_image(path, item="big")
    assert caught.value.reason == (
        "too large: 400x300 = 120,000 pixels is over Pillow's decompression-bomb limit of "
        "100,000 pixels"
    )
    # Under a lower limit of ours, that is the one named, worded as `check_pixels` does.
    with pytest.raises(ImageError) as caught:
        decode_image(path, item="big", max_pixels=60_000)
    assert caught.value.reason == (
        "too large: 400x300 = 120,000 pixels is over the limit of 60,000 pixels"
    )


@pytest.mark.reference
def test_16bit_scaling_option(tmp_path: Path, reference: Reference) -> None:
    path = images.png_16bit(tmp_path / "deep.png", 120, 160)
    clipped = CLIP(decode_image(path, item="deep"))
    assert clipped.max() == CLIP(Image.new("RGB", (1, 1), "white")).max()  # as the reference
    scaled = CLIP(decode_image(path, item="deep", scale_16bit=True))
    eight_bit = images.png_gray(tmp_path / "gray.png", 120, 160)  # the same picture, 8-bit
    with Image.open(eight_bit) as opened:
        assert _max_abs(scaled, reference(opened)) <= TOLERANCE


DRAFT_CASES: dict[str, Callable[[Path], Path]] = {
    **{
        f"orientation_{o}": lambda d, o=o: images.jpeg(
            d / "p.jpg", 1003, 1361, seed=o, orientation=o
        )
        for o in (1, 2, 5, 6, 8)
    },
    "progressive": lambda d: images.jpeg(d / "p.jpg", 1003, 1361, orientation=6, progressive=True),
    "gray": lambda d: images.save(
        Image.fromarray(images.photo_array(1003, 1361)).convert("L"), d / "p.jpg", format="JPEG"
    ),
    "cmyk": lambda d: images.cmyk_jpeg(d / "p.jpg", 1003, 1361),
}


@pytest.mark.parametrize("case", list(DRAFT_CASES))
def test_draft_is_close_to_exact(case: str, tmp_path: Path) -> None:
    # Sides that are not multiples of 8 leave a partial block: the resize box must follow it.
    path = DRAFT_CASES[case](tmp_path)
    exact_image = decode_image(path, item="p")
    draft_image = decode_image(path, item="p", draft_shortest=CLIP.draft_size())
    assert min(draft_image.size) >= 448 and draft_image.width < exact_image.width
    exact, draft = CLIP(exact_image), CLIP(draft_image)
    assert _cosine(exact, draft) >= 0.9999
    assert float(np.abs(exact - draft).mean()) <= 0.5 * ONE_LEVEL
    # Once resized elsewhere, the image no longer carries the draft geometry.
    resized = draft_image.resize((448, 448))
    assert _max_abs(CLIP(resized), CLIP(Image.fromarray(np.asarray(resized)))) == 0


def test_draft_only_when_it_keeps_enough(tmp_path: Path) -> None:
    jpeg = images.jpeg(tmp_path / "p.jpg", 600, 800)
    assert decode_image(jpeg, item="p", draft_shortest=448).size == (800, 600)
    png = images.png_gray(tmp_path / "p.png", 1000, 1200)
    assert decode_image(png, item="p", draft_shortest=224).size == (1200, 1000)
    assert CLIP.draft_size() == 448
    assert (
        ImageTransform(None, (256, 384), None, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD).draft_size()
        == 768
    )
    assert (
        ImageTransform(None, None, (224, 224), OPENAI_CLIP_MEAN, OPENAI_CLIP_STD).draft_size()
        is None
    )


@pytest.mark.parametrize("method", list(decode_module._MOVE_POINT))
def test_draft_box_follows_each_transposition(method: Image.Transpose) -> None:
    w, h = 5, 3
    index = np.arange(w * h, dtype=np.int32).reshape(h, w)
    moved = np.asarray(Image.fromarray(index).transpose(method))
    for y in range(h):
        for x in range(w):
            mx, my = decode_module._MOVE_POINT[method](x + 0.5, y + 0.5, w, h)
            assert moved[int(my), int(mx)] == index[y, x]


def test_extreme_aspect_ratio_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    thin = Image.fromarray(images.photo_array(1, 500))
    exact = CLIP(thin)  # resizes to 224 x 112000
    monkeypatch.setattr(transform_module, "_MAX_RESIZED_PIXELS", 1_000_000)
    assert _max_abs(CLIP(thin), exact) <= ONE_LEVEL + TOLERANCE
    assert CLIP(Image.fromarray(images.photo_array(1, 100_000))).shape == (3, 224, 224)


@pytest.mark.reference
@pytest.mark.parametrize(
    "config",
    [
        {"size": 224},
        {"size": [224, 224], "interpolation": "bilinear"},
        {"size": 336, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        {"size": 224, "resize_mode": "squash"},
        {"size": [224, 200], "resize_mode": "squash"},
        {"size": 224, "resize_mode": "longest", "fill_color": 128},
        {"size": [256, 224], "resize_mode": "longest"},
        {"size": [224, 256]},
    ],
)
def test_open_clip_transforms(config: dict[str, Any]) -> None:
    import open_clip

    expected = open_clip.image_transform(
        config["size"],
        is_train=False,
        mean=config.get("mean"),
        std=config.get("std"),
        resize_mode=config.get("resize_mode"),
        interpolation=config.get("interpolation"),
        fill_color=config.get("fill_color", 0),
    )
    ours = ImageTransform.from_open_clip(config)
    # Odd differences (231 - 224 = 7) are where torchvision's crop rounding differs.
    for i, (h, w) in enumerate([(300, 400), (401, 299), (224, 231), (100, 150), (3000, 7)]):
        image = Image.fromarray(images.photo_array(h, w, seed=i))
        assert _max_abs(ours(image), expected(image).numpy()) <= TOLERANCE


@pytest.mark.reference
def test_open_clip_model_preprocess() -> None:
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    ours = ImageTransform.from_open_clip({"preprocess_cfg": model.visual.preprocess_cfg})
    for i, (h, w) in enumerate([(300, 400), (224, 231), (57, 80)]):
        image = Image.fromarray(images.photo_array(h, w, seed=i))
        assert _max_abs(ours(image), preprocess(image).numpy()) <= TOLERANCE


def test_crop_conventions_differ_where_they_should() -> None:
    pixels = images.photo_array(231, 227)
    for convention, top, left in [("transformers", 3, 1), ("torchvision", 4, 2)]:
        crop = ImageTransform(
            None, None, (224, 224), (0, 0, 0), (1, 1, 1), rescale_factor=1.0, convention=convention
        )
        out = crop(Image.fromarray(pixels))
        assert np.array_equal(out.transpose(1, 2, 0), pixels[top : top + 224, left : left + 224])
    # Padding: transformers puts the odd pixel first, torchvision last.
    small = np.full((3, 3, 3), 200, np.uint8)
    for convention, rows in [("transformers", slice(1, 4)), ("torchvision", slice(0, 3))]:
        pad = ImageTransform(
            None,
            None,
            (4, 3),
            (0, 0, 0),
            (1, 1, 1),
            rescale_factor=1.0,
            fill=7,
            convention=convention,
        )
        out = pad(Image.fromarray(small))[0]
        assert (out[rows] == 200).all() and (out == 7).sum() == 3


def test_transform_basics() -> None:
    assert CLIP.output_size == (224, 224)
    assert hash(CLIP) == hash(ImageTransform.from_hf({}))
    with pytest.raises(ValueError, match="depends on the image"):
        _ = ImageTransform(224, None, None, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD).output_size
    with pytest.raises(ValueError, match="at most one"):
        ImageTransform(224, (224, 224), None, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    with pytest.raises(ValueError, match="resample"):
        ImageTransform(224, None, None, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, resample="cubic")
    out = CLIP(Image.new("L", (300, 200), 128))  # another mode is converted, not refused
    assert out.shape == (3, 224, 224) and out.dtype == np.float32 and out.flags.c_contiguous


def test_describe_item(tmp_path: Path) -> None:
    assert describe_item(tmp_path / "a.jpg", 0) == str(tmp_path / "a.jpg")
    assert describe_item("b.png", 1) == "b.png"
    assert describe_item(b"..", 3) == "<bytes #3>"
    assert describe_item(Image.new("RGB", (1, 1)), 4) == "<PIL image #4>"
    assert describe_item(np.zeros((1, 1, 3), np.uint8), 5) == "<array #5>"


def test_bytes_input_equals_path_input(tmp_path: Path) -> None:
    path = images.png_rgba(tmp_path / "a.png", 60, 80)
    from_path = CLIP(decode_image(path, item="a"))
    assert np.array_equal(CLIP(decode_image(path.read_bytes(), item="<bytes #0>")), from_path)
