"""M-CLIP checkpoints (multilingual_clip's `MultilingualCLIP`): a transformers encoder named
by `modelBase`, mean-pooled, then one Linear into a CLIP model's image space.

A hub repo holds `config.json` (model_type "M-CLIP"), the weights (`pytorch_model.bin`,
or `model.safetensors` in a converted copy) under `transformer.` and
`LinearTransformation.`, and the base's tokenizer files. It does not hold the base's
architecture: the reference fetches `modelBase`'s own config from the hub. Here it comes
from the config.json's own base fields when it has them (configs saved from an
`MCLIPConfig` that subclasses `XLMRobertaConfig`, as Kandinsky's are, hold all of them),
else from `BASE_CONFIGS`, keyed by `modelBase`. The weight check catches a table entry that
does not fit the weights' shapes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from handspring.errors import CheckpointError
from handspring.models.bert import EncoderConfig, encoder_weight_shapes, is_ignored_key
from handspring.weights import hub
from handspring.weights.json_files import read_json
from handspring.weights.safetensors_io import TensorSource, shard_paths

MODEL_TYPE = "M-CLIP"
ENCODER_PREFIX = "transformer."
LINEAR_PREFIX = "LinearTransformation."
LINEAR_WEIGHT = f"{LINEAR_PREFIX}weight"
LINEAR_BIAS = f"{LINEAR_PREFIX}bias"

SAFETENSORS = "model.safetensors"
SAFETENSORS_PATTERNS = (SAFETENSORS, f"{SAFETENSORS}.index.json", "model-*.safetensors")
PICKLE = "pytorch_model.bin"
# The base's tokenizer as transformers saved it (the sentencepiece / WordPiece source
# files beside it are never read).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

# The transformers config.json of each base the published M-CLIP checkpoints name
# (xlm-roberta-large; LaBSE, a BERT), keyed by the last part of `modelBase`, lowercased,
# so "FacebookAI/xlm-roberta-large" and "sentence-transformers/LaBSE" find theirs.
_XLM_ROBERTA_LARGE: dict[str, Any] = {
    "model_type": "xlm-roberta",
    "vocab_size": 250002,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
}
_LABSE: dict[str, Any] = {
    "model_type": "bert",
    "vocab_size": 501153,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}
BASE_CONFIGS: dict[str, dict[str, Any]] = {
    "xlm-roberta-large": _XLM_ROBERTA_LARGE,
    "labse": _LABSE,
}
# MCLIPConfig's default when a config names no base.
DEFAULT_BASE = "xlm-roberta-large"
# The base's own fields a config.json may carry; they win over the table's.
BASE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
    "type_vocab_size",
    "hidden_act",
    "layer_norm_eps",
    "pad_token_id",
    "position_embedding_type",
)


@dataclass(frozen=True)
class MclipConfig:
    model_base: str
    encoder: EncoderConfig
    transformer_dim: int  # the Linear's input: the encoder's width
    image_dim: int  # the Linear's output: the paired CLIP model's embedding size


def is_mclip_folder(root: Path) -> bool:
    config = root / "config.json"
    if not config.is_file():
        return False
    raw = read_json(config)
    return isinstance(raw, dict) and raw.get("model_type") == MODEL_TYPE


def fetch_mclip(repo: str, modalities: Collection[str] = ("text",)) -> Path:
    """A hub repo's config, tokenizer and weights: safetensors when it has them, else the
    pickle, never both (XLM-R large is 2.2 GB). The one tower is text."""
    small = ("config.json", *TOKENIZER_FILES)
    root = hub.fetch(repo, (*small, *SAFETENSORS_PATTERNS))
    if _safetensors_paths(root):
        return root
    return hub.fetch(repo, (*small, PICKLE))


def _dimension(raw: Mapping[str, Any], saved: str, argument: str, default: int) -> int:
    # MCLIPConfig saves its attributes (transformerDimensions, numDims); its __init__ takes
    # other names (transformerDimSize, imageDimSize) and the saved ones override them.
    value = raw.get(saved, raw.get(argument, default))
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{saved} must be a positive integer, got {value!r}")
    return value


def read_mclip_config(path: Path) -> MclipConfig:
    raw = read_json(path)
    if not isinstance(raw, dict) or raw.get("model_type") != MODEL_TYPE:
        found = raw.get("model_type") if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(str(path), f"model_type {found!r} is not {MODEL_TYPE!r}")
    model_base = str(raw.get("modelBase") or DEFAULT_BASE)
    table = BASE_CONFIGS.get(model_base.rstrip("/").rsplit("/", 1)[-1].lower())
    own = {k: raw[k] for k in BASE_FIELDS if raw.get(k) is not None}
    if table is None:
        # The reference would fetch the base's config from the hub; its family (BERT or
        # XLM-RoBERTa) cannot be told from the fields alone.
        known = ", ".join(sorted(BASE_CONFIGS))
        raise CheckpointError(
            str(path), f"modelBase {model_base!r} is not a base known here (known: {known})"
        )
    try:
        encoder = EncoderConfig.from_hf(table | own)
        transformer_dim = _dimension(raw, "transformerDimensions", "transformerDimSize", 1024)
        image_dim = _dimension(raw, "numDims", "imageDimSize", 768)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(str(path), f"unsupported M-CLIP config: {exc}") from exc
    if transformer_dim != encoder.hidden_size:
        raise CheckpointError(
            str(path),
            f"transformerDimensions {transformer_dim} differs from the {model_base} "
            f"encoder's width {encoder.hidden_size}",
        )
    return MclipConfig(model_base, encoder, transformer_dim, image_dim)


def _safetensors_paths(root: Path) -> list[Path]:
    if (root / SAFETENSORS).is_file():
        return [root / SAFETENSORS]
    if (root / f"{SAFETENSORS}.index.json").is_file():
        return shard_paths(root, f"{SAFETENSORS}.index.json")
    return []


def mclip_weights(root: Path) -> tuple[Mapping[str, np.ndarray], list[Path]]:
    """The tensors (read lazily) and their files: model.safetensors when present, else
    pytorch_model.bin through the restricted unpickler (nothing in it is run)."""
    paths = _safetensors_paths(root)
    if paths:
        return TensorSource.open(paths), paths
    if (root / PICKLE).is_file():
        from handspring.weights.torch_pickle import TorchCheckpoint

        return TorchCheckpoint.open(root / PICKLE), [root / PICKLE]
    raise CheckpointError(str(root), f"no M-CLIP weights (expected {SAFETENSORS} or {PICKLE})")


def mclip_weight_shapes(config: MclipConfig) -> dict[str, tuple[int, ...]]:
    shapes = encoder_weight_shapes(config.encoder, ENCODER_PREFIX)
    shapes[LINEAR_WEIGHT] = (config.image_dim, config.transformer_dim)
    shapes[LINEAR_BIAS] = (config.image_dim,)
    return shapes


def check_mclip_weights(
    tensors: Mapping[str, np.ndarray], config: MclipConfig, source: str
) -> None:
    """Every tensor the config implies, with its shape, and nothing else but the unused
    pooler and position-id buffers: a key or shape that disagrees is named."""
    expected = mclip_weight_shapes(config)
    shape_of = tensors.shape  # type: ignore[attr-defined]
    for key, want in expected.items():
        if key not in tensors:
            missing = sum(k not in tensors for k in expected)
            reason = f"{missing} of {len(expected)} M-CLIP tensors missing"
            raise CheckpointError(source, reason, key=key)
        got = tuple(shape_of(key))
        if got != want:
            reason = f"shape {got}, but the config ({config.model_base}) implies {want}"
            raise CheckpointError(source, reason, key=key)
    extra = [k for k in tensors if k not in expected and not is_ignored_key(k)]
    if extra:
        raise CheckpointError(
            source,
            f"{len(extra)} tensors an M-CLIP model of this config does not have",
            key=extra[0],
        )
