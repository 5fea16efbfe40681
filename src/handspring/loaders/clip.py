"""CLIP checkpoints (transformers, sentence-transformers, OpenAI/OpenCLIP, Immich) as a
`Model` with an image and a text tower."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from handspring.embedder import Model
from handspring.loaders.options import LoadOptions, log_ready
from handspring.models.clip import build_text_graph, build_vision_graph
from handspring.preprocess.image import ImageTransform
from handspring.preprocess.text import ClipTokenizer
from handspring.registry import resolve_alias
from handspring.runtime.session import TowerSession, built_session, exported_session
from handspring.towers.base import Tower
from handspring.towers.image import ImageTower
from handspring.towers.text import ClipTextTower
from handspring.weights.checkpoint import ClipCheckpoint, Modality, load_clip_checkpoint

if TYPE_CHECKING:
    import onnx

MODALITIES: tuple[Modality, ...] = ("image", "text")


def load_clip(name: str, root: Path, modalities: Sequence[str], options: LoadOptions) -> Model:
    checkpoint = load_clip_checkpoint(resolve_alias(name), modalities, layout_root=root)  # type: ignore[arg-type]
    # Towers and the tokenizer start in parallel: ORT releases the GIL while
    # it loads and pre-packs weights, which is most of a start from the cache.
    with ThreadPoolExecutor(max_workers=len(modalities) + 1) as pool:
        futures = {m: pool.submit(_compiled, checkpoint, m, options) for m in modalities}
        tokenizer_future = pool.submit(_tokenizer, checkpoint) if "text" in modalities else None
        compiled = {m: f.result() for m, f in futures.items()}
        tokenizer = tokenizer_future.result() if tokenizer_future else None
    log_ready(checkpoint.name, compiled)
    dim = _dim(checkpoint, compiled)
    towers: dict[str, Tower] = {}
    if "image" in compiled:
        towers["image"] = ImageTower(
            compiled["image"], dim, _image_transform(checkpoint), options.decode
        )
    if "text" in compiled:
        assert tokenizer is not None
        towers["text"] = ClipTextTower(
            compiled["text"], dim, tokenizer, fixed_length=checkpoint.layout == "immich"
        )
    return Model(
        checkpoint.name,
        dim,
        towers,
        family="clip",
        logit_scales={"image": checkpoint.logit_scale},
    )


def _compiled(checkpoint: ClipCheckpoint, modality: Modality, options: LoadOptions) -> TowerSession:
    if checkpoint.layout == "immich":
        # Pre-exported graphs run as they are; precision is whatever they were exported at.
        return exported_session(checkpoint.onnx_files[modality], options.threads, options.spinning)
    assert checkpoint.config is not None and checkpoint.tensors is not None
    config, tensors, precision = checkpoint.config, checkpoint.tensors, options.precision
    graph_options = {
        "family": "clip",
        "tower": modality,
        "precision": precision.tag,
        "config": asdict(config.vision if modality == "image" else config.text),
        "projection_dim": config.projection_dim,
    }

    def build() -> onnx.ModelProto:
        builder = build_vision_graph if modality == "image" else build_text_graph
        return builder(config, tensors, precision)

    return built_session(
        checkpoint.weight_files, graph_options, build, options.threads, options.spinning
    )


def _image_transform(checkpoint: ClipCheckpoint) -> ImageTransform:
    kind, raw = checkpoint.preprocess
    readers = {
        "hf": ImageTransform.from_hf,
        "open_clip": ImageTransform.from_open_clip,
        "immich": ImageTransform.from_immich,
    }
    return readers[kind](raw)


def _context_length(checkpoint: ClipCheckpoint) -> int:
    if checkpoint.config is not None:
        return checkpoint.config.text.max_position_embeddings
    return int(checkpoint.raw_config.get("text_cfg", {}).get("context_length", 77))


def _tokenizer(checkpoint: ClipCheckpoint) -> ClipTokenizer:
    if checkpoint.tokenizer_folder is None:  # open_clip's built-in vocabulary, as it uses it
        return ClipTokenizer.from_clip_vocab(
            context_length=_context_length(checkpoint), cleaning="open_clip"
        )
    return ClipTokenizer.from_folder(
        checkpoint.tokenizer_folder,
        context_length=_context_length(checkpoint),
        cleaning=checkpoint.text_cleaning,
    )


def _dim(checkpoint: ClipCheckpoint, compiled: dict[Modality, TowerSession]) -> int:
    if checkpoint.config is not None:
        return checkpoint.config.projection_dim
    if "embed_dim" in checkpoint.raw_config:
        return int(checkpoint.raw_config["embed_dim"])
    shape = next(iter(compiled.values())).session.get_outputs()[0].shape
    return int(shape[-1])
