"""SigLIP checkpoints as a `Model` with an image and a text tower, scored zero-shot by a
sigmoid: transformers `SiglipModel` folders (SigLIP, and SigLIP 2 at fixed resolution) and
open_clip SigLIP folders (a timm image trunk; timm/ViT-B-16-SigLIP and the like), each with
its own reference's image preprocessing and tokenizer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from handspring.embedder import Model
from handspring.errors import CheckpointError
from handspring.graph.layers import Precision
from handspring.loaders.options import LoadOptions, log_ready, tower_precision
from handspring.models import siglip
from handspring.models.siglip_open_clip import config_from_open_clip
from handspring.preprocess.image import ImageTransform
from handspring.preprocess.siglip_text import SiglipTokenizer, siglip_tokenizer
from handspring.preprocess.siglip_text_exports import open_clip_siglip_tokenizer
from handspring.registry import resolve_alias
from handspring.runtime.session import TowerSession, built_session
from handspring.towers.base import Tower
from handspring.towers.image import ImageTower
from handspring.towers.siglip_text import SiglipTextTower
from handspring.weights import hub
from handspring.weights.checkpoint import check_weights, weight_paths
from handspring.weights.json_files import read_json
from handspring.weights.open_clip_siglip_names import OpenClipSiglipSource, open_clip_siglip_names
from handspring.weights.safetensors_io import TensorSource
from handspring.weights.siglip_files import (
    OPEN_CLIP_CONFIG,
    TEXT_PATTERNS,
    Layout,
    fetch_siglip,
    siglip_layout,
)

if TYPE_CHECKING:
    import onnx

PREFIXES = {"image": siglip.VISION_PREFIXES, "text": siglip.TEXT_PREFIXES}


@dataclass(frozen=True)
class SiglipCheckpoint:
    root: Path
    layout: Layout
    config: siglip.SiglipConfig
    tensors: Mapping[str, np.ndarray]  # under transformers' names
    paths: list[Path]
    open_clip_cfg: dict[str, Any] = field(default_factory=dict)  # open_clip_config.json


def load_siglip(name: str, root: Path, modalities: Sequence[str], options: LoadOptions) -> Model:
    repo = resolve_alias(name)
    if not hub.is_local(repo):
        root = fetch_siglip(repo, modalities)
    if (root / "config.json").is_file() and read_json(root / "config.json").get(
        "model_type"
    ) == "siglip2":  # SigLIP 2's variable-resolution (NaFlex) model: a graph of its own
        from handspring.loaders.siglip2 import load_siglip2

        return load_siglip2(name, root, modalities, options)
    checkpoint = read_checkpoint(root)
    config, tensors, paths = checkpoint.config, checkpoint.tensors, checkpoint.paths
    for modality in modalities:
        check_weights(
            tensors,
            _shapes(config, modality),
            PREFIXES[modality],
            ", ".join(map(str, paths)),
            modality,
            ignored=siglip.IGNORED_KEYS,
        )
    rows = {"image": config.vision.grid**2}
    precisions = {m: tower_precision(name, m, options, rows.get(m)) for m in modalities}
    # Towers and the tokenizer start in parallel: ORT releases the GIL while it loads.
    with ThreadPoolExecutor(max_workers=len(modalities) + 1) as pool:
        futures = {
            m: pool.submit(_compiled, config, m, tensors, paths, precisions[m], options)
            for m in modalities
        }
        tokenizer_future = pool.submit(_tokenizer, checkpoint) if "text" in modalities else None
        compiled = {m: f.result() for m, f in futures.items()}
        tokenizer = tokenizer_future.result() if tokenizer_future else None
    log_ready(name, compiled)
    towers = {m: _tower(m, compiled[m], checkpoint, tokenizer, options) for m in modalities}
    return sigmoid_scored_model(name, config.dim, towers, tensors)


def read_checkpoint(root: Path) -> SiglipCheckpoint:
    """A SigLIP folder's config, and its weights under transformers' names."""
    if siglip_layout(root) == "open_clip":
        return _open_clip_checkpoint(root)
    config = _config(root / "config.json")
    paths = weight_paths(root, "transformers")
    return SiglipCheckpoint(root, "transformers", config, TensorSource.open(paths), paths)


def _open_clip_checkpoint(root: Path) -> SiglipCheckpoint:
    path = root / OPEN_CLIP_CONFIG
    raw = read_json(path)
    try:
        config = config_from_open_clip(raw.get("model_cfg", raw))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(str(path), f"unsupported open_clip SigLIP config: {exc}") from exc
    paths = weight_paths(root, "open_clip")
    source = TensorSource.open(paths)
    names = open_clip_siglip_names(config.vision.num_hidden_layers, config.text.num_hidden_layers)
    tensors = OpenClipSiglipSource(source, names)
    if tensors.unmapped:
        raise CheckpointError(
            source.describe(),
            f"{len(tensors.unmapped)} tensors have no place in an open_clip SigLIP "
            f"of this config ({config.vision.num_hidden_layers} image blocks, "
            f"{config.text.num_hidden_layers} text blocks)",
            key=tensors.unmapped[0],
        )
    return SiglipCheckpoint(root, "open_clip", config, tensors, paths, raw)


def _config(path: Path) -> siglip.SiglipConfig:
    raw = read_json(path)
    model_type = raw.get("model_type")
    if model_type != "siglip":
        raise CheckpointError(
            str(path),
            f"model_type {model_type!r} is not a SigLIP model ('siglip', or 'siglip2' for "
            "SigLIP 2's variable-resolution models)",
        )
    try:
        return siglip.SiglipConfig.from_hf(raw)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(str(path), f"unsupported SigLIP config: {exc}") from exc


def _shapes(config: siglip.SiglipConfig, modality: str) -> dict[str, tuple[int, ...]]:
    if modality == "image":
        return siglip.vision_weight_shapes(config)
    return siglip.text_weight_shapes(config)


def _compiled(
    config: siglip.SiglipConfig,
    modality: str,
    tensors: Mapping[str, np.ndarray],
    paths: list[Path],
    precision: Precision,
    options: LoadOptions,
) -> TowerSession:
    graph_options = {
        "family": "siglip",
        "tower": modality,
        "precision": precision.tag,
        "config": asdict(config.vision if modality == "image" else config.text),
    }

    def build() -> onnx.ModelProto:
        builder = siglip.build_vision_graph if modality == "image" else siglip.build_text_graph
        return builder(config, tensors, precision)

    return built_session(
        paths, graph_options, build, options.threads, options.spinning, runtime=options.runtime
    )


def _image_transform(checkpoint: SiglipCheckpoint) -> ImageTransform:
    if checkpoint.layout == "open_clip":
        return _open_clip_image_transform(checkpoint)
    return image_transform(checkpoint.root, checkpoint.config)


def image_transform(root: Path, config: siglip.SiglipConfig) -> ImageTransform:
    """SiglipImageProcessor: squash to the square size (no crop), rescale, mean = std = 0.5
    unless preprocessor_config.json says otherwise."""
    path = root / "preprocessor_config.json"
    size = config.vision.image_size
    defaults: dict[str, Any] = {
        "size": {"height": size, "width": size},
        "do_center_crop": False,  # SiglipImageProcessor has no crop unless its config asks
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    raw = read_json(path) if path.is_file() else {}
    try:
        return ImageTransform.from_hf({**defaults, **raw})
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(str(path), f"unsupported image preprocessing: {exc}") from exc


def _open_clip_image_transform(checkpoint: SiglipCheckpoint) -> ImageTransform:
    """open_clip's eval transform from open_clip_config.json's preprocess_cfg (SigLIP's:
    squash, bicubic, mean = std = 0.5), at the image tower's size as open_clip sets it."""
    preprocess = dict(checkpoint.open_clip_cfg.get("preprocess_cfg") or {})
    preprocess["size"] = checkpoint.config.vision.image_size
    try:
        return ImageTransform.from_open_clip(preprocess)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            str(checkpoint.root / OPEN_CLIP_CONFIG), f"unsupported preprocess_cfg: {exc}"
        ) from exc


