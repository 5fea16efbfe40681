"""Parity with the reference implementations on random-weight checkpoints.

transformers' CLIPModel and open_clip are the references; thresholds: fp32
max abs <= 1e-5 on the raw embeddings, int8 cosine to fp32 >= 0.999 (images)
and >= 0.995 (texts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import handspring
from tests.support.images import photo_array
from tests.support.samples import TEXTS

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.reference

FP32_MAX_ABS = 1e-5


def _images(n: int = 5) -> list[Image.Image]:
    sizes = [(48, 64), (64, 48), (40, 40), (33, 97), (120, 80), (37, 36), (64, 64)]
    return [Image.fromarray(photo_array(*sizes[i % len(sizes)], seed=i)) for i in range(n)]


def _cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def _hf_reference(
    folder: Path, images: list[Image.Image], texts: list[str], max_length: int = 77
) -> tuple[np.ndarray, np.ndarray]:
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    model = transformers.CLIPModel.from_pretrained(folder, torch_dtype=torch.float32).eval()
    processor = CLIPImageProcessorPil.from_pretrained(folder)
    tokenizer = transformers.CLIPTokenizer.from_pretrained(folder)
    pixels = processor(images, return_tensors="pt")["pixel_values"]
    tokens = tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels).pooler_output.numpy()
        text = model.get_text_features(**tokens).pooler_output.numpy()
    return image, text


@pytest.mark.parametrize("layout", ["tiny_hf", "tiny_st"])
def test_transformers_layouts_fp32_exact(layout: str, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(layout)
    model_folder = folder / "0_CLIPModel" if layout == "tiny_st" else folder
    images = _images()
    ref_image, ref_text = _hf_reference(model_folder, images, TEXTS)
    model = handspring.load(folder, precision="fp32")
    image = model.embed_images(images, normalize=False).embeddings
    text = model.embed_texts(TEXTS, normalize=False)
    assert np.abs(image - ref_image).max() <= FP32_MAX_ABS
    assert np.abs(text - ref_text).max() <= FP32_MAX_ABS


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_checkpoints_upcast(dtype: str, tmp_path: Path) -> None:
    from tests.support.checkpoints import TINY, write_hf_clip

    folder = write_hf_clip(tmp_path / dtype, TINY, seed=3, dtype=dtype)
    images = _images(3)
    ref_image, ref_text = _hf_reference(folder, images, TEXTS[:4])
    model = handspring.load(folder)
    assert (
        np.abs(model.embed_images(images, normalize=False).embeddings - ref_image).max()
        <= FP32_MAX_ABS
    )
    assert np.abs(model.embed_texts(TEXTS[:4], normalize=False) - ref_text).max() <= FP32_MAX_ABS


@pytest.mark.slow
def test_full_size_vit_b32(full_hf: Path) -> None:
    images = _images(4)
    ref_image, ref_text = _hf_reference(full_hf, images, TEXTS)
    fp32 = handspring.load(full_hf, precision="fp32")
    image = fp32.embed_images(images, normalize=False).embeddings
    text = fp32.embed_texts(TEXTS, normalize=False)
    assert np.abs(image - ref_image).max() <= FP32_MAX_ABS
    assert np.abs(text - ref_text).max() <= FP32_MAX_ABS
    int8 = handspring.load(full_hf, precision="int8")
    assert _cosine_min(int8.embed_images(images).embeddings, image) >= 0.999
    assert _cosine_min(int8.embed_texts(TEXTS), text) >= 0.995


def test_tiny_int8_close_to_fp32(tiny_hf: Path) -> None:
    images = _images()
    fp32 = handspring.load(tiny_hf, precision="fp32")
    int8 = handspring.load(tiny_hf, precision="int8")
    assert (
        _cosine_min(int8.embed_images(images).embeddings, fp32.embed_images(images).embeddings)
        >= 0.999
    )
    assert _cosine_min(int8.embed_texts(TEXTS), fp32.embed_texts(TEXTS)) >= 0.995


def _open_clip_reference(
    folder: Path, images: list[Image.Image], texts: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    import json

    import open_clip
    from safetensors.torch import load_file

    model_cfg = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]
    model = open_clip.model.CLIP(**model_cfg).eval()
    model.load_state_dict(load_file(folder / "open_clip_model.safetensors"), strict=True)
    preprocess = open_clip.image_transform(model_cfg["vision_cfg"]["image_size"], is_train=False)
    tokens = open_clip.tokenize(texts)
    with torch.no_grad():
        image = model.encode_image(torch.stack([preprocess(im) for im in images])).numpy()
        text = model.encode_text(tokens).numpy()
    return image, text


def test_open_clip_naming_fp32_exact(tiny_open_clip: Path) -> None:
    pytest.importorskip("open_clip")
    images = _images()
    ref_image, ref_text = _open_clip_reference(tiny_open_clip, images, TEXTS)
    model = handspring.load(tiny_open_clip)
    assert (
        np.abs(model.embed_images(images, normalize=False).embeddings - ref_image).max()
        <= FP32_MAX_ABS
    )
    assert np.abs(model.embed_texts(TEXTS, normalize=False) - ref_text).max() <= FP32_MAX_ABS


def test_open_clip_folder_without_tokenizer_files(tmp_path: Path) -> None:
    """timm/ and laion/ repos ship no tokenizer files: open_clip uses its built-in
    vocabulary, and so does the packaged copy of it."""
    pytest.importorskip("open_clip")
    from tests.support.checkpoints import write_open_clip

    folder = write_open_clip(tmp_path / "no_tokenizer", seed=11)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "vocab.json", "merges.txt"):  # fmt: skip
        (folder / name).unlink(missing_ok=True)
    images = _images()
    texts = [*TEXTS, "“curly quotes” and ﬁ ligatures", "word " * 90]
    ref_image, ref_text = _open_clip_reference(folder, images, texts)
    model = handspring.load(folder)
    assert np.abs(model.embed_texts(texts, normalize=False) - ref_text).max() <= FP32_MAX_ABS
    image = model.embed_images(images, normalize=False).embeddings
    assert np.abs(image - ref_image).max() <= FP32_MAX_ABS


def test_sentence_transformers_encode_agrees(tiny_st: Path) -> None:
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(tiny_st), device="cpu")
    model = handspring.load(tiny_st)
    texts = TEXTS[:3]
    ref_text = reference.encode(texts, normalize_embeddings=True)
    assert np.abs(model.embed_texts(texts) - ref_text).max() <= FP32_MAX_ABS
    images = _images(3)
    ref_image = reference.encode(images, normalize_embeddings=True)
    # sentence-transformers may run transformers' torchvision image processor,
    # whose bicubic differs from PIL's; the tower itself is exact (tests above).
    assert _cosine_min(model.embed_images(images).embeddings, ref_image) >= 0.999


def test_immich_onnx_folder_runs_as_exported(tmp_path: Path) -> None:
    pytest.importorskip("open_clip")
    from tests.support.immich import write_immich

    folder = write_immich(tmp_path / "immich", seed=4)
    images = _images()
    ref_image, ref_text = _open_clip_reference(tmp_path / "immich_open_clip", images, TEXTS)
    model = handspring.load(folder)
    assert model.dim == ref_image.shape[1]
    assert (
        np.abs(model.embed_images(images, normalize=False).embeddings - ref_image).max()
        <= FP32_MAX_ABS
    )
    assert np.abs(model.embed_texts(TEXTS, normalize=False) - ref_text).max() <= FP32_MAX_ABS


def test_immich_graphs_of_one_item_per_run_take_batches(tmp_path: Path) -> None:
    """Newer Immich exports fix the batch at 1: batches run row by row, same vectors."""
    pytest.importorskip("open_clip")
    from tests.support.immich import write_immich

    dynamic = handspring.load(write_immich(tmp_path / "dynamic", seed=4))
    fixed = handspring.load(write_immich(tmp_path / "fixed", seed=4, batch_of_one=True))
    images = _images()
    np.testing.assert_allclose(
        fixed.embed_images(images).embeddings, dynamic.embed_images(images).embeddings, atol=1e-6
    )
    np.testing.assert_allclose(fixed.embed_texts(TEXTS), dynamic.embed_texts(TEXTS), atol=1e-6)


def test_other_clip_shapes_load_without_new_code(tmp_path: Path) -> None:
    """ViT-L/14-336's shape family (patch 14, a 24x24 grid scaled down here),
    erf GELU instead of QuickGELU, other widths, head counts and a shorter context."""
    from handspring.models.clip import ClipConfig, TextConfig, VisionConfig
    from tests.support.checkpoints import write_hf_clip

    cfg = ClipConfig(
        vision=VisionConfig(
            hidden_size=48,
            intermediate_size=80,
            num_hidden_layers=3,
            num_attention_heads=3,
            patch_size=14,
            image_size=56,
            hidden_act="gelu",
        ),
        text=TextConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=40,
            hidden_act="gelu",
        ),
        projection_dim=24,
    )
    folder = write_hf_clip(tmp_path / "l14ish", cfg, seed=5)
    images = _images(3)
    texts = [*TEXTS[:5], "word " * 60]  # the last one is truncated at 40 tokens
    ref_image, ref_text = _hf_reference(folder, images, texts, max_length=40)
    model = handspring.load(folder)
    assert model.embed_images(images, normalize=False).embeddings.shape == (3, 24)
    assert (
        np.abs(model.embed_images(images, normalize=False).embeddings - ref_image).max()
        <= FP32_MAX_ABS
    )
    assert np.abs(model.embed_texts(texts, normalize=False) - ref_text).max() <= FP32_MAX_ABS


@pytest.mark.slow
def test_full_size_open_clip_naming(tmp_path: Path) -> None:
    pytest.importorskip("open_clip")
    from tests.support.checkpoints import VIT_B32, write_open_clip

    folder = write_open_clip(tmp_path / "oc_b32", VIT_B32, seed=6)
    images = _images(3)
    ref_image, ref_text = _open_clip_reference(folder, images, TEXTS)
    model = handspring.load(folder)
    assert (
        np.abs(model.embed_images(images, normalize=False).embeddings - ref_image).max()
        <= FP32_MAX_ABS
    )
    assert np.abs(model.embed_texts(TEXTS, normalize=False) - ref_text).max() <= FP32_MAX_ABS
