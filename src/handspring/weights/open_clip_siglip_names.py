"""open_clip SigLIP checkpoint keys (a timm image trunk, open_clip's text tower), read under
the transformers names that models/siglip.py builds from.

- timm fuses q, k and v into `attn.qkv` [3D, D]; its MAP head has `q` [D, D] and `kv`
  [2D, D], stacked here into the head's `in_proj_weight` [3D, D] (q, k, v), as torch's
  MultiheadAttention in transformers' head holds them.
- timm's `pos_embed` is [1, N, D]; transformers' position table is [N, D].
- open_clip's text blocks are CLIP's (`attn.in_proj_weight`, `mlp.c_fc`, `mlp.c_proj`); its
  `text_projection` is a Linear with a bias, as transformers' `text_model.head`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from handspring.errors import CheckpointError
from handspring.weights.safetensors_io import TensorSource

TRUNK = "visual.trunk."
TEXT = "text."


@dataclass(frozen=True)
class Source:
    """Where a transformers tensor comes from: open_clip tensors stacked along their first
    axis, then slice `part` of `parts` equal slices of it, without a leading axis of 1 when
    `squeeze`."""

    keys: tuple[str, ...]
    part: int = 0
    parts: int = 1
    squeeze: bool = False

    def shape(self, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
        first = sum(s[0] for s in shapes)
        shape = (first // self.parts, *shapes[0][1:])
        return shape[1:] if self.squeeze else shape

    def take(self, arrays: list[np.ndarray]) -> np.ndarray:
        a = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
        if self.parts > 1:
            width = a.shape[0] // self.parts
            a = a[self.part * width : (self.part + 1) * width]
        return a[0] if self.squeeze else a


def _same(key: str) -> Source:
    return Source((key,))


def _pairs(hf: str, oc: str, names: Mapping[str, str]) -> dict[str, Source]:
    """weight and bias of each `hf_name: oc_name` Linear or LayerNorm."""
    return {
        f"{hf}{hf_name}.{p}": _same(f"{oc}{oc_name}.{p}")
        for hf_name, oc_name in names.items()
        for p in ("weight", "bias")
    }


def _attention(hf: str, fused: str, bias: str) -> dict[str, Source]:
    """q, k and v of a fused [3D, D] weight and its [3D] bias."""
    out: dict[str, Source] = {}
    for i, proj in enumerate(("q_proj", "k_proj", "v_proj")):
        out[f"{hf}self_attn.{proj}.weight"] = Source((fused,), i, 3)
        out[f"{hf}self_attn.{proj}.bias"] = Source((bias,), i, 3)
    return out


def _trunk_block(i: int) -> dict[str, Source]:
    hf, oc = f"vision_model.encoder.layers.{i}.", f"{TRUNK}blocks.{i}."
    out = _attention(hf, f"{oc}attn.qkv.weight", f"{oc}attn.qkv.bias")
    return out | _pairs(
        hf,
        oc,
        {
            "self_attn.out_proj": "attn.proj",
            "layer_norm1": "norm1",
            "layer_norm2": "norm2",
            "mlp.fc1": "mlp.fc1",
            "mlp.fc2": "mlp.fc2",
        },
    )


def _text_block(i: int) -> dict[str, Source]:
    hf, oc = f"text_model.encoder.layers.{i}.", f"{TEXT}transformer.resblocks.{i}."
    out = _attention(hf, f"{oc}attn.in_proj_weight", f"{oc}attn.in_proj_bias")
    return out | _pairs(
        hf,
        oc,
        {
            "self_attn.out_proj": "attn.out_proj",
            "layer_norm1": "ln_1",
            "layer_norm2": "ln_2",
            "mlp.fc1": "mlp.c_fc",
            "mlp.fc2": "mlp.c_proj",
        },
    )


def open_clip_siglip_names(vision_layers: int, text_layers: int) -> dict[str, Source]:
    """transformers key -> where it is in an open_clip SigLIP checkpoint."""
    pool = f"{TRUNK}attn_pool."
    names: dict[str, Source] = {
        "vision_model.embeddings.position_embedding.weight": Source(
            (f"{TRUNK}pos_embed",), squeeze=True
        ),
        "vision_model.head.probe": _same(f"{pool}latent"),
        "vision_model.head.attention.in_proj_weight": Source(
            (f"{pool}q.weight", f"{pool}kv.weight")
        ),
        "vision_model.head.attention.in_proj_bias": Source((f"{pool}q.bias", f"{pool}kv.bias")),
        "text_model.embeddings.token_embedding.weight": _same(f"{TEXT}token_embedding.weight"),
        "text_model.embeddings.position_embedding.weight": _same(f"{TEXT}positional_embedding"),
        "logit_scale": _same("logit_scale"),
        "logit_bias": _same("logit_bias"),
    }
    names |= _pairs(
        "vision_model.",
        TRUNK,
        {"embeddings.patch_embedding": "patch_embed.proj", "post_layernorm": "norm"},
    )
    names |= _pairs(
        "vision_model.head.",
        pool,
        {
            "attention.out_proj": "proj",
            "layernorm": "norm",
            "mlp.fc1": "mlp.fc1",
            "mlp.fc2": "mlp.fc2",
        },
    )
    names |= _pairs(
        "text_model.", TEXT, {"final_layer_norm": "ln_final", "head": "text_projection"}
    )
    for i in range(vision_layers):
        names |= _trunk_block(i)
    for i in range(text_layers):
        names |= _text_block(i)
    return names


class OpenClipSiglipSource(Mapping[str, np.ndarray]):
    """An open_clip SigLIP checkpoint seen under transformers' key names. Only keys whose
    open_clip tensors are all present are listed; `unmapped` holds the open_clip keys that
    no transformers key reads (a checkpoint of another architecture)."""

    def __init__(self, source: TensorSource, names: Mapping[str, Source]) -> None:
        self.source = source
        self._names = {k: v for k, v in names.items() if all(s in source for s in v.keys)}
        read = {key for v in names.values() for key in v.keys}
        self.unmapped = sorted(set(source) - read)

    def describe(self) -> str:
        return self.source.describe()

    def shape(self, key: str) -> tuple[int, ...]:
        where = self._names[key]
        return where.shape([self.source.shape(k) for k in where.keys])

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._names:
            raise CheckpointError(self.describe(), "missing tensor", key)
        where = self._names[key]
        return where.take([self.source[k] for k in where.keys])

    def __contains__(self, key: object) -> bool:
        return key in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
