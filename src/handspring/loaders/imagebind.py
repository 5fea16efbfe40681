"""ImageBind (Meta): six modalities in one embedding space, each its own tower.

Weights come from the official `imagebind_huge.pth` (read without torch, through a
restricted unpickler) or from safetensors under the original keys; a `config.json` with
`"model_type": "imagebind"` may set other sizes. Loading some modalities reads only
their tensors.
"""

from __future__ import annotations

import logging
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
from handspring.models import imagebind as ib
from handspring.preprocess.image import ImageTransform
from handspring.preprocess.text import ClipTokenizer
from handspring.registry import resolve_alias
from handspring.runtime.graph_cache import tensors_fingerprint
from handspring.runtime.session import TowerSession, built_session
from handspring.towers.arrays import ArrayTower
from handspring.towers.audio import AudioTower
from handspring.towers.base import Tower
from handspring.towers.image import ImageTower
from handspring.towers.text import ClipTextTower
from handspring.weights import hub
from handspring.weights.checkpoint import check_weights
from handspring.weights.imagebind_files import fetch_imagebind, imagebind_weights
from handspring.weights.json_files import read_json

if TYPE_CHECKING:
    import onnx

log = logging.getLogger("handspring")

LICENCE_NOTICE = (
    "ImageBind's weights are licensed CC-BY-NC-SA 4.0: non-commercial use only, "
    "share-alike (https://creativecommons.org/licenses/by-nc-sa/4.0/)"
)

# The array towers' graph inputs, one item each.
ARRAY_SHAPES = {
    "depth": (1, ib.IMAGE_SIZE, ib.IMAGE_SIZE),
    "thermal": (1, ib.IMAGE_SIZE, ib.IMAGE_SIZE),
    "imu": (ib.IMU_CHANNELS, ib.IMU_LENGTH),
}

_licence_told = False


def load_imagebind(name: str, root: Path, modalities: Sequence[str], options: LoadOptions) -> Model:
    global _licence_told
    if not _licence_told:
        _licence_told = True
        log.warning("%s: %s", name, LICENCE_NOTICE)
    repo = resolve_alias(name)
    if not hub.is_local(repo):
        root = fetch_imagebind(repo, modalities)
    config = _config(root)
    tensors, files = imagebind_weights(root)
    for modality in modalities:
        check_weights(
            tensors,
            ib.weight_shapes(config, modality),
            ib.key_prefixes(modality),
            ", ".join(map(str, files)),
            modality,
            ignored=ib.IGNORED_KEYS,
        )
    # Only the image tower runs items one at a time (ImageTower); the others batch them.
    rows = {"image": config.tokens("image")}
    precisions = {m: tower_precision(name, m, options, rows.get(m)) for m in modalities}
    with ThreadPoolExecutor(max_workers=min(len(modalities), 3)) as pool:
        futures = {
            m: pool.submit(_compiled, config, m, tensors, files, precisions[m], options)
            for m in modalities
        }
        compiled = {m: f.result() for m, f in futures.items()}
    log_ready(name, compiled)
    dim = config.out_embed_dim
    towers = {m: _tower(m, compiled[m], dim, config, options) for m in modalities}
    scales = _logit_scales(tensors) if "text" in modalities else {}
    return Model(name, dim, towers, family="imagebind", logit_scales=scales)


def _config(root: Path) -> ib.ImageBindConfig:
    path = root / "config.json"
    if not path.is_file():
        return ib.ImageBindConfig()
    try:
        return ib.ImageBindConfig.from_json(read_json(path))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(str(path), f"not an ImageBind config: {exc}") from exc


def _compiled(
    config: ib.ImageBindConfig,
    modality: str,
    tensors: Mapping[str, np.ndarray],
    files: list[Path],
    precision: Precision,
    options: LoadOptions,
) -> TowerSession:
    graph_options = {
        "family": "imagebind",
        "tower": modality,
        "precision": precision.tag,
        "config": asdict(config),
    }

    def build() -> onnx.ModelProto:
        return ib.build_graph(config, modality, tensors, precision)

    # Only this tower's tensors are hashed: the others' gigabytes are never read.
    fingerprint = tensors_fingerprint(tensors, ib.weight_shapes(config, modality), files)
    return built_session(
        files,
        graph_options,
        build,
        options.threads,
        options.spinning,
        [fingerprint],
        runtime=options.runtime,
    )


def _tower(
    modality: str,
    compiled: TowerSession,
    dim: int,
    config: ib.ImageBindConfig,
    options: LoadOptions,
) -> Tower:
    if modality == "image":
        # data.py: Resize(224, bicubic) on the short side, CenterCrop(224), the CLIP mean
        # and std; torchvision's rounding, which open_clip's preprocessing shares.
        transform = ImageTransform.from_open_clip({"size": ib.IMAGE_SIZE})
        tokens = config.tokens("image")
        return ImageTower(
            compiled, dim, transform, options.decode, tokens=tokens, composite_alpha=False
        )
    if modality == "text":
        # ImageBind's own SimpleTokenizer: its cleaning, its special-token spellings,
        # zero padding (preprocess/text.py).
        tokenizer = ClipTokenizer.from_clip_vocab(
            context_length=ib.CONTEXT_LENGTH, cleaning="imagebind"
        )
        return ClipTextTower(compiled, dim, tokenizer)
    if modality == "audio":
        return AudioTower(compiled, dim, options.max_audio_seconds)
    return ArrayTower(
        modality, compiled, dim, ARRAY_SHAPES[modality], max_pixels=options.decode.max_pixels
    )


def _logit_scales(tensors: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Zero-shot logits against texts: the text postprocessor's learned scale (capped at
    100, as the reference caps it) times each modality's own fixed scale."""
    text_scale = min(float(np.exp(np.asarray(tensors[ib.TEXT_LOGIT_SCALE_KEY]))), 100.0)
    return {m: text_scale * s for m, s in ib.OUTPUT_SCALES.items() if m != "text"}
