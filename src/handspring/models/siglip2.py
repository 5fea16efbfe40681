"""SigLIP 2 NaFlex (transformers `Siglip2Model`, model_type "siglip2") as ONNX graphs, from
its checkpoint keys.

The text tower is SigLIP's, key for key (`Siglip2TextModel` computes what `SiglipTextModel`
does): models/siglip.py builds it. The image tower reads images at their own aspect ratio:
each is resized to at most `max_num_patches` patches of p x p, and a batch is padded to that
many rows. What differs from fixed-resolution SigLIP (models/siglip.py):
- Patches arrive flattened, [B, N, C*p*p] in the processor's (py, px, c) order, and the
  patch embedding is a Linear over them.
- The learned G x G position grid is resized to each image's patch grid before the graph
  (models/siglip2_positions.py) and arrives as an input, [B, N, D].
- The pixel attention mask [B, N] (1 real, 0 padding) masks the padding keys in every
  self-attention and in the pooling head's attention, as transformers does; padding rows
  are computed and never read, so a real row sees only real rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from handspring.graph.builder import FLOAT, INT64, Graph
from handspring.graph.layers import (
    BlockSpec,
    Precision,
    activation,
    dense,
    layer_norm,
    linear,
    merge_heads,
    split_heads,
)
from handspring.models.clip import encoder_layer, layer_shapes, subconfig
from handspring.models.siglip import SiglipConfig, SiglipTextConfig, SiglipVisionConfig

if TYPE_CHECKING:
    import onnx

# --------------------------------------------------------------------- config


@dataclass(frozen=True)
class Siglip2VisionConfig:
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    patch_size: int = 16
    num_patches: int = 256  # the learned position grid: sqrt(N) x sqrt(N)
    num_channels: int = 3
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    vision_use_head: bool = True

    @property
    def position_grid(self) -> int:
        return math.isqrt(self.num_patches)

    @property
    def patch_values(self) -> int:
        """Values in one flattened patch: C * p * p."""
        return self.num_channels * self.patch_size**2


@dataclass(frozen=True)
class Siglip2Config:
    vision: Siglip2VisionConfig
    text: SiglipTextConfig

    @property
    def dim(self) -> int:
        """The shared embedding width: the vision width, which the text head projects to."""
        return self.vision.hidden_size

    @property
    def text_tower(self) -> SiglipConfig:
        """The config models/siglip.py builds the text tower from: it reads only `.text`;
        the vision part carries just the shared width."""
        return SiglipConfig(SiglipVisionConfig(hidden_size=self.dim), self.text)

    @classmethod
    def from_hf(cls, config: Mapping[str, Any]) -> Siglip2Config:
        """From a transformers `config.json` (model_type "siglip2"). ValueError names what
        this implementation does not compute."""
        vision_raw = dict(config.get("vision_config") or {})
        patch = vision_raw.get("patch_size")
        if isinstance(patch, list | tuple):
            if len(patch) != 2 or patch[0] != patch[1]:
                raise ValueError(f"non-square patch_size {patch} not supported")
            vision_raw["patch_size"] = patch[0]
        cfg = cls(
            vision=subconfig(Siglip2VisionConfig, vision_raw),
            text=subconfig(SiglipTextConfig, config.get("text_config") or {}),
        )
        v = cfg.vision
        if not v.vision_use_head:
            raise ValueError("vision_use_head=false: the image tower has no pooling head")
        if v.position_grid**2 != v.num_patches:
            raise ValueError(f"num_patches {v.num_patches} is not a square grid")
        if v.hidden_size % v.num_attention_heads:
            raise ValueError(
                f"hidden_size {v.hidden_size} is not a multiple of "
                f"num_attention_heads {v.num_attention_heads}"
            )
        if cfg.text.output_size != cfg.dim:
            raise ValueError(
                f"the text head gives {cfg.text.output_size} values, the image tower {cfg.dim}"
            )
        return cfg


# ------------------------------------------------------------- weight shapes

VISION_PREFIXES = ("vision_model.",)
POSITION_KEY = "vision_model.embeddings.position_embedding.weight"


def vision_weight_shapes(cfg: Siglip2Config) -> dict[str, tuple[int, ...]]:
    v, d = cfg.vision, cfg.vision.hidden_size
    m = v.intermediate_size
    embed, head = "vision_model.embeddings.", "vision_model.head."
    shapes: dict[str, tuple[int, ...]] = {
        f"{embed}patch_embedding.weight": (d, v.patch_values),
        f"{embed}patch_embedding.bias": (d,),
        POSITION_KEY: (v.num_patches, d),
        "vision_model.post_layernorm.weight": (d,),
        "vision_model.post_layernorm.bias": (d,),
        f"{head}probe": (1, 1, d),
        f"{head}attention.in_proj_weight": (3 * d, d),
        f"{head}attention.in_proj_bias": (3 * d,),
        f"{head}attention.out_proj.weight": (d, d),
        f"{head}attention.out_proj.bias": (d,),
        f"{head}layernorm.weight": (d,),
        f"{head}layernorm.bias": (d,),
        f"{head}mlp.fc1.weight": (m, d),
        f"{head}mlp.fc1.bias": (m,),
        f"{head}mlp.fc2.weight": (d, m),
        f"{head}mlp.fc2.bias": (d,),
    }
    for i in range(v.num_hidden_layers):
        shapes |= layer_shapes(f"vision_model.encoder.layers.{i}.", d, m)
    return shapes


# ------------------------------------------------------------------- towers
#
# The token stream is kept 2-D, [B*N, D]: see layers.BlockSpec.

Weights = Mapping[str, np.ndarray]

PATCHES_INPUT = "pixel_values"
MASK_INPUT = "pixel_attention_mask"
POSITIONS_INPUT = "position_embeddings"
EMBEDDING_OUTPUT = "embedding"


def _attention_pooling(
    g: Graph, x: str, w: Weights, cfg: Siglip2VisionConfig, block: BlockSpec, key_bias: str
) -> str:
    """transformers' Siglip2MultiheadAttentionPoolingHead (torch MultiheadAttention with the
    probe as its one query, padding keys masked) on [B*N, D] rows -> [B, D]. The probe's
    query is the same for every image: computed here once, the attention scale folded in."""
    d, heads, precision = cfg.hidden_size, cfg.num_attention_heads, block.precision
    head_dim = d // heads
    key = "vision_model.head."
    in_w = w[f"{key}attention.in_proj_weight"].astype(np.float32)  # [3D, D]: q, k, v stacked
    in_b = w[f"{key}attention.in_proj_bias"].astype(np.float32)  # [3D]
    probe = w[f"{key}probe"].astype(np.float32).reshape(1, d)  # [1, D]
    query = (probe @ in_w[:d].T + in_b[:d]) * np.float32(head_dim**-0.5)  # [1, D]
    q_heads = g.const(query.reshape(1, heads, 1, head_dim), f"{key}attention.scaled_query")
    k = linear(g, x, in_w[d : 2 * d], in_b[d : 2 * d], f"{key}attention.k_proj", precision)
    v = linear(g, x, in_w[2 * d :], in_b[2 * d :], f"{key}attention.v_proj", precision)
    k_heads = split_heads(g, k, block.heads_shape, keys_last=True)  # [B, H, Dh, N]
    scores = g.op("Add", g.op("MatMul", q_heads, k_heads), key_bias)  # [B, H, 1, N]
    probs = g.op("Softmax", scores, axis=-1)
    attended = g.op("MatMul", probs, split_heads(g, v, block.heads_shape))  # [B, H, 1, Dh]
    pooled = dense(g, merge_heads(g, attended, d), w, f"{key}attention.out_proj", precision)
    h = layer_norm(g, pooled, w, f"{key}layernorm", cfg.layer_norm_eps)  # [B, D]
    h = dense(g, h, w, f"{key}mlp.fc1", precision)  # [B, M]
    h = dense(g, activation(g, h, cfg.hidden_act), w, f"{key}mlp.fc2", precision)  # [B, D]
    return g.op("Add", pooled, h)  # [B, D]


def build_vision_graph(cfg: Siglip2Config, w: Weights, precision: Precision) -> onnx.ModelProto:
    """Patches [B, N, C*p*p], mask int64 [B, N] and resized positions [B, N, D] -> [B, D].
    N is free: the processor's max_num_patches."""
    v = cfg.vision
    d, heads = v.hidden_size, v.num_attention_heads
    g = Graph("siglip2_vision")
    patches = g.input(PATCHES_INPUT, FLOAT, ["batch", "patches", v.patch_values])
    mask = g.input(MASK_INPUT, INT64, ["batch", "patches"])
    positions = g.input(POSITIONS_INPUT, FLOAT, ["batch", "patches", d])
    tokens = g.op("Shape", patches, start=1, end=2)  # [1] = N
    heads_shape = g.op("Concat", g.ints([-1]), tokens, g.ints([heads, d // heads]), axis=0)
    block = BlockSpec(d, heads, v.hidden_act, v.layer_norm_eps, precision, heads_shape)
    # Padding keys get the float32 minimum, as transformers' mask: exp() of it is exactly 0.
    keep = g.op("Cast", mask, to=FLOAT)  # [B, N]: 1 real, 0 padding
    big = g.const(np.asarray(np.finfo(np.float32).max, np.float32))
    bias = g.op("Mul", g.op("Sub", keep, g.const(np.asarray(1.0, np.float32))), big)  # [B, N]
    key_bias = g.op("Unsqueeze", bias, g.ints([1, 2]))  # [B, 1, 1, N]
    x = g.op("Reshape", patches, g.ints([-1, v.patch_values]))  # [B*N, C*p*p]
    x = dense(g, x, w, "vision_model.embeddings.patch_embedding", precision)  # [B*N, D]
    x = g.op("Add", x, g.op("Reshape", positions, g.ints([-1, d])))  # [B*N, D]
    for i in range(v.num_hidden_layers):
        x = encoder_layer(g, x, w, f"vision_model.encoder.layers.{i}.", block, key_bias)
    x = layer_norm(g, x, w, "vision_model.post_layernorm", v.layer_norm_eps)  # [B*N, D]
    x = _attention_pooling(g, x, w, v, block, key_bias)  # [B, D]
    g.output(x, EMBEDDING_OUTPUT, FLOAT, ["batch", d])
    return g.to_model("SigLIP 2 NaFlex image tower")
