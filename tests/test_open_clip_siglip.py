"""open_clip's SigLIP checkpoints (timm image trunk) and Immich's SigLIP exports, against
the references, on random-weight checkpoints written here (tests/support/immich_siglip.py).

References: open_clip's own model (`create_model_and_transforms("local-dir:...")`,
`encode_image` / `encode_text`), its eval transform on PIL images and its tokenizer
(`get_tokenizer("local-dir:...")`); for Immich folders, Immich's recipe written here from
PIL calls (decode to RGB, shortest side resized, centre crop) and its text cleaning and
tokenization, fed to open_clip's model, and Immich's own recipe on the exported graphs
(tests/support/immich_recipe.py). Thresholds: max abs <= 1e-5 on unit vectors.
"""

from __future__ import annotations

import io
import json
import shutil
import string
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import handspring
from handspring.errors import CheckpointError, HandspringError
from handspring.loaders.clip import immich_image_transform
from handspring.loading import detect_family
from handspring.preprocess.siglip_text_exports import open_clip_siglip_tokenizer
from tests.support.images import alpha_array, photo_array
from tests.support.text_corpus import TEXTS as CORPUS

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
pytest.importorskip("timm")
pytest.importorskip("sentencepiece")
pytestmark = pytest.mark.reference

MAX_ABS = 1e-5
CONTEXT = 64

# What open_clip's cleaning does (ftfy, HTML, "_", punctuation, case, whitespace) and
# SigLIP's special-token spellings.
TOKEN_TEXTS = [
    *CORPUS,
    "snake_case_words and__double",
    "&amp;lt;b&amp;gt; bold &quot;quoted&quot;",
    "don\u2019t \u201cquote\u201d me",
    "\uff21\uff22\uff23 \ufb01 \u00bd caf\u00e9",
    "a </s> b <unk> <pad>",
    "it's, well... (maybe) -- [sic]!",
    "  lots\tof\n\nwhitespace  ",
    "word " * 80,
]
TEXTS = [
    "a photo of a cat",
    "A DOG running_on the beach at sunset!",
    "",
    "\u00fcber caf\u00e9 na\u00efve",
    "\u6771\u4eac\u306e\u591c\u666f \U0001f431",
    "word " * 80,
]


def _photos() -> list[Image.Image]:
    sizes = [(48, 64), (64, 48), (36, 36), (33, 97), (120, 80), (17, 23)]
    return [Image.fromarray(photo_array(h, w, seed=i)) for i, (h, w) in enumerate(sizes)]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def oc_siglip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.immich_siglip import write_open_clip_siglip

    return write_open_clip_siglip(tmp_path_factory.mktemp("oc_siglip"), tokenizer="t5", seed=0)


