"""CLIP checkpoints in the four layouts we read, resolved to one description.

- transformers: `config.json` (model_type "clip") + `model.safetensors`.
- sentence-transformers: `modules.json` naming a CLIPModel module whose
  folder (`0_CLIPModel/`) is a transformers checkpoint.
- OpenAI/OpenCLIP naming: `open_clip_config.json` + `open_clip_model.safetensors`.
- Immich: pre-exported `visual/model.onnx`, `textual/model.onnx`; CLIP, and SigLIP
  (its `config.json`, open_clip's model config, sets `init_logit_bias`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from handspring.errors import CheckpointError
from handspring.models.clip import (
    IGNORED_KEYS,
    ClipConfig,
    text_weight_shapes,
    vision_weight_shapes,
)
from handspring.weights import hub
from handspring.weights.clip_names import RenamedSource, open_clip_names
from handspring.weights.json_files import read_json
from handspring.weights.safetensors_io import TensorSource, shard_paths

Layout = Literal["transformers", "sentence-transformers", "open_clip", "immich"]
Modality = Literal["image", "text"]
# Whose image preprocessing a checkpoint's config describes: transformers' processor,
# open_clip's transform, or Immich's ML service (for folders it exported).
PreprocessKind = Literal["hf", "open_clip", "immich"]

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)
OPENAI_LOGIT_SCALE_INIT = 2.6592


# The tokenizers of M-CLIP's text encoders (Immich's exports keep them, fast or slow).
MCLIP_TOKENIZER_CLASSES = ("XLMRobertaTokenizer", "BertTokenizer")


@dataclass
class ClipCheckpoint:
    name: str  # what the caller asked for: a folder or a repo id
    folder: Path  # the folder holding the model (0_CLIPModel/ for sentence-transformers)
    layout: Layout
    raw_config: dict[str, Any]
    config: ClipConfig | None  # None for pre-exported ONNX
    tensors: Mapping[str, np.ndarray] | None
    weight_files: list[Path] = field(default_factory=list)
    onnx_files: dict[Modality, Path] = field(default_factory=dict)
    tokenizer_folder: Path | None = None
    text_cleaning: Literal["hf", "open_clip"] = "hf"
    preprocess: tuple[PreprocessKind, dict[str, Any]] = ("hf", {})

    @property
    def immich_siglip(self) -> bool:
        """An Immich export of a model trained with the sigmoid loss (SigLIP, NLLB-SigLIP):
        its text graph reads every position of a row padded to the context length, and its
        learned zero-shot scale and bias are not in the export."""
        return self.layout == "immich" and "init_logit_bias" in self.raw_config

    @property
    def immich_mclip(self) -> bool:
        """An Immich export of an M-CLIP text encoder (XLM-R or LaBSE, mean-pooled into CLIP's
        space): its text graph takes `input_ids` and `attention_mask`, padded to the context
        length by the encoder's own tokenizer."""
        if self.layout != "immich" or self.tokenizer_folder is None:
            return False
        config = self.tokenizer_folder / "tokenizer_config.json"
        tokenizer_class = read_json(config).get("tokenizer_class", "") if config.is_file() else ""
        return str(tokenizer_class).startswith(MCLIP_TOKENIZER_CLASSES)

    @property
    def logit_scale(self) -> float:
        if self.tensors is not None and "logit_scale" in self.tensors:
            return float(np.exp(np.asarray(self.tensors["logit_scale"]).reshape(())))
        init = self.raw_config.get("logit_scale_init_value", OPENAI_LOGIT_SCALE_INIT)
        return float(np.exp(init))


def detect_layout(folder: Path) -> tuple[Layout, Path]:
    """The layout of a model folder, and the folder holding the model proper."""
    # A repo id is first fetched without its weights, so the small
    # preprocess_cfg.json must identify the layout as well as the graphs.
    immich_markers = ("visual/model.onnx", "textual/model.onnx", "visual/preprocess_cfg.json")
    if any((folder / marker).is_file() for marker in immich_markers):
        return "immich", folder
    if (folder / "open_clip_config.json").is_file():
        return "open_clip", folder
    if (folder / "modules.json").is_file():
        modules = read_json(folder / "modules.json")
        for module in modules if isinstance(modules, list) else []:
            if str(module.get("type", "")).endswith("CLIPModel"):
                return "sentence-transformers", folder / module.get("path", "")
    if (folder / "config.json").is_file():
        model_type = read_json(folder / "config.json").get("model_type")
        if model_type == "clip":
            return "transformers", folder
        raise CheckpointError(
            str(folder / "config.json"),
            f"unknown architecture: model_type {model_type!r} is not a CLIP model",
        )
    raise CheckpointError(
        str(folder),
        "no CLIP checkpoint found (expected config.json, open_clip_config.json, "
        "modules.json, or visual/ and textual/ ONNX folders)",
    )


