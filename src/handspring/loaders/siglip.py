"""SigLIP checkpoints (transformers `SiglipModel` folders: SigLIP, and SigLIP 2 at fixed
resolution) as a `Model` with an image and a text tower, scored zero-shot by a sigmoid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from handspring.embedder import Model
from handspring.errors import CheckpointError
from handspring.graph.layers import Precision
from handspring.loaders.options import LoadOptions, log_ready, tower_precision
from handspring.models import siglip
from handspring.preprocess.image import ImageTransform
from handspring.preprocess.siglip_text import SiglipTokenizer, siglip_tokenizer
from handspring.registry import resolve_alias
from handspring.runtime.session import TowerSession, built_session
from handspring.towers.base import Tower
from handspring.towers.image import ImageTower
from handspring.towers.siglip_text import SiglipTextTower
from handspring.weights import hub
from handspring.weights.checkpoint import check_weights, weight_paths
from handspring.weights.json_files import read_json
from handspring.weights.safetensors_io import TensorSource
from handspring.weights.siglip_files import fetch_siglip

if TYPE_CHECKING:
    import onnx

PREFIXES = {"image": siglip.VISION_PREFIXES, "text": siglip.TEXT_PREFIXES}


def load_siglip(name: str, root: Path, modalities: Sequence[str], options: LoadOptions) -> Model:
    repo = resolve_alias(name)
    if not hub.is_local(repo):
        root = fetch_siglip(repo, modalities)
    config = _config(root / "config.json")
    paths = weight_paths(root, "transformers")
    tensors = TensorSource.open(paths)
    for modality in modalities:
        check_weights(
            tensors,
            _shapes(config, modality),
            PREFIXES[modality],
            ", ".join(map(str, paths)),
            modality,
            ignored=siglip.IGNORED_KEYS,
        )
    precisions = {m: tower_precision(name, m, options) for m in modalities}
    # Towers and the tokenizer start in parallel: ORT releases the GIL while it loads.
    with ThreadPoolExecutor(max_workers=len(modalities) + 1) as pool:
        futures = {
            m: pool.submit(_compiled, config, m, tensors, paths, precisions[m], options)
            for m in modalities
        }
        tokenizer_future = (
            pool.submit(siglip_tokenizer, root, config.text.max_position_embeddings)
            if "text" in modalities
            else None
        )
        compiled = {m: f.result() for m, f in futures.items()}
        tokenizer = tokenizer_future.result() if tokenizer_future else None
    log_ready(name, compiled)
    towers = {m: _tower(m, compiled[m], config, root, tokenizer, options) for m in modalities}
    scale, bias = _zero_shot(tensors)
    return Model(
        name,
        config.dim,
        towers,
        family="siglip",
        logit_scales={"image": scale} if scale is not None else {},
        logit_biases={"image": bias} if bias is not None else {},
        zero_shot="sigmoid",
    )


def _config(path: Path) -> siglip.SiglipConfig:
    raw = read_json(path)
    model_type = raw.get("model_type")
    if model_type != "siglip":
        raise CheckpointError(
            str(path),
            f"model_type {model_type!r}: only fixed-resolution SigLIP checkpoints "
            "(model_type 'siglip', which SigLIP 2's fixed-resolution ones are) are supported",
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

    return built_session(paths, graph_options, build, options.threads, options.spinning)


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


def _tower(
    modality: str,
    compiled: TowerSession,
    config: siglip.SiglipConfig,
    root: Path,
    tokenizer: SiglipTokenizer | None,
    options: LoadOptions,
) -> Tower:
    if modality == "image":
        return ImageTower(compiled, config.dim, image_transform(root, config), options.decode)
    assert tokenizer is not None
    return SiglipTextTower(compiled, config.dim, tokenizer)


def _zero_shot(tensors: Mapping[str, np.ndarray]) -> tuple[float | None, float | None]:
    """exp(logit_scale) and logit_bias, as SiglipModel applies them to cosines."""
    scale = bias = None
    if siglip.LOGIT_SCALE_KEY in tensors:
        scale = float(np.exp(np.asarray(tensors[siglip.LOGIT_SCALE_KEY]).reshape(())))
    if siglip.LOGIT_BIAS_KEY in tensors:
        bias = float(np.asarray(tensors[siglip.LOGIT_BIAS_KEY]).reshape(()))
    return scale, bias