@pytest.fixture(scope="module")
def oc_siglip_spiece(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.immich_siglip import write_open_clip_siglip

    folder = tmp_path_factory.mktemp("oc_siglip_spiece")
    return write_open_clip_siglip(folder, tokenizer="spiece", seed=1)


class Reference:
    """open_clip on an open_clip folder."""

    def __init__(self, folder: Path) -> None:
        from tests.support.immich_siglip import load_open_clip

        self.model, self.preprocess, self.tokenizer = load_open_clip(folder)

    def image_features(self, images: list[Image.Image], normalize: bool = False) -> np.ndarray:
        pixels = torch.stack([self.preprocess(image) for image in images])
        with torch.no_grad():
            return self.model.encode_image(pixels, normalize=normalize).numpy()

    def text_features(self, texts: list[str], normalize: bool = False) -> np.ndarray:
        with torch.no_grad():
            return self.model.encode_text(self.tokenizer(texts), normalize=normalize).numpy()


def _parity(model: handspring.Model, reference: Reference, images: list[Any], texts: list[str]):
    image = model.embed_images(images, normalize=False).embeddings
    text = model.embed_texts(texts, normalize=False)
    ref_image, ref_text = reference.image_features(images), reference.text_features(texts)
    image_err = float(np.abs(_unit(image) - _unit(ref_image)).max())
    text_err = float(np.abs(_unit(text) - _unit(ref_text)).max())
    raw = max(np.abs(image - ref_image).max(), np.abs(text - ref_text).max())
    return image_err, text_err, float(raw)


# ------------------------------------------------------------------ open_clip folders


def test_found_as_siglip(oc_siglip: Path) -> None:
    assert detect_family(oc_siglip).name == "siglip"


@pytest.mark.parametrize("kind", ["oc_siglip", "oc_siglip_spiece"])
def test_token_ids_equal_open_clip(kind: str, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(kind)
    text_cfg = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]
    reference = open_clip.get_tokenizer(f"local-dir:{folder}")
    expected = reference(TOKEN_TEXTS).numpy()
    tokenizer = open_clip_siglip_tokenizer(folder, CONTEXT, text_cfg)
    encoded = tokenizer.encode(TOKEN_TEXTS)
    ids = tokenizer.pad(encoded.ids)
    bad = [t for t, a, b in zip(TOKEN_TEXTS, ids, expected, strict=True) if (a != b).any()]
    assert not bad, f"{len(bad)} of {len(TOKEN_TEXTS)} differ, e.g. {bad[0]!r}"
    whole = [reference.tokenizer(reference.clean_fn(t))["input_ids"] for t in TOKEN_TEXTS]
    assert encoded.truncated.tolist() == [len(row) > CONTEXT for row in whole]
    print(f"\n{kind}: {len(TOKEN_TEXTS)} texts, ids equal to open_clip's")


@pytest.mark.parametrize("kind", ["oc_siglip", "oc_siglip_spiece"])
def test_fp32_equals_open_clip(kind: str, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(kind)
    model = handspring.load(folder)
    assert model.family == "siglip" and model.zero_shot == "sigmoid"
    images = [*_photos(), _photos()[0].convert("L")]
    image_err, text_err, raw = _parity(model, Reference(folder), images, TEXTS)
    print(f"\n{kind} max abs (unit): image {image_err:.2e}, text {text_err:.2e}; raw {raw:.2e}")
    assert image_err <= MAX_ABS and text_err <= MAX_ABS


def test_zero_shot_uses_open_clips_scale_and_bias(oc_siglip: Path) -> None:
    reference = Reference(oc_siglip)
    images, labels = _photos()[:4], ["cat", "dog", "beach at sunset"]
    probs, _ = handspring.load(oc_siglip).classify(images, labels, template="a photo of a {}.")
    image = torch.from_numpy(reference.image_features(images, normalize=True))
    text = torch.from_numpy(
        reference.text_features([f"a photo of a {label}." for label in labels], normalize=True)
    )
    with torch.no_grad():
        logits = image @ text.T * reference.model.logit_scale.exp() + reference.model.logit_bias
    assert np.abs(probs - torch.sigmoid(logits).numpy()).max() <= MAX_ABS


def test_an_open_clip_repo_loads_from_the_hub_cache(
    oc_siglip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    from tests.support.hub_cache import hub_repo

    _, snapshot = hub_repo("acme/oc-siglip", tmp_path / "hub")
    shutil.copytree(oc_siglip, snapshot)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = handspring.load("acme/oc-siglip", modalities=["text"])
    assert model.family == "siglip" and model.modalities == ("text",)
    expected = handspring.load(oc_siglip, modalities=["text"]).embed_texts(TEXTS)
    np.testing.assert_array_equal(model.embed_texts(TEXTS), expected)


def _with_config(source: Path, target: Path, section: str, key: str, value: Any) -> Path:
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).symlink_to(path)
    (target / "open_clip_config.json").unlink()
    config = json.loads((source / "open_clip_config.json").read_text())
    (config["model_cfg"][section] if section else config["model_cfg"])[key] = value
    (target / "open_clip_config.json").write_text(json.dumps(config))
    return target


@pytest.mark.parametrize(
    ("section", "key", "value", "reason"),
    [
        ("vision_cfg", "timm_pool", "avg", r"vision_cfg\.timm_pool='avg'"),
        ("vision_cfg", "timm_model_name", "vit_base_patch16_siglip_gap_224", "averaging"),
        ("vision_cfg", "timm_model_name", "vit_unknown_siglip_1", "not a timm SigLIP trunk"),
        ("vision_cfg", "image_size", 48, "takes 36 x 36 images"),
        ("text_cfg", "pool_type", "argmax", r"text_cfg\.pool_type='argmax'"),
        ("text_cfg", "no_causal_mask", False, r"text_cfg\.no_causal_mask=False"),
        ("", "quick_gelu", True, "quick_gelu=True"),
        ("text_cfg", "layers", 3, "tensors missing"),
        ("text_cfg", "layers", 1, "have no place"),
    ],
)
def test_unsupported_configs_say_why(
    oc_siglip: Path, tmp_path: Path, section: str, key: str, value: Any, reason: str
) -> None:
    folder = _with_config(oc_siglip, tmp_path / "changed", section, key, value)
    with pytest.raises(CheckpointError, match=reason):
        handspring.load(folder)


def test_transformers_siglip_at_a_size_its_patches_do_not_divide(tmp_path: Path) -> None:
    """google/siglip-so400m-patch14-384's case (384 = 27 x 14 + 6) at a small size: the
    strided Conv leaves the last rows and columns of pixels out, and so do we."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    from tests.support.siglip_checkpoints import TINY_VISION, write_siglip

    folder = write_siglip(tmp_path / "siglip36", vision={**TINY_VISION, "image_size": 36})
    reference = transformers.SiglipModel.from_pretrained(folder, dtype=torch.float32).eval()
    pixels = SiglipImageProcessorPil.from_pretrained(folder)(_photos(), return_tensors="pt")
    with torch.no_grad():
        expected = reference.get_image_features(**pixels).pooler_output.numpy()
    image = handspring.load(folder, modalities=["image"]).embed_images(_photos()).embeddings
    assert np.abs(image - _unit(expected)).max() <= MAX_ABS


def _aspect_photos() -> list[Image.Image]:
    """Photo-like images of several aspect ratios (w:h 4:3, 3:4, 16:9, 9:16, 1:1, 3:1, 2:3)."""
    sizes = [(480, 640), (640, 480), (360, 640), (640, 360), (500, 500), (200, 600), (600, 400)]
    return [Image.fromarray(photo_array(h, w, seed=40 + i)) for i, (h, w) in enumerate(sizes)]


@pytest.mark.slow
def test_full_size_vit_b16_siglip(tmp_path: Path) -> None:
    """open_clip's ViT-B-16-SigLIP config (timm/ViT-B-16-SigLIP's), random weights: parity
    on images and texts, and what Immich's shortest-side crop does to an embedding against
    the squash SigLIP was trained with, on the same photos."""
    from tests.support.immich_siglip import write_open_clip_siglip

    model_cfg = open_clip.get_model_config("ViT-B-16-SigLIP")
    folder = write_open_clip_siglip(tmp_path / "b16", model_cfg, seed=2)
    model = handspring.load(folder)
    photos = _aspect_photos()
    images = [*_photos(), *photos]
    texts = TEXTS + CORPUS[:24]
    image_err, text_err, raw = _parity(model, Reference(folder), images, texts)
    tower = model.towers["image"]
    preprocess = json.loads((folder / "open_clip_config.json").read_text())["preprocess_cfg"]
    crop = immich_image_transform({"size": 224, **preprocess})
    squashed = _unit(tower.run([tower.transform(p) for p in photos]))
    cropped = _unit(tower.run([crop(p) for p in photos]))
    cosines = (squashed * cropped).sum(axis=1)
    ratios = ", ".join(
        f"{p.width}:{p.height} {c:.4f}" for p, c in zip(photos, cosines, strict=True)
    )
    print(
        f"\nViT-B-16-SigLIP max abs (unit): image {image_err:.2e}, text {text_err:.2e}; "
        f"raw {raw:.2e}\nsquash vs shortest+crop cosine (random weights): {ratios}"
    )
    assert image_err <= MAX_ABS and text_err <= MAX_ABS


# ------------------------------------------------------------------ Immich exports


@pytest.fixture(scope="module")
def immich_siglip(oc_siglip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.immich_siglip import write_immich_siglip

    return write_immich_siglip(tmp_path_factory.mktemp("immich_siglip") / "siglip", oc_siglip)


def _immich_pixels(folder: Path, data: bytes) -> np.ndarray:
    """Immich's OpenClipVisualEncoder on image bytes, as its releases that built most
    libraries ran it: RGB, shortest side resized, centre crop, normalized. [3, S, S]"""
    cfg = json.loads((folder / "visual" / "preprocess_cfg.json").read_text())
    size = cfg["size"][0]
    resample = Image.Resampling[cfg["interpolation"].upper()]
    image = Image.open(io.BytesIO(data))
    image = image.convert("RGB") if image.mode != "RGB" else image
    if image.width < image.height:
        image = image.resize((size, int((image.height / image.width) * size)), resample=resample)
    else:
        image = image.resize((int((image.width / image.height) * size), size), resample=resample)
    left, upper = int(image.width / 2 - size / 2), int(image.height / 2 - size / 2)
    image = image.crop((left, upper, left + size, upper + size))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    pixels *= 1.0 / np.float32(cfg["std"])
    pixels -= np.float32(cfg["mean"]) / np.float32(cfg["std"])
    return pixels.transpose(2, 0, 1)


def _immich_ids(folder: Path, texts: list[str]) -> np.ndarray:
    """Immich's OpenClipTextualEncoder tokenization. [N, context]"""
    from tokenizers import Tokenizer

    text_cfg = json.loads((folder / "config.json").read_text())["text_cfg"]
    context = text_cfg["context_length"]
    pad = json.loads((folder / "textual" / "tokenizer_config.json").read_text())["pad_token"]
    tokenizer = Tokenizer.from_file(str(folder / "textual" / "tokenizer.json"))
    tokenizer.enable_padding(length=context, pad_token=pad, pad_id=tokenizer.token_to_id(pad))
    tokenizer.enable_truncation(max_length=context)
    canonicalize = text_cfg["tokenizer_kwargs"]["clean"] == "canonicalize"
    punctuation = str.maketrans("", "", string.punctuation)
    rows = []
    for text in texts:
        text = " ".join(text.split())
        text = text.translate(punctuation).lower() if canonicalize else text
        rows.append(tokenizer.encode(text).ids)
    return np.asarray(rows, dtype=np.int64)


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array, mode).save(out, "PNG")
    return out.getvalue()


