"""CLIP checkpoints (transformers, sentence-transformers, OpenAI/OpenCLIP, Immich) as a
`Model` with an image and a text tower.

Immich folders run as Immich's ML service runs them: images converted to RGB without
compositing transparency, shortest side resized and centre-cropped (see
`immich_image_transform`); texts of SigLIP exports cleaned and tokenized as Immich does
(`immich_tokenizer`), padded to the context length, scored zero-shot by a sigmoid. The
learned scale and bias of that sigmoid are not in Immich's export, so `classify` refuses
such a model (its embeddings, and so search, are exact).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handspring.embedder import Model
from handspring.loaders.options import LoadOptions, log_ready, tower_precision
from handspring.models.clip import build_text_graph, build_vision_graph
from handspring.preprocess.image import ImageTransform
from handspring.preprocess.siglip_text import SiglipTokenizer
from handspring.preprocess.siglip_text_exports import immich_tokenizer
from handspring.preprocess.text import ClipTokenizer
from handspring.registry import resolve_alias
from handspring.runtime.session import TowerSession, built_session, exported_session
from handspring.towers.base import Tower
from handspring.towers.image import ImageTower
from handspring.towers.siglip_text import SiglipTextTower
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
        futures = {m: pool.submit(_compiled, name, checkpoint, m, options) for m in modalities}
        tokenizer_future = pool.submit(_tokenizer, checkpoint) if "text" in modalities else None
        compiled = {m: f.result() for m, f in futures.items()}
        tokenizer = tokenizer_future.result() if tokenizer_future else None
    log_ready(checkpoint.name, compiled)
    dim = _dim(checkpoint, compiled)
    towers: dict[str, Tower] = {}
    if "image" in compiled:
        towers["image"] = _image_tower(checkpoint, compiled["image"], dim, options)
    if "text" in compiled:
        towers["text"] = _text_tower(checkpoint, compiled["text"], dim, tokenizer)
    if checkpoint.immich_siglip:
        return Model(checkpoint.name, dim, towers, family="clip", zero_shot="sigmoid")
    return Model(
        checkpoint.name,
        dim,
        towers,
        family="clip",
        logit_scales={"image": checkpoint.logit_scale},
    )


def _image_tower(
    checkpoint: ClipCheckpoint, compiled: TowerSession, dim: int, options: LoadOptions
) -> ImageTower:
    immich = checkpoint.layout == "immich"
    tower = ImageTower(
        compiled,
        dim,
        _image_transform(checkpoint),
        options.decode,
        tokens=_image_tokens(checkpoint),
        composite_alpha=not immich,  # Immich's `convert("RGB")` drops transparency
    )
    if compiled.session.get_inputs()[0].shape[0] == 1:  # newer Immich exports: one image
        tower.run_rows = 1
    return tower


def _image_tokens(checkpoint: ClipCheckpoint) -> int:
    """Rows per image through the trunk: patches and the class token."""
    if checkpoint.config is not None:
        return checkpoint.config.vision.grid**2 + 1
    vision = checkpoint.raw_config.get("vision_cfg", {})  # an exported graph's open_clip config
    size, patch = vision.get("image_size", 224), vision.get("patch_size")
    if not patch:  # a ResNet: what a ViT-B/32 image takes
        return 50
    side = size[0] if isinstance(size, list) else size
    return (int(side) // int(patch)) ** 2 + 1


def _text_tower(
    checkpoint: ClipCheckpoint,
    compiled: TowerSession,
    dim: int,
    tokenizer: ClipTokenizer | SiglipTokenizer | None,
) -> Tower:
    if isinstance(tokenizer, SiglipTokenizer):
        return SiglipTextTower(compiled, dim, tokenizer)
    assert tokenizer is not None
    return ClipTextTower(compiled, dim, tokenizer, fixed_length=checkpoint.layout == "immich")


def _compiled(
    name: str, checkpoint: ClipCheckpoint, modality: Modality, options: LoadOptions
) -> TowerSession:
    if checkpoint.layout == "immich":
        # Pre-exported graphs run as they are; precision is whatever they were exported at.
        return exported_session(checkpoint.onnx_files[modality], options.threads, options.spinning)
    assert checkpoint.config is not None and checkpoint.tensors is not None
    config, tensors = checkpoint.config, checkpoint.tensors
    rows = _image_tokens(checkpoint) if modality == "image" else None
    precision = tower_precision(name, modality, options, rows)
    graph_options = {
        "family": "clip",
        "tower": modality,
        "precision": precision.tag,
        "config": dataclasses.asdict(config.vision if modality == "image" else config.text),
        "projection_dim": config.projection_dim,
    }

    def build() -> onnx.ModelProto:
        builder = build_vision_graph if modality == "image" else build_text_graph
        return builder(config, tensors, precision)

    return built_session(
        checkpoint.weight_files,
        graph_options,
        build,
        options.threads,
        options.spinning,
        runtime=options.runtime,
    )


def _image_transform(checkpoint: ClipCheckpoint) -> ImageTransform:
    kind, raw = checkpoint.preprocess
    readers = {
        "hf": ImageTransform.from_hf,
        "open_clip": ImageTransform.from_open_clip,
        "immich": immich_image_transform,
    }
    return readers[kind](raw)


def immich_image_transform(
    preprocess_cfg: Mapping[str, Any], honour_resize_mode: bool = False
) -> ImageTransform:
    """Immich's image preprocessing of an Immich folder (visual/preprocess_cfg.json).

    By default the shortest side is resized and centre-cropped whatever `resize_mode` says:
    the Immich releases that built most existing libraries did so for every model,
    SigLIP's too. Newer releases honour `resize_mode` ("squash" for SigLIP exports, a
    resize to the square without crop); `honour_resize_mode=True` does as they do.
    """
    transform = ImageTransform.from_immich(preprocess_cfg)
    mode = preprocess_cfg.get("resize_mode") or "shortest"
    if not honour_resize_mode or mode == "shortest":
        return transform
    if mode != "squash":
        raise ValueError(f"resize_mode {mode!r}: Immich reads only 'shortest' and 'squash'")
    return dataclasses.replace(
        transform, shortest_edge=None, resize_to=transform.crop_size, crop_size=None
    )


def _context_length(checkpoint: ClipCheckpoint) -> int:
    if checkpoint.config is not None:
        return checkpoint.config.text.max_position_embeddings
    return int(checkpoint.raw_config.get("text_cfg", {}).get("context_length", 77))


def _tokenizer(checkpoint: ClipCheckpoint) -> ClipTokenizer | SiglipTokenizer:
    if checkpoint.immich_siglip or checkpoint.immich_mclip:
        assert checkpoint.tokenizer_folder is not None
        text_cfg = checkpoint.raw_config.get("text_cfg", {})
        clean = (text_cfg.get("tokenizer_kwargs") or {}).get("clean")
        return immich_tokenizer(
            checkpoint.tokenizer_folder, _context_length(checkpoint), clean == "canonicalize"
        )
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