def _file_patterns(layout: Layout, sub: str, modalities: Collection[str]) -> list[str]:
    prefix = f"{sub}/" if sub else ""
    if layout == "immich":
        files = ["config.json"]
        if "image" in modalities:
            files += ["visual/model.onnx", "visual/model.onnx_data", "visual/preprocess_cfg.json"]
        if "text" in modalities:
            files += ["textual/model.onnx", "textual/model.onnx_data"]
            files += [f"textual/{name}" for name in TOKENIZER_FILES]
        return files
    weights = (
        ["open_clip_model.safetensors"]
        if layout == "open_clip"
        else ["model.safetensors", "model*.safetensors"]
    )
    files = [prefix + name for name in ("config.json", "open_clip_config.json", *weights)]
    if "image" in modalities:
        files.append(prefix + "preprocessor_config.json")
    if "text" in modalities:
        files += [prefix + name for name in TOKENIZER_FILES]
    return files


def weight_paths(folder: Path, layout: Layout) -> list[Path]:
    if layout == "open_clip":
        candidates = ["open_clip_model.safetensors"]
        pickles = ["open_clip_pytorch_model.bin"]
    else:
        candidates = ["model.safetensors"]
        pickles = ["pytorch_model.bin"]
    for name in candidates:
        if (folder / name).is_file():
            return [folder / name]
        if (folder / f"{name}.index.json").is_file():
            return shard_paths(folder, f"{name}.index.json")
    for name in pickles:
        if (folder / name).is_file():
            raise CheckpointError(
                str(folder / name),
                "PyTorch pickle weights are not read (they can run code when loaded); convert once with "
                '`python -c "import torch, safetensors.torch as s; '
                f"s.save_file(torch.load('{name}'), '{candidates[0]}')\"` or use a safetensors revision",
            )
    raise CheckpointError(str(folder), f"no {candidates[0]} (or sharded index) found")


def check_weights(
    tensors: Mapping[str, np.ndarray],
    expected: Mapping[str, tuple[int, ...]],
    prefixes: tuple[str, ...],
    source: str,
    tower: str,
    ignored: Collection[str] = IGNORED_KEYS,
) -> None:
    """Every tensor the config implies is there with its shape, and nothing else
    under the tower's prefixes (but the `ignored` buffers): a config that disagrees
    with its weights fails here."""
    shape_of = tensors.shape  # type: ignore[attr-defined]
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise CheckpointError(
            source, f"{len(missing)} of {len(expected)} {tower} tensors missing", key=missing[0]
        )
    for key, want in expected.items():
        got = tuple(shape_of(key))
        if got != tuple(want):
            raise CheckpointError(
                source, f"shape {got}, but the config implies {tuple(want)}", key=key
            )
    unexpected = [
        k for k in tensors if k.startswith(prefixes) and k not in expected and k not in ignored
    ]
    if unexpected:
        raise CheckpointError(
            source,
            f"{len(unexpected)} {tower} tensors the config does not account for "
            f"(checkpoint has {len(expected) + len(unexpected)}, config implies {len(expected)})",
            key=unexpected[0],
        )


TOWER_PREFIXES: dict[Modality, tuple[str, ...]] = {
    "image": ("vision_model.", "visual_projection."),
    "text": ("text_model.", "text_projection."),
}


def fetch_clip(model: str | Path, modalities: Collection[str]) -> Path:
    """The folder with the files the asked towers need, found from the layout files and
    downloaded (only those) when `model` is a repo id."""
    return _fetch(model, modalities, None)


def _fetch(model: str | Path, modalities: Collection[str], layout_root: Path | None) -> Path:
    root = layout_root or hub.fetch(model, hub.LAYOUT_PATTERNS)
    if hub.is_local(model):
        return root
    layout, folder = detect_layout(root)
    sub = folder.relative_to(root).as_posix() if folder != root else ""
    return hub.fetch(model, _file_patterns(layout, sub, modalities))


