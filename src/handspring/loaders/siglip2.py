"""SigLIP 2 NaFlex checkpoints (transformers `Siglip2Model` folders, model_type "siglip2") as a
`Model` with a variable-resolution image tower and SigLIP's text tower, scored zero-shot by a
sigmoid. loaders/siglip.py hands these folders here once it has them on disk."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from handspring.embedder import Model
from handspring.errors import CheckpointError
from handspring.graph.layers import Precision
from handspring.loaders.options import LoadOptions, log_ready, tower_precision
from handspring.loaders.siglip import sigmoid_scored_model
from handspring.models import siglip, siglip2
from handspring.models.siglip2_positions import ResizedPositions
from handspring.preprocess.naflex import NaflexTransform
from handspring.preprocess.siglip_text import siglip_tokenizer
from handspring.runtime.session import TowerSession, built_session
from handspring.towers.base import Tower
from handspring.towers.naflex_image import NaflexImageTower
from handspring.towers.siglip_text import SiglipTextTower
from handspring.weights.checkpoint import check_weights, weight_paths
from handspring.weights.json_files import read_json
from handspring.weights.safetensors_io import TensorSource

if TYPE_CHECKING:
    import onnx

PREFIXES = {"image": siglip2.VISION_PREFIXES, "text": siglip.TEXT_PREFIXES}


def load_siglip2(name: str, root: Path, modalities: Sequence[str], options: LoadOptions) -> Model:
    """A NaFlex checkpoint folder (its files already fetched) as a `Model`."""
    config = read_config(root / "config.json")
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
    # Before any graph is built: a preprocessing config we cannot follow fails fast.
    transform = naflex_transform(root, config) if "image" in modalities else None
    rows = {"image": transform.max_num_patches} if transform is not None else {}
    precisions = {m: tower_precision(name, m, options, rows.get(m)) for m in modalities}
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
    towers: dict[str, Tower] = {}
    for modality in modalities:
        if modality == "image":
            assert transform is not None
            positions = ResizedPositions(np.asarray(tensors[siglip2.POSITION_KEY]))
            towers[modality] = NaflexImageTower(
                compiled[modality], config.dim, transform, positions, options.decode
            )
        else:
            assert tokenizer is not None
            towers[modality] = SiglipTextTower(compiled[modality], config.dim, tokenizer)
    return sigmoid_scored_model(name, config.dim, towers, tensors)


def read_config(path: Path) -> siglip2.Siglip2Config:
    raw = read_json(path)
    model_type = raw.get("model_type")
    if model_type != "siglip2":
        raise CheckpointError(
            str(path), f"model_type {model_type!r}: a SigLIP 2 NaFlex checkpoint says 'siglip2'"
        )
    try:
        return siglip2.Siglip2Config.from_hf(raw)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(str(path), f"unsupported SigLIP 2 config: {exc}") from exc


def naflex_transform(root: Path, config: siglip2.Siglip2Config) -> NaflexTransform:
    """Siglip2ImageProcessor's settings from preprocessor_config.json; without one, the
    model's patch size and as many patches as its position grid has (the processor's
    defaults for the released checkpoints)."""
    path = root / "preprocessor_config.json"
    raw = read_json(path) if path.is_file() else {}
    v = config.vision
    try:
        transform = NaflexTransform.from_hf(raw, v.patch_size, v.num_patches)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(str(path), f"unsupported image preprocessing: {exc}") from exc
    if transform.patch_size != v.patch_size:
        raise CheckpointError(
            str(path),
            f"patch_size {transform.patch_size}, but the model's patches are {v.patch_size}",
        )
    return transform


def _shapes(config: siglip2.Siglip2Config, modality: str) -> dict[str, tuple[int, ...]]:
    if modality == "image":
        return siglip2.vision_weight_shapes(config)
    return siglip.text_weight_shapes(config.text_tower)


def _compiled(
    config: siglip2.Siglip2Config,
    modality: str,
    tensors: Mapping[str, np.ndarray],
    paths: list[Path],
    precision: Precision,
    options: LoadOptions,
) -> TowerSession:
    graph_options = {
        "family": "siglip2",
        "tower": modality,
        "precision": precision.tag,
        "config": asdict(config.vision if modality == "image" else config.text),
    }

    def build() -> onnx.ModelProto:
        if modality == "image":
            return siglip2.build_vision_graph(config, tensors, precision)
        return siglip.build_text_graph(config.text_tower, tensors, precision)

    return built_session(
        paths, graph_options, build, options.threads, options.spinning, runtime=options.runtime
    )
