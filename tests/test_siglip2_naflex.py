"""SigLIP 2 NaFlex against transformers, on random-weight `Siglip2Model` checkpoints that
transformers writes here.

References: `Siglip2Model.get_image_features` / `get_text_features` (pooler outputs) on the
inputs of `Siglip2ImageProcessorPil` (the PIL processor, with do_convert_rgb=True) and ids
from `Siglip2Tokenizer` padded to 64; the position-grid resize against
`F.interpolate(bilinear, antialias=True)` and transformers' own resize. Thresholds: fp32
max abs <= 1e-5 on unit vectors, over one batch of images of several shapes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from handspring.embedder import Model
from handspring.errors import CheckpointError, ImageError
from handspring.loaders.options import LoadOptions
from handspring.loaders.siglip2 import load_siglip2
from handspring.models.siglip2_positions import ResizedPositions, antialias_bilinear_weights
from handspring.preprocess.naflex import image_size_for_max_num_patches
from handspring.runtime.session import precision_of
from tests.support.images import alpha_array, jpeg, photo_array

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.reference

FP32_MAX_ABS = 1e-5
POSITIONS_MAX_ABS = 1e-6
CONTEXT = 64
TEXTS = [
    "a photo of a cat",
    "A DOG running on the beach at sunset!",
    "",
    "über café naïve — ünïcödé",
    "word " * 80,
]


def _images(tmp_path: Path) -> list[Any]:
    """Aspect ratios 1:1, 3:1, 1:4, a 5 x 300 sliver, photo-like sizes, RGBA, gray, and a
    JPEG path whose EXIF turns it on its side (the target size is the turned one)."""
    sizes = [(60, 60), (40, 120), (160, 40), (5, 300), (300, 400), (50, 90), (2, 2)]
    images: list[Any] = [
        Image.fromarray(photo_array(h, w, seed=i)) for i, (h, w) in enumerate(sizes)
    ]
    rgba = np.dstack([photo_array(40, 50, seed=9), alpha_array(40, 50, seed=9)])
    images += [Image.fromarray(rgba, "RGBA"), images[4].convert("L")]
    images.append(jpeg(tmp_path / "turned.jpg", 90, 200, seed=11, orientation=6))
    return images


def _reference_image(item: Any) -> Image.Image:
    return transformers.image_utils.load_image(str(item)) if isinstance(item, Path) else item


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    return float((_unit(a) * _unit(b)).sum(axis=1).min())


def _load(
    folder: Path, precision: str = "fp32", modalities: tuple[str, ...] = ("image", "text")
) -> Model:
    options = LoadOptions(precision=precision_of(precision), precision_name=precision)
    return load_siglip2(str(folder), folder, modalities, options)


@pytest.fixture(scope="module")
def tiny_naflex(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.siglip2_checkpoints import write_siglip2

    return write_siglip2(tmp_path_factory.mktemp("tiny_naflex"), seed=0)


class Reference:
    """transformers' Siglip2Model, its PIL image processor and Siglip2Tokenizer."""

    def __init__(self, folder: Path) -> None:
        from transformers.models.siglip2.image_processing_pil_siglip2 import (
            Siglip2ImageProcessorPil,
        )

        self.model = transformers.Siglip2Model.from_pretrained(folder, dtype=torch.float32).eval()
        self.processor = Siglip2ImageProcessorPil.from_pretrained(folder, do_convert_rgb=True)
        self.tokenizer = transformers.Siglip2Tokenizer.from_pretrained(folder)

    def inputs(self, images: list[Any]) -> Any:
        return self.processor([_reference_image(i) for i in images], return_tensors="pt")

    def ids(self, texts: list[str]) -> Any:
        encoded = self.tokenizer(texts, padding="max_length", max_length=CONTEXT, truncation=True)
        return torch.tensor(encoded["input_ids"], dtype=torch.int64)

    def image_features(self, images: list[Any]) -> np.ndarray:
        with torch.no_grad():
            return self.model.get_image_features(**self.inputs(images)).pooler_output.numpy()

    def text_features(self, texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            return self.model.get_text_features(input_ids=self.ids(texts)).pooler_output.numpy()

    def label_scores(self, images: list[Any], texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            out = self.model(input_ids=self.ids(texts), **self.inputs(images))
        return torch.sigmoid(out.logits_per_image).numpy()


# ------------------------------------------------------------------ preprocessing


@pytest.mark.parametrize("grid", [16, 8])
def test_position_resize_equals_torch(grid: int) -> None:
    """Up, down and mixed: Wh @ grid @ Ww^T against F.interpolate(antialias=True) and
    transformers' Siglip2VisionEmbeddings.resize_positional_embeddings."""
    from transformers.models.siglip2.modeling_siglip2 import Siglip2VisionEmbeddings

    width = 24
    table = torch.randn(grid * grid, width, generator=torch.Generator().manual_seed(grid))
    positions = ResizedPositions(table.numpy())
    worst_torch = worst_hf = 0.0
    for rows, cols in [(grid, grid), (4, 7), (1, 1), (1, 256), (2, 120), (13, 19), (32, 60),
                       (60, 32), (5, 51), (100, 3), (grid + 1, grid - 1)]:  # fmt: skip
        ours = positions(rows, cols)  # [rows*cols, D]
        image = table.reshape(grid, grid, width).permute(2, 0, 1)[None]  # [1, D, G, G]
        resized = torch.nn.functional.interpolate(
            image, size=(rows, cols), mode="bilinear", align_corners=False, antialias=True
        )
        expected = resized[0].permute(1, 2, 0).reshape(rows * cols, width).numpy()
        hf = Siglip2VisionEmbeddings.resize_positional_embeddings(
            table.reshape(grid, grid, width), torch.tensor([[rows, cols]]), rows * cols
        )[0].numpy()
        worst_torch = max(worst_torch, float(np.abs(ours - expected).max()))
        worst_hf = max(worst_hf, float(np.abs(ours - hf).max()))
    print(
        f"\n{grid}x{grid} grid (values up to {float(table.abs().max()):.1f}) resized: max abs "
        f"{worst_torch:.2e} to F.interpolate, {worst_hf:.2e} to transformers"
    )
    assert worst_torch <= POSITIONS_MAX_ABS and worst_hf <= POSITIONS_MAX_ABS
    assert antialias_bilinear_weights(grid, 5) is antialias_bilinear_weights(grid, 5)  # cached


def test_target_sizes_equal_transformers() -> None:
    from transformers.models.siglip2.image_processing_pil_siglip2 import (
        get_image_size_for_max_num_patches,
    )

    rng = np.random.default_rng(0)
    shapes = [(1, 1), (5, 300), (300, 5), (1, 10000), (4000, 3000)]
    shapes += [tuple(int(v) for v in rng.integers(1, 5000, 2)) for _ in range(300)]
    for patch, most in [(16, 256), (16, 1024), (14, 729), (4, 48)]:
        for h, w in shapes:
            expected = get_image_size_for_max_num_patches(h, w, patch, most)
            assert image_size_for_max_num_patches(h, w, patch, most) == expected, (h, w)


def test_patches_equal_the_processor(tiny_naflex: Path, tmp_path: Path) -> None:
    """Every input the processor gives the model: patch values bit for bit, the mask and the
    spatial shapes."""
    images = _images(tmp_path)
    model = _load(tiny_naflex, modalities=("image",))
    tower = model.tower("image")
    prepared = [tower.prepare(item, str(i), {}) for i, item in enumerate(images)]
    expected = Reference(tiny_naflex).inputs(images)
    shapes = expected["spatial_shapes"].numpy()
    for i, item in enumerate(prepared):
        n = int(shapes[i].prod())
        assert len(item.patches) == n == int(expected["pixel_attention_mask"][i].sum())
        np.testing.assert_array_equal(item.patches, expected["pixel_values"][i, :n].numpy())
    print(f"\nspatial shapes: {shapes.tolist()}")


# ------------------------------------------------------------------ embeddings


def test_fp32_equals_transformers(tiny_naflex: Path, tmp_path: Path) -> None:
    images = _images(tmp_path)
    reference = Reference(tiny_naflex)
    model = _load(tiny_naflex)
    assert model.family == "siglip" and model.zero_shot == "sigmoid"
    # The first session run is one tensor of rows of many shapes.
    shapes = reference.inputs(images)["spatial_shapes"].tolist()
    assert len({tuple(s) for s in shapes[: model.tower("image").run_rows]}) >= 5
    image = model.embed_images(images, normalize=False).embeddings
    text = model.embed_texts(TEXTS, normalize=False)
    ref_image, ref_text = reference.image_features(images), reference.text_features(TEXTS)
    image_err = float(np.abs(_unit(image) - _unit(ref_image)).max())
    text_err = float(np.abs(_unit(text) - _unit(ref_text)).max())
    raw_err = max(np.abs(image - ref_image).max(), np.abs(text - ref_text).max())
    print(
        f"\ntiny NaFlex fp32 max abs ({len(images)} images, {len(set(map(tuple, shapes)))} "
        f"shapes): unit image "
        f"{image_err:.2e}, text {text_err:.2e}; raw {raw_err:.2e}"
    )
    assert image_err <= FP32_MAX_ABS and text_err <= FP32_MAX_ABS
    # A row does not depend on what else is in its batch, bit for bit.
    alone = np.concatenate([model.embed_images([i], normalize=False).embeddings for i in images])
    np.testing.assert_array_equal(alone, image)


def test_zero_shot_scores_are_sigmoids_of_the_model_logits(
    tiny_naflex: Path, tmp_path: Path
) -> None:
    images = _images(tmp_path)[:4]
    labels = ["cat", "dog", "beach at sunset"]
    probs, embedded = _load(tiny_naflex).classify(images, labels, template="a photo of a {}.")
    expected = Reference(tiny_naflex).label_scores(
        images, [f"a photo of a {label}." for label in labels]
    )
    assert len(embedded) == len(images)
    assert np.abs(probs - expected).max() <= 1e-5


def test_a_broken_image_fails_alone(tiny_naflex: Path, tmp_path: Path) -> None:
    good = _images(tmp_path)[:3]
    whole = io.BytesIO()
    Image.fromarray(photo_array(64, 64, seed=3)).save(whole, format="JPEG")
    truncated = whole.getvalue()[: len(whole.getvalue()) // 2]
    model = _load(tiny_naflex, modalities=("image",))
    items = [good[0], b"not an image at all", good[1], truncated, good[2]]
    result = model.embed_images(items)
    assert result.error_index == [1, 3]
    assert all(isinstance(e, ImageError) for e in result.errors)
    assert "truncated" in result.errors[1].reason
    assert np.isnan(result.embeddings[[1, 3]]).all()
    np.testing.assert_array_equal(result.embeddings[[0, 2, 4]], model.embed_images(good).embeddings)


def test_int8_close_to_fp32(tiny_naflex: Path, tmp_path: Path) -> None:
    images = _images(tmp_path)
    fp32, int8 = _load(tiny_naflex), _load(tiny_naflex, "int8")
    image = _cosine_min(int8.embed_images(images).embeddings, fp32.embed_images(images).embeddings)
    text = _cosine_min(int8.embed_texts(TEXTS), fp32.embed_texts(TEXTS))
    print(f"\ntiny NaFlex int8 min cosine to fp32: image {image:.5f}, text {text:.5f}")
    assert image > 0.99 and text > 0.99


def test_int8_images_of_many_patches_run_alone(tmp_path: Path) -> None:
    """At 144 patches an image runs alone, its padded tensor quantized with one int8 scale:
    its vector is the same alone as in a batch of mixed shapes, bit for bit."""
    from tests.support.siglip2_checkpoints import write_siglip2

    folder = write_siglip2(tmp_path / "many", max_num_patches=144, seed=1)
    images = _images(tmp_path)
    int8 = _load(folder, "int8", ("image",))
    assert int8.towers["image"].run_rows == 1
    together = int8.embed_images(images).embeddings
    for i, image in enumerate(images):
        np.testing.assert_array_equal(int8.embed_images([image]).embeddings[0], together[i])
    cosine = _cosine_min(
        together, _load(folder, "fp32", ("image",)).embed_images(images).embeddings
    )
    print(f"\n144-patch NaFlex int8 (one scale per image) min cosine to fp32: {cosine:.5f}")
    assert cosine > 0.99


# ------------------------------------------------------------------ loading


def _copy_with_json(source: Path, target: Path, name: str, change: dict[str, Any]) -> Path:
    target.mkdir()
    for path in source.iterdir():
        if path.name != name:
            (target / path.name).symlink_to(path)
    config = json.loads((source / name).read_text())
    for key, value in change.items():
        section, _, field = key.partition(".")
        if field:
            config[section][field] = value
        else:
            config[key] = value
    (target / name).write_text(json.dumps(config))
    return target


@pytest.mark.parametrize(
    ("name", "change", "reason"),
    [
        ("config.json", {"model_type": "siglip"}, "says 'siglip2'"),
        ("config.json", {"vision_config.num_patches": 48}, "not a square grid"),
        ("config.json", {"vision_config.num_hidden_layers": 3}, "tensors missing"),
        ("config.json", {"vision_config.patch_size": 8}, "shape"),
        ("preprocessor_config.json", {"patch_size": 8}, "the model's patches are 4"),
        ("preprocessor_config.json", {"do_resize": False}, "do_resize=false"),
    ],
)
def test_unsupported_checkpoints_say_why(
    tiny_naflex: Path, tmp_path: Path, name: str, change: dict[str, Any], reason: str
) -> None:
    folder = _copy_with_json(tiny_naflex, tmp_path / "changed", name, change)
    with pytest.raises(CheckpointError, match=reason):
        _load(folder)


# ------------------------------------------------------------------ full size


@pytest.mark.slow
def test_full_size_base_patch16_naflex_vision(tmp_path: Path) -> None:
    """google/siglip2-base-patch16-naflex's image tower (768 wide, 12 blocks, 16 x 16
    positions, 256 patches): fp32 parity on one batch of mixed shapes, and int8's cosine."""
    from tests.support.siglip2_checkpoints import (
        BASE_MAX_PATCHES,
        BASE_TEXT_FOR_VISION,
        BASE_VISION,
        write_siglip2,
    )

    folder = write_siglip2(
        tmp_path / "base", BASE_VISION, BASE_TEXT_FOR_VISION, BASE_MAX_PATCHES, seed=2
    )
    images = _images(tmp_path)[:8]
    reference = Reference(folder).image_features(images)
    fp32 = _load(folder, modalities=("image",)).embed_images(images).embeddings
    error = float(np.abs(fp32 - _unit(reference)).max())
    int8 = _load(folder, "int8", modalities=("image",)).embed_images(images).embeddings
    cosine = _cosine_min(int8, fp32)
    print(f"\nbase/16 NaFlex fp32 max abs (unit): {error:.2e}; int8 min cosine {cosine:.5f}")
    assert error <= FP32_MAX_ABS
    assert cosine > 0.99
