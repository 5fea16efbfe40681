"""Where a SigLIP checkpoint's files are: a transformers `SiglipModel` folder or hub repo."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from handspring.weights import hub
from handspring.weights.json_files import read_json

# "siglip2" is SigLIP 2's variable-resolution (NaFlex) model: found, so that loading it
# says what is not supported rather than calling it an unknown CLIP.
MODEL_TYPES = ("siglip", "siglip2")

WEIGHT_PATTERNS = ("model.safetensors", "model*.safetensors", "*.safetensors.index.json")
IMAGE_PATTERNS = ("preprocessor_config.json",)
TEXT_PATTERNS = (
    "spiece.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def is_siglip_folder(root: Path) -> bool:
    config = root / "config.json"
    return config.is_file() and read_json(config).get("model_type") in MODEL_TYPES


def fetch_siglip(repo: str, modalities: Collection[str]) -> Path:
    """A hub repo's config and weights, and the preprocessing files of the asked towers
    (SigLIP 2 repos also carry Gemma's 4 MB tokenizer.model, which is never read)."""
    patterns = ["config.json", *WEIGHT_PATTERNS]
    if "image" in modalities:
        patterns += IMAGE_PATTERNS
    if "text" in modalities:
        patterns += TEXT_PATTERNS
    return hub.fetch(repo, patterns)