def load_clip_checkpoint(
    model: str | Path, modalities: Collection[Modality], layout_root: Path | None = None
) -> ClipCheckpoint:
    """Resolve `model` (folder or repo id), fetch only what `modalities` need,
    and check the asked towers' weights against the config. `layout_root`:
    the folder of `hub.LAYOUT_PATTERNS` files, when the caller fetched them already."""
    root = _fetch(model, modalities, layout_root)
    layout, folder = detect_layout(root)
    name = str(model)
    if layout == "immich":
        return _immich(name, folder, modalities)

    if layout == "open_clip":
        raw = read_json(folder / "open_clip_config.json")
        model_cfg = raw.get("model_cfg", raw)
        try:
            config = ClipConfig.from_open_clip(model_cfg)
        except (KeyError, ValueError) as exc:
            raise CheckpointError(
                str(folder / "open_clip_config.json"), f"unsupported open_clip config: {exc}"
            ) from exc
        paths = weight_paths(folder, layout)
        source = TensorSource.open(paths)
        renamed = RenamedSource(
            source, open_clip_names(config.vision.num_hidden_layers, config.text.num_hidden_layers)
        )
        if renamed.unmapped:
            raise CheckpointError(
                source.describe(),
                f"{len(renamed.unmapped)} tensors have no place in an OpenCLIP ViT CLIP",
                key=renamed.unmapped[0],
            )
        tensors: Mapping[str, np.ndarray] = renamed
        preprocess: tuple[PreprocessKind, dict[str, Any]] = (
            "open_clip",
            {"size": config.vision.image_size, **raw.get("preprocess_cfg", {})},
        )
        cleaning: Literal["hf", "open_clip"] = "open_clip"
    else:
        raw = read_json(folder / "config.json")
        config = ClipConfig.from_hf(raw)
        paths = weight_paths(folder, layout)
        tensors = TensorSource.open(paths)
        pre_path = folder / "preprocessor_config.json"
        preprocess = (
            "hf",
            read_json(pre_path) if pre_path.is_file() else _default_hf_preprocess(config),
        )
        cleaning = "hf"

    for modality in modalities:
        expected = (
            vision_weight_shapes(config) if modality == "image" else text_weight_shapes(config)
        )
        check_weights(
            tensors, expected, TOWER_PREFIXES[modality], ", ".join(map(str, paths)), modality
        )
    return ClipCheckpoint(
        name=name,
        folder=folder,
        layout=layout,
        raw_config=raw,
        config=config,
        tensors=tensors,
        weight_files=paths,
        tokenizer_folder=_text_tokenizer_folder(layout, raw, folder, root)
        if "text" in modalities
        else None,
        text_cleaning=cleaning,
        preprocess=preprocess,
    )


def _default_hf_preprocess(config: ClipConfig) -> dict[str, Any]:
    size = config.vision.image_size
    return {"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size}}


def _text_tokenizer_folder(
    layout: Layout, raw: dict[str, Any], folder: Path, root: Path
) -> Path | None:
    """The folder of the tokenizer files, or None for the packaged CLIP vocabulary: open_clip
    repos (timm/..., laion/...) ship no tokenizer files when their config names no HF
    tokenizer, since open_clip uses its built-in vocabulary."""
    if layout == "open_clip" and not _has_tokenizer_files(folder, root):
        text_cfg = raw.get("model_cfg", raw).get("text_cfg", {})
        if not text_cfg.get("hf_tokenizer_name"):
            return None
    return _tokenizer_folder(folder, root)


def _has_tokenizer_files(*folders: Path) -> bool:
    return any((f / "tokenizer.json").is_file() or (f / "vocab.json").is_file() for f in folders)


def _tokenizer_folder(*folders: Path) -> Path:
    for folder in folders:
        if (folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file():
            return folder
    raise CheckpointError(
        str(folders[0]), "no tokenizer files (tokenizer.json, or vocab.json + merges.txt)"
    )


def _immich(name: str, folder: Path, modalities: Collection[Modality]) -> ClipCheckpoint:
    raw = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    onnx_files: dict[Modality, Path] = {}
    for modality, sub in (("image", "visual"), ("text", "textual")):
        if modality in modalities:
            path = folder / sub / "model.onnx"
            if not path.is_file():
                raise CheckpointError(str(path), f"file not found ({modality} tower asked for)")
            onnx_files[modality] = path
    pre_path = folder / "visual" / "preprocess_cfg.json"
    preprocess = read_json(pre_path) if "image" in modalities and pre_path.is_file() else {}
    return ClipCheckpoint(
        name=name,
        folder=folder,
        layout="immich",
        raw_config=raw,
        config=None,
        tensors=None,
        onnx_files=onnx_files,
        tokenizer_folder=_tokenizer_folder(folder / "textual") if "text" in modalities else None,
        # Immich runs its tokenizer.json through `tokenizers` as it is, which for CLIP's
        # is what the "hf" pipeline reproduces (SigLIP's: see loaders/clip.py).
        text_cleaning="hf",
        # As Immich's ML service does, so vectors match a library Immich indexed.
        preprocess=("immich", preprocess),
    )
