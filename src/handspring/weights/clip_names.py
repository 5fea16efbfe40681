"""OpenAI / OpenCLIP CLIP checkpoint keys, read under transformers' names.

OpenCLIP stores attention as one fused `in_proj_weight` [3D, D] (q, k, v
stacked) and the projections as [D, P] matrices used as `x @ proj`; the
transformers layout has separate q/k/v Linears and [P, D] projections.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np

from handspring.errors import CheckpointError
from handspring.weights.safetensors_io import TensorSource

Transform = Callable[[np.ndarray], np.ndarray]


def _identity(a: np.ndarray) -> np.ndarray:
    return a


def _transpose(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.T)


def _qkv_part(part: int) -> Transform:
    def take(a: np.ndarray) -> np.ndarray:
        width = a.shape[0] // 3
        return a[part * width : (part + 1) * width]

    return take


def _block_names(hf: str, oc: str) -> dict[str, tuple[str, Transform]]:
    names: dict[str, tuple[str, Transform]] = {}
    for i, proj in enumerate(("q_proj", "k_proj", "v_proj")):
        names[f"{hf}self_attn.{proj}.weight"] = (f"{oc}attn.in_proj_weight", _qkv_part(i))
        names[f"{hf}self_attn.{proj}.bias"] = (f"{oc}attn.in_proj_bias", _qkv_part(i))
    pairs = {
        "self_attn.out_proj": "attn.out_proj",
        "layer_norm1": "ln_1",
        "layer_norm2": "ln_2",
        "mlp.fc1": "mlp.c_fc",
        "mlp.fc2": "mlp.c_proj",
    }
    for hf_name, oc_name in pairs.items():
        for p in ("weight", "bias"):
            names[f"{hf}{hf_name}.{p}"] = (f"{oc}{oc_name}.{p}", _identity)
    return names


def open_clip_names(vision_layers: int, text_layers: int) -> dict[str, tuple[str, Transform]]:
    """transformers key -> (OpenCLIP key, how to turn that tensor into this one)."""
    names: dict[str, tuple[str, Transform]] = {
        "vision_model.embeddings.class_embedding": ("visual.class_embedding", _identity),
        "vision_model.embeddings.patch_embedding.weight": ("visual.conv1.weight", _identity),
        "vision_model.embeddings.position_embedding.weight": (
            "visual.positional_embedding",
            _identity,
        ),
        "vision_model.pre_layrnorm.weight": ("visual.ln_pre.weight", _identity),
        "vision_model.pre_layrnorm.bias": ("visual.ln_pre.bias", _identity),
        "vision_model.post_layernorm.weight": ("visual.ln_post.weight", _identity),
        "vision_model.post_layernorm.bias": ("visual.ln_post.bias", _identity),
        "visual_projection.weight": ("visual.proj", _transpose),
        "text_model.embeddings.token_embedding.weight": ("token_embedding.weight", _identity),
        "text_model.embeddings.position_embedding.weight": ("positional_embedding", _identity),
        "text_model.final_layer_norm.weight": ("ln_final.weight", _identity),
        "text_model.final_layer_norm.bias": ("ln_final.bias", _identity),
        "text_projection.weight": ("text_projection", _transpose),
        "logit_scale": ("logit_scale", _identity),
    }
    for i in range(vision_layers):
        names |= _block_names(
            f"vision_model.encoder.layers.{i}.", f"visual.transformer.resblocks.{i}."
        )
    for i in range(text_layers):
        names |= _block_names(f"text_model.encoder.layers.{i}.", f"transformer.resblocks.{i}.")
    return names


# Buffers some OpenCLIP/OpenAI exports carry that hold no weights.
OPEN_CLIP_BUFFERS = ("attn_mask",)


class RenamedSource(Mapping[str, np.ndarray]):
    """A TensorSource seen under other key names (see `open_clip_names`)."""

    def __init__(self, source: TensorSource, names: dict[str, tuple[str, Transform]]) -> None:
        self.source = source
        self._names = {k: v for k, v in names.items() if v[0] in source}
        self.unmapped = sorted(
            set(source)
            - {v[0] for v in names.values()}
            - {k for k in source if k.split(".")[-1] in OPEN_CLIP_BUFFERS}
        )

    def describe(self) -> str:
        return self.source.describe()

    def shape(self, key: str) -> tuple[int, ...]:
        source_key, transform = self._names[key]
        shape = self.source.shape(source_key)
        if transform is _transpose:
            return tuple(reversed(shape))
        if transform is not _identity:  # a third of a fused q/k/v
            return (shape[0] // 3, *shape[1:])
        return shape

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._names:
            raise CheckpointError(self.describe(), "missing tensor", key)
        source_key, transform = self._names[key]
        return transform(self.source[source_key])

    def __contains__(self, key: object) -> bool:
        return key in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
