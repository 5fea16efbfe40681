"""`handspring.load`: from a model name to a ready model object."""

from __future__ import annotations

import logging
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from handspring.embedder import ClipModel
from handspring.errors import CheckpointError
from handspring.preprocess.decode import DEFAULT_MAX_PIXELS
from handspring.preprocess.image import ImageTransform
from handspring.preprocess.text import ClipTokenizer
from handspring.registry import DEFAULT_CLIP, DEFAULT_TEXT, resolve_alias
from handspring.runtime.towers import clip_tower, precision_of
from handspring.text_embedder import SentenceEmbedder, load_sentence_model
from handspring.weights import hub
from handspring.weights.checkpoint import ClipCheckpoint, Modality, load_clip_checkpoint
from handspring.weights.json_files import read_json
from handspring.weights.sentence_transformers import packaged_minilm_folder

log = logging.getLogger("handspring")

MODALITIES: tuple[Modality, ...] = ("image", "text")


def _image_transform(checkpoint: ClipCheckpoint) -> ImageTransform:
    kind, raw = checkpoint.preprocess
    return ImageTransform.from_hf(raw) if kind == "hf" else ImageTransform.from_open_clip(raw)


def _context_length(checkpoint: ClipCheckpoint) -> int:
    if checkpoint.config is not None:
        return checkpoint.config.text.max_position_embeddings
    return int(checkpoint.raw_config.get("text_cfg", {}).get("context_length", 77))


# Files a sentence-transformers text model needs: configs, vocabularies and
# safetensors (the repos also carry ONNX and OpenVINO exports we never read).
SENTENCE_PATTERNS = ("*.json", "*.txt", "*.model", "model.safetensors", "*/model.safetensors")


def _resolve(model: str) -> tuple[Path, bool]:
    """A model's layout files (for a repo id, fetched once here and handed on),
    and whether it is a sentence-transformers text model rather than CLIP."""
    if model == DEFAULT_TEXT and (packaged := packaged_minilm_folder()) is not None:
        return packaged, True
    repo = resolve_alias(model)
    root = hub.fetch(repo, hub.LAYOUT_PATTERNS)
    modules_path = root / "modules.json"
    if not modules_path.is_file():
        return root, False
    modules = read_json(modules_path)
    if not isinstance(modules, list):
        raise CheckpointError(str(modules_path), "expected a list of modules")
    if any(str(m.get("type", "")).endswith("CLIPModel") for m in modules):
        return root, False
    return (root if hub.is_local(repo) else hub.fetch(repo, SENTENCE_PATTERNS)), True


def locate(model: str | Path) -> tuple[Path, str]:
    """Where `model`'s files are and its family ("clip" or "sentence"), found without
    loading it (a server checks this to call itself ready before a lazy load). Raises
    when the files are not available."""
    root, is_sentence = _resolve(str(model))
    return root, "sentence" if is_sentence else "clip"


def _tokenizer(checkpoint: ClipCheckpoint) -> ClipTokenizer:
    assert checkpoint.tokenizer_folder is not None
    return ClipTokenizer.from_folder(
        checkpoint.tokenizer_folder,
        context_length=_context_length(checkpoint),
        cleaning=checkpoint.text_cleaning,
    )


def _dim(checkpoint: ClipCheckpoint, towers: dict) -> int:
    if checkpoint.config is not None:
        return checkpoint.config.projection_dim
    if "embed_dim" in checkpoint.raw_config:
        return int(checkpoint.raw_config["embed_dim"])
    shape = next(iter(towers.values())).session.get_outputs()[0].shape
    return int(shape[-1])


def load(
    model: str | Path = DEFAULT_CLIP,
    modalities: Collection[Modality] | None = None,
    precision: str = "fp32",
    threads: int | None = None,
    *,
    exif_orientation: bool = True,
    fast_decode: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    spinning: bool = True,
) -> ClipModel | SentenceEmbedder:
    """Load a model from a folder, a Hugging Face repo id or an alias: CLIP
    (a `ClipModel`) or a sentence-transformers text model (a `SentenceEmbedder`).

    modalities: which CLIP towers to load ("image", "text"; default both);
        only their files are read or downloaded. Text models have only "text".
    precision: "fp32" (exact to the reference) or "int8" (per-channel int8
        weights, several times faster).
    threads: ONNX Runtime threads per tower (default: the CPUs available).
    exif_orientation: rotate photos as their EXIF says (transformers'
        `load_image(path)` does; its processor on an opened image does not).
    fast_decode: JPEG draft-mode decoding (see README for its measured effect).
    spinning: ORT worker threads spin between ops (lowest latency). Turn it off when
        other threads of the process need the cores, as decoding does while indexing.
    """
    asked = tuple(dict.fromkeys(modalities)) if modalities is not None else None
    if asked is not None and (not asked or set(asked) - set(MODALITIES)):
        raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {asked}")
    precision_obj = precision_of(precision)
    root, is_text_model = _resolve(str(model))
    if is_text_model:
        if asked is not None and "image" in asked:
            raise ValueError(f"{model} is a text model: it has no image modality")
        return load_sentence_model(str(model), root, precision_obj, threads, spinning)
    modalities = asked or MODALITIES
    checkpoint = load_clip_checkpoint(resolve_alias(str(model)), modalities, layout_root=root)
    # Towers and the tokenizer start in parallel: ORT releases the GIL while
    # it loads and pre-packs weights, which is most of a start from the cache.
    with ThreadPoolExecutor(max_workers=len(modalities) + 1) as pool:
        futures = {
            m: pool.submit(clip_tower, checkpoint, m, precision_obj, threads, spinning)
            for m in modalities
        }
        tokenizer_future = pool.submit(_tokenizer, checkpoint) if "text" in modalities else None
        towers = {m: f.result() for m, f in futures.items()}
        tokenizer = tokenizer_future.result() if tokenizer_future else None
    for modality, tower in towers.items():
        log.info(
            "%s %s tower ready in %.2f s (%s)",
            checkpoint.name,
            modality,
            tower.seconds,
            "built" if tower.built else "cached graph",
        )
    return ClipModel(
        name=checkpoint.name,
        dim=_dim(checkpoint, towers),
        image_tower=towers.get("image"),
        text_tower=towers.get("text"),
        transform=_image_transform(checkpoint) if "image" in towers else None,
        tokenizer=tokenizer,
        logit_scale=checkpoint.logit_scale,
        fixed_text_length=checkpoint.layout == "immich",
        exif_orientation=exif_orientation,
        fast_decode=fast_decode,
        max_pixels=max_pixels,
    )
