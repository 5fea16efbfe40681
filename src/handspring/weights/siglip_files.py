"""Where a SigLIP checkpoint's files are: a transformers `SiglipModel` folder, an open_clip
SigLIP folder (`open_clip_config.json` naming a timm SigLIP trunk, `open_clip_model.
safetensors`, the tokenizer files), or a hub repo of either."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

from handspring.weights import hub
from handspring.weights.json_files import read_json

# "siglip2" is SigLIP 2's variable-resolution (NaFlex) model: found, so that loading it
# says what is not supported rather than calling it an unknown CLIP.
MODEL_TYPES = ("siglip", "siglip2")
OPEN_CLIP_CONFIG = "open_clip_config.json"

Layout = Literal["transformers", "open_clip"]

WEIGHT_PATTERNS = ("model.safetensors", "model*.safetensors", "*.safetensors.index.json")
OPEN_CLIP_WEIGHT_PATTERNS = (
    "open_clip_model.safetensors",
    "open_clip_model.safetensors.index.json",
)
IMAGE_PATTERNS = ("preprocessor_config.json",)
TEXT_PATTERNS = (
    "spiece.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def open_clip_model_cfg(root: Path) -> dict[str, Any] | None:
    """The model config of an open_clip folder whose image tower is a timm SigLIP trunk
    (whatever its pooling: a trunk the loader does not compute is refused there, by name)."""
    path = root / OPEN_CLIP_CONFIG
    if not path.is_file():
        return None
    raw = read_json(path)
    model_cfg = raw.get("model_cfg", raw)
    name = str((model_cfg.get("vision_cfg") or {}).get("timm_model_name") or "")
    return model_cfg if "siglip" in name.lower() else None


def siglip_layout(root: Path) -> Layout | None:
    config = root / "config.json"
    if config.is_file() and read_json(config).get("model_type") in MODEL_TYPES:
        return "transformers"
    return "open_clip" if open_clip_model_cfg(root) is not None else None


def is_siglip_folder(root: Path) -> bool:
    return siglip_layout(root) is not None


def fetch_siglip(repo: str, modalities: Collection[str]) -> Path:
    """A hub repo's config and weights, and the preprocessing files of the asked towers
    (SigLIP 2 repos also carry Gemma's 4 MB tokenizer.model, which is never read). The
    small config files come first: they say which layout's weights to fetch."""
    root = hub.fetch(repo, ["config.json", OPEN_CLIP_CONFIG])
    layout = siglip_layout(root)
    if layout == "open_clip":  # its image preprocessing is in open_clip_config.json
        patterns = [OPEN_CLIP_CONFIG, *OPEN_CLIP_WEIGHT_PATTERNS]
    else:
        patterns = ["config.json", *WEIGHT_PATTERNS]
        if "image" in modalities:
            patterns += IMAGE_PATTERNS
    if "text" in modalities:
        patterns += TEXT_PATTERNS
    return hub.fetch(repo, patterns)
