"""SigLIP (and SigLIP 2 at fixed resolution) against transformers, on random-weight
`SiglipModel` checkpoints that transformers writes here, with tokenizers trained here.

References: `SiglipModel.get_image_features` / `get_text_features` (pooler outputs) with
the PIL image processor (`SiglipImageProcessorPil`, the classic PIL path) and ids from
`SiglipTokenizer` (spiece.model) or `Siglip2Tokenizer` (Gemma tokenizer.json), padded to
64 with padding="max_length" as SigLIP's processor is called. Thresholds: fp32 max abs
<= 1e-5 on unit vectors; zero-shot scores equal sigmoid(logits_per_image) within 1e-5.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import handspring
from handspring.errors import CheckpointError
from handspring.loading import detect_family
from handspring.preprocess.siglip_text import siglip_tokenizer
from handspring.registry import known_model
from tests.support.images import alpha_array, photo_array
from tests.support.text_corpus import TEXTS as CORPUS

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
pytestmark = pytest.mark.reference

FP32_MAX_ABS = 1e-5
CONTEXT = 64

# What SigLIP's tokenizers do with special-token spellings, punctuation and "▁".
SIGLIP_STRINGS = [
    "</s>",
    "<unk>",
    "a </s> b",
    "x</s>",
    "</s>x",
    "</S> <UNK> cat",
    "a photo of a cat.</s>",
    "cat</s></s>",
    "\u2581lead \u2581 a\u2581b",
    "<eos>",
    "<bos> hi <pad>",
    "<EOS> <Eos>",
    "<mask><start_of_turn>user<end_of_turn>",
    "<unused0> <UNUSED0>",
    "</s>" * 70,
    "<eos> " * 70,
    "it's, well... (maybe) -- [sic]!",
    "C++ & C# @home #tag",
    "\u00a0nbsp\u2003em\u3000ideographic",
    "\uff21\uff22\uff23 \ufb01 \u00bd",  # fullwidth, a ligature, a fraction
    "   ",
    ". , ; !",
]
TOKEN_TEXTS = CORPUS + SIGLIP_STRINGS
TEXTS = [
    "a photo of a cat",
    "A DOG running on the beach at sunset!",
    "",
    "über café naïve — ünïcödé",
    "東京の夜景 🐱",
    "word " * 80,
    "it's a 3.14 test, isn't it? </s> <eos>",
]


def _images() -> list[Image.Image]:
    sizes = [(48, 64), (64, 48), (32, 32), (33, 97), (120, 80), (17, 23)]
    images = [Image.fromarray(photo_array(h, w, seed=i)) for i, (h, w) in enumerate(sizes)]
    rgba = np.dstack([photo_array(40, 50, seed=9), alpha_array(40, 50, seed=9)])
    return [*images, Image.fromarray(rgba, "RGBA"), images[0].convert("L")]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    return float((_unit(a) * _unit(b)).sum(axis=1).min())


@pytest.fixture(scope="module")
def tiny_siglip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.siglip_checkpoints import write_siglip

    return write_siglip(tmp_path_factory.mktemp("tiny_siglip"), "spiece", seed=0)


@pytest.fixture(scope="module")
def tiny_siglip2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.siglip_checkpoints import write_siglip

    return write_siglip(tmp_path_factory.mktemp("tiny_siglip2"), "gemma", seed=1)


def _reference_tokenizer(folder: Path) -> Any:
    config = json.loads((folder / "tokenizer_config.json").read_text())
    if config["tokenizer_class"] == "SiglipTokenizer":
        return transformers.SiglipTokenizer.from_pretrained(folder)
    return transformers.Siglip2Tokenizer.from_pretrained(folder)


def _reference_ids(folder: Path, texts: list[str]) -> np.ndarray:
    tokenizer = _reference_tokenizer(folder)
    encoded = tokenizer(texts, padding="max_length", max_length=CONTEXT, truncation=True)
    return np.asarray(encoded["input_ids"], dtype=np.int64)


class Reference:
    """transformers' SiglipModel on one checkpoint folder."""

    def __init__(self, folder: Path) -> None:
        from transformers.models.siglip.image_processing_pil_siglip import (
            SiglipImageProcessorPil,
        )

        self.folder = folder
        self.model = transformers.SiglipModel.from_pretrained(folder, dtype=torch.float32).eval()
        self.processor = SiglipImageProcessorPil.from_pretrained(folder)

    def pixels(self, images: list[Image.Image]) -> Any:
        return self.processor(images, return_tensors="pt")["pixel_values"]

    def ids(self, texts: list[str]) -> Any:
        return torch.from_numpy(_reference_ids(self.folder, texts))

    def image_features(self, images: list[Image.Image]) -> np.ndarray:
        with torch.no_grad():
            out = self.model.get_image_features(pixel_values=self.pixels(images))
        return out.pooler_output.numpy()

    def text_features(self, texts: list[str]) -> np.ndarray:
        with torch.no_grad():  # no attention mask: SigLIP was trained without one
            return self.model.get_text_features(input_ids=self.ids(texts)).pooler_output.numpy()

    def label_scores(self, images: list[Image.Image], texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            out = self.model(input_ids=self.ids(texts), pixel_values=self.pixels(images))
        return torch.sigmoid(out.logits_per_image).numpy()


# ------------------------------------------------------------------ tokenizers


# SiglipTokenizer warns of texts that end in "</s>" already, which the corpus has on purpose.
@pytest.mark.filterwarnings("ignore:This sequence already has")
@pytest.mark.parametrize("kind", ["tiny_siglip", "tiny_siglip2"])
def test_token_ids_equal_transformers(kind: str, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(kind)
    expected = _reference_ids(folder, TOKEN_TEXTS)
    tokenizer = siglip_tokenizer(folder, CONTEXT)
    encoded = tokenizer.encode(TOKEN_TEXTS)
    ids = tokenizer.pad(encoded.ids)
    mismatched = [t for t, a, b in zip(TOKEN_TEXTS, ids, expected, strict=True) if (a != b).any()]
    assert not mismatched, f"{len(mismatched)} of {len(TOKEN_TEXTS)} differ, e.g. {mismatched[0]!r}"
    reference = _reference_tokenizer(folder)
    untruncated = [len(reference(t)["input_ids"]) for t in TOKEN_TEXTS]
    assert encoded.truncated.tolist() == [n > CONTEXT for n in untruncated]
    print(f"\n{kind}: {len(TOKEN_TEXTS)} texts, ids equal, {encoded.truncated.sum()} cut")


def test_siglip2_lowercases_as_it_was_trained(tiny_siglip2: Path) -> None:
    """AutoTokenizer gives these folders a GemmaTokenizer, which in transformers 5 drops
    the lowercasing their tokenizer.json holds; Siglip2Tokenizer and we keep it. On text
    that is lowercase already, all three agree."""
    tokenizer = siglip_tokenizer(tiny_siglip2, CONTEXT)
    ours = tokenizer.pad(tokenizer.encode(["A Photo Of A CAT", "a photo of a cat"]).ids)
    assert (ours[0] == ours[1]).all()
    auto = transformers.AutoTokenizer.from_pretrained(tiny_siglip2)
    lower = [t for t in TOKEN_TEXTS if t == t.lower()]
    expected = auto(lower, padding="max_length", max_length=CONTEXT, truncation=True)
    assert (tokenizer.pad(tokenizer.encode(lower).ids) == np.asarray(expected["input_ids"])).all()


# ------------------------------------------------------------------ embeddings


@pytest.mark.parametrize("kind", ["tiny_siglip", "tiny_siglip2"])
def test_fp32_equals_transformers(kind: str, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(kind)
    reference = Reference(folder)
    images = _images()
    model = handspring.load(folder, precision="fp32")
    assert model.family == "siglip" and model.modalities == ("image", "text")
    image = model.embed_images(images, normalize=False).embeddings
    text = model.embed_texts(TEXTS, normalize=False)
    ref_image, ref_text = reference.image_features(images), reference.text_features(TEXTS)
    image_err = float(np.abs(_unit(image) - _unit(ref_image)).max())
    text_err = float(np.abs(_unit(text) - _unit(ref_text)).max())
    raw_err = max(np.abs(image - ref_image).max(), np.abs(text - ref_text).max())
    print(
        f"\n{kind} fp32 max abs: unit image {image_err:.2e}, text {text_err:.2e}; raw {raw_err:.2e}"
    )
    assert image_err <= FP32_MAX_ABS and text_err <= FP32_MAX_ABS
    tokens, truncated = model.count_tokens(TEXTS)
    assert truncated.tolist() == [t == TEXTS[5] for t in TEXTS]
    assert tokens.max() == CONTEXT


def test_zero_shot_scores_are_sigmoids_of_the_model_logits(tiny_siglip: Path) -> None:
    reference = Reference(tiny_siglip)
    images = _images()[:4]
    labels = ["cat", "dog", "beach at sunset"]
    model = handspring.load(tiny_siglip)
    probs, embedded = model.classify(images, labels, template="a photo of a {}.")
    expected = reference.label_scores(images, [f"a photo of a {label}." for label in labels])
    assert np.abs(probs - expected).max() <= 1e-5
    assert model.zero_shot == "sigmoid" and len(embedded) == len(images)
    # Each label scored on its own: the scores of an image need not sum to 1.
    assert not np.allclose(probs.sum(axis=1), 1.0)


def test_int8_close_to_fp32(tiny_siglip: Path) -> None:
    images = _images()
    fp32 = handspring.load(tiny_siglip, precision="fp32")
    int8 = handspring.load(tiny_siglip, precision="int8")
    image = _cosine_min(int8.embed_images(images).embeddings, fp32.embed_images(images).embeddings)
    text = _cosine_min(int8.embed_texts(TEXTS), fp32.embed_texts(TEXTS))
    print(f"\ntiny int8 min cosine to fp32: image {image:.5f}, text {text:.5f}")
    assert image >= 0.995 and text >= 0.99


@pytest.mark.slow
def test_full_size_base_patch16_224(tmp_path: Path) -> None:
    """google/siglip-base-patch16-224's size: fp32 parity, and the int8 figures the
    registry's gates hold (photo-like images, ~30 varied texts)."""
    from tests.support.siglip_checkpoints import BASE_TEXT, BASE_VISION, write_siglip

    folder = write_siglip(tmp_path / "base", "spiece", BASE_VISION, BASE_TEXT, seed=2)
    photos = [photo_array(300 + 37 * i, 400 - 23 * i, seed=100 + i) for i in range(10)]
    images = _images() + [Image.fromarray(photo) for photo in photos]
    texts = TEXTS + CORPUS[:24]
    reference = Reference(folder)
    ref_image, ref_text = reference.image_features(images), reference.text_features(texts)
    fp32 = handspring.load(folder, precision="fp32")
    image = fp32.embed_images(images).embeddings
    text = fp32.embed_texts(texts)
    image_err = float(np.abs(image - _unit(ref_image)).max())
    text_err = float(np.abs(text - _unit(ref_text)).max())
    int8 = handspring.load(folder, precision="int8")
    image_cos = _cosine_min(int8.embed_images(images).embeddings, image)
    text_cos = _cosine_min(int8.embed_texts(texts), text)
    print(
        f"\nbase/16-224 fp32 max abs (unit): image {image_err:.2e}, text {text_err:.2e}; "
        f"int8 min cosine: image {image_cos:.5f}, text {text_cos:.5f}"
    )
    assert image_err <= FP32_MAX_ABS and text_err <= FP32_MAX_ABS
    gates = dict(known_model("siglip-base-patch16-224").int8_gates)  # type: ignore[union-attr]
    assert image_cos >= gates["image"].required_cosine
    assert text_cos >= gates["text"].required_cosine


# ------------------------------------------------------------------ loading


def test_found_by_its_files_and_named_in_the_registry(tiny_siglip: Path) -> None:
    assert detect_family(tiny_siglip).name == "siglip"
    for alias, repo in (
        ("siglip-base-patch16-224", "google/siglip-base-patch16-224"),
        ("siglip2-base-patch16-224", "google/siglip2-base-patch16-224"),
    ):
        entry = known_model(alias)
        assert entry is not None and entry.repo_id == repo and entry.family == "siglip"
        assert entry.licence == "Apache-2.0" and entry.dim == 768
        gates = dict(entry.int8_gates)
        assert set(gates) == {"image", "text"} and all(g.passed for g in gates.values())


def test_an_alias_loads_from_the_hub_cache(
    tiny_siglip2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from huggingface_hub import constants

    from tests.support.hub_cache import hub_repo

    _, snapshot = hub_repo("google/siglip2-base-patch16-224", tmp_path / "hub")
    shutil.copytree(tiny_siglip2, snapshot)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = handspring.load("siglip2-base-patch16-224", modalities=["text"])
    assert model.family == "siglip" and model.modalities == ("text",)
    expected = handspring.load(tiny_siglip2, modalities=["text"]).embed_texts(TEXTS)
    np.testing.assert_array_equal(model.embed_texts(TEXTS), expected)


def _copy_with_config(source: Path, target: Path, change: dict[str, Any]) -> Path:
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).symlink_to(path)
    (target / "config.json").unlink()
    config = json.loads((source / "config.json").read_text())
    for key, value in change.items():
        section, _, field = key.partition(".")
        if field:
            config[section][field] = value
        else:
            config[key] = value
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        # A SigLIP folder relabelled as NaFlex: its patch embedding is a Conv, not a Linear.
        ({"model_type": "siglip2"}, "shape"),
        ({"vision_config.vision_use_head": False}, "no pooling head"),
        ({"text_config.num_hidden_layers": 3}, "tensors missing"),
    ],
)
def test_unsupported_checkpoints_say_why(
    tiny_siglip: Path, tmp_path: Path, change: dict[str, Any], reason: str
) -> None:
    folder = _copy_with_config(tiny_siglip, tmp_path / "changed", change)
    with pytest.raises(CheckpointError, match=reason):
        handspring.load(folder)


# ------------------------------------------------------------------ CLI and server


def test_embed_command(tiny_siglip: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from handspring.cli import main

    image_path = tmp_path / "photo.png"
    Image.fromarray(photo_array(40, 56, seed=5)).save(image_path)
    out = tmp_path / "out.json"
    args = ["embed", "-m", str(tiny_siglip), "-i", str(image_path), "-t", "a cat", "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    items = json.loads(out.read_text())["items"]
    got = np.array([item["embedding"] for item in items], dtype=np.float32)
    model = handspring.load(tiny_siglip)
    expected = np.concatenate(
        [model.embed_images([image_path]).embeddings, model.embed_texts(["a cat"])]
    )
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_served_by_the_weaviate_route(tiny_siglip: Path) -> None:
    import requests

    from handspring.server.app import create_app
    from handspring.server.config import ModelSpec, ServerConfig
    from tests.support.live_server import running

    png = io.BytesIO()
    Image.fromarray(photo_array(40, 56, seed=6)).save(png, "PNG")
    config = ServerConfig(models=(ModelSpec("siglip", str(tiny_siglip), "fp32"),))
    with running(create_app(config)) as url:
        body = {"texts": ["a cat"], "images": [base64.b64encode(png.getvalue()).decode()]}
        response = requests.post(f"{url}/vectorize", json=body, timeout=60)
    assert response.status_code == 200, response.text
    model = handspring.load(tiny_siglip)
    np.testing.assert_array_equal(
        np.array(response.json()["textVectors"], dtype=np.float32),
        model.embed_texts(["a cat"], normalize=False),
    )
    np.testing.assert_array_equal(
        np.array(response.json()["imageVectors"], dtype=np.float32),
        model.embed_images([png.getvalue()], normalize=False).embeddings,
    )