def _immich_images() -> list[bytes]:
    sizes = [(48, 64), (64, 48), (36, 36), (33, 97), (120, 80), (17, 23), (300, 200)]
    photos = [_png(photo_array(h, w, seed=20 + i)) for i, (h, w) in enumerate(sizes)]
    rgba = np.dstack([photo_array(40, 50, seed=29), alpha_array(40, 50, seed=29)])
    return [*photos, _png(rgba, "RGBA")]


IMMICH_TEXTS = [*TEXTS, "snake_case  and   spaces", "Punctuation: ALL... of it?!", "a " * 70]


def test_immich_siglip_equals_open_clip_with_immichs_preprocessing(
    immich_siglip: Path, oc_siglip: Path
) -> None:
    from tests.support.immich_recipe import immich_image_vector, immich_text_vector

    model = handspring.load(immich_siglip)
    assert model.family == "clip" and model.zero_shot == "sigmoid" and model.dim == 64
    images = _immich_images()
    image = model.embed_images(images).embeddings
    text = model.embed_texts(IMMICH_TEXTS)
    reference = Reference(oc_siglip)
    pixels = torch.from_numpy(np.stack([_immich_pixels(immich_siglip, d) for d in images]))
    ids = torch.from_numpy(_immich_ids(immich_siglip, IMMICH_TEXTS))
    with torch.no_grad():
        ref_image = reference.model.encode_image(pixels, normalize=True).numpy()
        ref_text = reference.model.encode_text(ids, normalize=True).numpy()
    image_err = float(np.abs(image - ref_image).max())
    text_err = float(np.abs(text - ref_text).max())
    recipe_image = np.stack([immich_image_vector(immich_siglip, d) for d in images])
    recipe_text = np.stack([immich_text_vector(immich_siglip, t) for t in IMMICH_TEXTS])
    recipe_err = max(np.abs(image - recipe_image).max(), np.abs(text - recipe_text).max())
    print(
        f"\nImmich SigLIP vs open_clip on Immich's inputs, max abs: image {image_err:.2e}, "
        f"text {text_err:.2e}; vs Immich's recipe on its graphs {recipe_err:.2e}"
    )
    assert image_err <= MAX_ABS and text_err <= MAX_ABS and recipe_err <= MAX_ABS
    tokens, truncated = model.count_tokens(IMMICH_TEXTS)
    assert tokens.max() == CONTEXT
    assert truncated.tolist() == [t in (TEXTS[5], IMMICH_TEXTS[-1]) for t in IMMICH_TEXTS]


def test_immich_newer_releases_squash_as_open_clip(immich_siglip: Path, oc_siglip: Path) -> None:
    """Newer Immich releases honour preprocess_cfg.json's resize_mode ("squash" for SigLIP):
    then the pixels are open_clip's own."""
    cfg = json.loads((immich_siglip / "visual" / "preprocess_cfg.json").read_text())
    squash = immich_image_transform(cfg, honour_resize_mode=True)
    assert immich_image_transform(cfg).crop_size == (36, 36)  # the default: shortest + crop
    preprocess = Reference(oc_siglip).preprocess
    for photo in _photos():
        assert np.abs(squash(photo) - preprocess(photo).numpy()).max() <= 1e-6


def test_immich_siglip_classify_refuses_without_the_learned_scale(immich_siglip: Path) -> None:
    model = handspring.load(immich_siglip)
    with pytest.raises(HandspringError, match="no zero-shot scale"):
        model.classify(_photos()[:1], ["cat", "dog"])