def _tokenizer(checkpoint: SiglipCheckpoint) -> SiglipTokenizer:
    context = checkpoint.config.text.max_position_embeddings
    if checkpoint.layout != "open_clip":
        return siglip_tokenizer(checkpoint.root, context)
    model_cfg = checkpoint.open_clip_cfg.get("model_cfg", checkpoint.open_clip_cfg)
    text_cfg = model_cfg.get("text_cfg") or {}
    return open_clip_siglip_tokenizer(
        _tokenizer_folder(checkpoint.root, text_cfg), context, text_cfg
    )


def _tokenizer_folder(root: Path, text_cfg: Mapping[str, Any]) -> Path:
    """The folder's own tokenizer files, or those of the repo its config names
    (`hf_tokenizer_name`), from the hub cache, when the folder has none."""
    named = str(text_cfg.get("hf_tokenizer_name") or "")
    has_files = any((root / name).is_file() for name in ("tokenizer.json", "spiece.model"))
    if has_files or not named:
        return root
    return hub.fetch(named, TEXT_PATTERNS)


def _tower(
    modality: str,
    compiled: TowerSession,
    checkpoint: SiglipCheckpoint,
    tokenizer: SiglipTokenizer | None,
    options: LoadOptions,
) -> Tower:
    dim = checkpoint.config.dim
    if modality == "image":
        transform, tokens = _image_transform(checkpoint), checkpoint.config.vision.grid**2
        return ImageTower(compiled, dim, transform, options.decode, tokens=tokens)
    assert tokenizer is not None
    return SiglipTextTower(compiled, dim, tokenizer)


def sigmoid_scored_model(
    name: str, dim: int, towers: dict[str, Tower], tensors: Mapping[str, np.ndarray]
) -> Model:
    """A SigLIP-trained model: zero-shot scores are sigmoid(exp(logit_scale) * cos +
    logit_bias), as SiglipModel and Siglip2Model apply them, when the checkpoint has them."""
    scale = bias = None
    if siglip.LOGIT_SCALE_KEY in tensors:
        scale = float(np.exp(np.asarray(tensors[siglip.LOGIT_SCALE_KEY]).reshape(())))
    if siglip.LOGIT_BIAS_KEY in tensors:
        bias = float(np.asarray(tensors[siglip.LOGIT_BIAS_KEY]).reshape(()))
    return Model(
        name,
        dim,
        towers,
        family="siglip",
        logit_scales={"image": scale} if scale is not None else {},
        logit_biases={"image": bias} if bias is not None else {},
        zero_shot="sigmoid",
    )
