"""`handspring.load`: from a model name to a ready `Model`.

A model's family is found from its files (or the registry, for a known repo) without
loading it; the family's loader then builds only the towers asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from handspring.embedder import Model
from handspring.errors import CheckpointError
from handspring.loaders.options import DEFAULT_MAX_AUDIO_SECONDS, LoadOptions
from handspring.preprocess.decode import DEFAULT_MAX_PIXELS
from handspring.registry import (
    DEFAULT_CLIP,
    DEFAULT_TEXT,
    FAMILIES,
    Family,
    check_bf16_gates,
    known_model,
    resolve_alias,
)
from handspring.runtime.backends import Runtime, check_runtime
from handspring.runtime.session import graph_precision
from handspring.towers.image import DecodeOptions
from handspring.weights import hub
from handspring.weights.json_files import read_json
from handspring.weights.sentence_transformers import fetch_sentence, packaged_minilm_folder

log = logging.getLogger("handspring")


@dataclass(frozen=True)
class Located:
    root: Path  # the model's layout files (for a repo id, fetched once here and handed on)
    family: Family


def locate(model: str | Path) -> Located:
    """Where `model`'s files are and its family, found without loading it (a server checks
    this to call itself ready before a lazy load). Raises when the files are not available."""
    name = str(model)
    if name == DEFAULT_TEXT and (packaged := packaged_minilm_folder()) is not None:
        return Located(packaged, FAMILIES["sentence"])
    repo = resolve_alias(name)
    known = known_model(name)
    if known is not None and FAMILIES[known.family].own_layout:
        # Families that read their own files (no CLIP or sentence layout to probe).
        return Located(
            hub.fetch(repo, FAMILIES[known.family].layout_patterns), FAMILIES[known.family]
        )
    root = hub.fetch(repo, hub.LAYOUT_PATTERNS)
    family = detect_family(root)
    if family.name == "sentence" and not hub.is_local(repo):
        root = fetch_sentence(repo)
    return Located(root, family)


def detect_family(root: Path) -> Family:
    # Families with a detector first: a CrossEncoder or SparseEncoder folder has a
    # modules.json too, which the sentence layout below would claim.
    for family in FAMILIES.values():
        if family.own_layout and family.function("detector")(root):
            return family
    modules_path = root / "modules.json"
    if modules_path.is_file():
        modules = read_json(modules_path)
        if not isinstance(modules, list):
            raise CheckpointError(str(modules_path), "expected a list of modules")
        if any(str(m.get("type", "")).endswith("CLIPModel") for m in modules):
            return FAMILIES["clip"]
        return FAMILIES["sentence"]
    return FAMILIES["clip"]  # the CLIP layouts name what is wrong when it is none of them


def load(
    model: str | Path = DEFAULT_CLIP,
    modalities: Collection[str] | None = None,
    precision: str = "fp32",
    threads: int | None = None,
    *,
    exif_orientation: bool = True,
    fast_decode: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
    spinning: bool = True,
    backend: str = "auto",
) -> Model:
    """Load a model from a folder, a Hugging Face repo id or an alias: CLIP, ImageBind or a
    sentence-transformers text model. `model.modalities` says what it embeds.

    modalities: which towers to load (default: all the model has); only their files are
        read or downloaded.
    precision: "fp32" (exact to the reference), "int8" (per-channel int8
        weights, several times faster; offered per tower after a measured gate) or "bf16"
        (the fp32 graph in bf16 on OpenVINO, on CPUs with AVX512-BF16 or AMX; offered per
        tower only where a gate was measured).
    threads: ONNX Runtime threads per tower (default: the CPUs available).
    exif_orientation: rotate photos as their EXIF says (transformers'
        `load_image(path)` does; its processor on an opened image does not).
    fast_decode: JPEG draft-mode decoding (see README for its measured effect).
    max_pixels: images over this many pixels are refused (a decompression-bomb guard).
    max_audio_seconds: sounds longer than this are refused, from their header.
    spinning: ORT worker threads spin between ops (lowest latency). Turn it off when
        other threads of the process need the cores, as decoding does while indexing.
    backend: "auto" (ONNX Runtime, or OpenVINO where it is installed and was measured
        faster for the tower and precision; bf16 always runs on OpenVINO), "onnxruntime"
        or "openvino" (`pip install handspring[openvino]`). See runtime/backends.py.
    """
    asked = tuple(dict.fromkeys(modalities)) if modalities is not None else None
    if asked is not None and not asked:
        raise ValueError("modalities must be a non-empty list, got an empty one")
    check_runtime(Runtime(backend, precision))
    if precision == "bf16":  # refused before any download or build
        check_bf16_gates(str(model), asked)
    options = LoadOptions(
        precision=graph_precision(precision),
        precision_name=precision,
        backend=backend,
        threads=threads,
        spinning=spinning,
        decode=DecodeOptions(exif_orientation, fast_decode, max_pixels),
        max_audio_seconds=max_audio_seconds,
    )
    located = locate(model)
    family = located.family
    if asked is not None and (missing := [m for m in asked if m not in family.modalities]):
        raise ValueError(
            f"{model} is a {family.description}: it has no {missing[0]} modality "
            f"(modalities it has: {', '.join(family.modalities)})"
        )
    loader = family.function("loader")
    return loader(str(model), located.root, asked or family.modalities, options)
