"""SigLIP (fixed resolution: SigLIP, and SigLIP 2 checkpoints saved as `SiglipModel`) as two
ONNX graphs, from transformers checkpoint keys (`vision_model.encoder.layers.3.self_attn.
q_proj.weight`, `vision_model.head.attention.in_proj_weight` ...). open_clip's SigLIP
checkpoints (a timm image trunk, open_clip's text tower) are read under these names
(weights/open_clip_siglip_names.py) with a config from models/siglip_open_clip.py: the
computation is the same, but for the GELU, which is the erf form where timm or open_clip
say so (timm's older SigLIP trunks, open_clip's text tower unless `act_kwargs` says tanh).

What differs from CLIP (models/clip.py, whose encoder block is the same, key for key):
- Images: patches with a bias and no class token, no LayerNorm before the encoder; the
  image is read by a multi-head attention pooling head (MAP): a learned probe attends over
  every token of the last block, then LayerNorm and an MLP with a residual.
- Texts: no causal mask, always padded to the full context (64), read at the LAST position
  (padding, usually) and projected by `text_model.head` (a Linear with a bias).
- GELU is the tanh approximation, LayerNorm eps 1e-6.
- An image size that is not a multiple of the patch size (so400m/14 at 384) loses its
  last rows and columns of pixels, as the reference's strided Conv does.

Exactness notes:
- The probe's query is the same for every image: it is computed here, in float32, once,
  with the attention scale folded in (the reference does it per call; ~1e-7 apart).
- The last text block computes only the last position's query, out-projection and MLP:
  the other rows would be thrown away.
"""

from __future__ import annotations

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
    table_lookup,
)

# SigLIP's encoder blocks are CLIP's, key for key.
from handspring.models.clip import encoder_layer, layer_shapes, subconfig

if TYPE_CHECKING:
    import onnx

# --------------------------------------------------------------------- config


@dataclass(frozen=True)
class SiglipVisionConfig:
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    patch_size: int = 16
    image_size: int = 224
    num_channels: int = 3
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    vision_use_head: bool = True

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class SiglipTextConfig:
    vocab_size: int = 32000
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 64
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    projection_size: int | None = None  # transformers: the hidden size when unset

    @property
    def output_size(self) -> int:
        return self.projection_size or self.hidden_size


@dataclass(frozen=True)
class SiglipConfig:
    vision: SiglipVisionConfig
    text: SiglipTextConfig

    @property
    def dim(self) -> int:
        """The shared embedding width: the vision width, which the text head projects to."""
        return self.vision.hidden_size

    @classmethod
    def from_hf(cls, config: Mapping[str, Any]) -> SiglipConfig:
        """From a transformers `config.json` (model_type "siglip"). ValueError names what
        this implementation does not compute."""
        vision_raw = dict(config.get("vision_config") or {})
        for key in ("image_size", "patch_size"):
            vision_raw[key] = square(vision_raw.get(key), key)
        cfg = cls(
            vision=subconfig(SiglipVisionConfig, vision_raw),
            text=subconfig(SiglipTextConfig, config.get("text_config") or {}),
        )
        if not cfg.vision.vision_use_head:
            raise ValueError("vision_use_head=false: the image tower has no pooling head")
        return cfg.checked()

    def checked(self) -> SiglipConfig:
        """Itself, or ValueError naming what its towers cannot compute."""
        if self.vision.image_size < self.vision.patch_size:
            raise ValueError(
                f"image_size {self.vision.image_size} is smaller than "
                f"patch_size {self.vision.patch_size}"
            )
        if self.text.output_size != self.dim:
            raise ValueError(
                f"the text head gives {self.text.output_size} values, the image tower {self.dim}"
            )
        return self


def square(value: Any, key: str) -> Any:
    """A size given as [n, n] (or n) as n; ValueError for a non-square one."""
    if isinstance(value, list | tuple):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"non-square {key} {value} not supported")
        return value[0]
    return value


# ------------------------------------------------------------- weight shapes

VISION_PREFIXES = ("vision_model.",)
TEXT_PREFIXES = ("text_model.",)
LOGIT_SCALE_KEY = "logit_scale"
LOGIT_BIAS_KEY = "logit_bias"

# Keys a checkpoint may hold that no tower reads: buffers, and the zero-shot scale and
# bias (read by the loader).
IGNORED_KEYS = (
    LOGIT_SCALE_KEY,
    LOGIT_BIAS_KEY,
    "vision_model.embeddings.position_ids",
    "text_model.embeddings.position_ids",
)


def _linear_shapes(key: str, n_out: int, n_in: int) -> dict[str, tuple[int, ...]]:
    return {f"{key}.weight": (n_out, n_in), f"{key}.bias": (n_out,)}


def _norm_shapes(key: str, width: int) -> dict[str, tuple[int, ...]]:
    return {f"{key}.weight": (width,), f"{key}.bias": (width,)}


def vision_weight_shapes(cfg: SiglipConfig) -> dict[str, tuple[int, ...]]:
    v, d = cfg.vision, cfg.vision.hidden_size
    head = "vision_model.head."
    shapes: dict[str, tuple[int, ...]] = {
        "vision_model.embeddings.patch_embedding.weight": (
            d,
            v.num_channels,
            v.patch_size,
            v.patch_size,
        ),
        "vision_model.embeddings.patch_embedding.bias": (d,),
        "vision_model.embeddings.position_embedding.weight": (v.grid**2, d),
        f"{head}probe": (1, 1, d),
        f"{head}attention.in_proj_weight": (3 * d, d),
        f"{head}attention.in_proj_bias": (3 * d,),
    }
    shapes |= _norm_shapes("vision_model.post_layernorm", d)
    shapes |= _linear_shapes(f"{head}attention.out_proj", d, d)
    shapes |= _norm_shapes(f"{head}layernorm", d)
    shapes |= _linear_shapes(f"{head}mlp.fc1", v.intermediate_size, d)
    shapes |= _linear_shapes(f"{head}mlp.fc2", d, v.intermediate_size)
    for i in range(v.num_hidden_layers):
        shapes |= layer_shapes(f"vision_model.encoder.layers.{i}.", d, v.intermediate_size)
    return shapes


def text_weight_shapes(cfg: SiglipConfig) -> dict[str, tuple[int, ...]]:
    t, d = cfg.text, cfg.text.hidden_size
    shapes: dict[str, tuple[int, ...]] = {
        "text_model.embeddings.token_embedding.weight": (t.vocab_size, d),
        "text_model.embeddings.position_embedding.weight": (t.max_position_embeddings, d),
    }
    shapes |= _norm_shapes("text_model.final_layer_norm", d)
    shapes |= _linear_shapes("text_model.head", t.output_size, d)
    for i in range(t.num_hidden_layers):
        shapes |= layer_shapes(f"text_model.encoder.layers.{i}.", d, t.intermediate_size)
    return shapes


# ------------------------------------------------------------------- towers
#
# The token stream is kept 2-D, [B*T, D]: see layers.BlockSpec.

Weights = Mapping[str, np.ndarray]

IMAGE_INPUT = "pixel_values"
TEXT_INPUT = "input_ids"
EMBEDDING_OUTPUT = "embedding"


def _attention_pooling(
    g: Graph, x: str, w: Weights, cfg: SiglipVisionConfig, tokens: int, precision: Precision
) -> str:
    """transformers' SiglipMultiheadAttentionPoolingHead (torch MultiheadAttention with the
    probe as its one query) on [B*N, D] rows -> [B, D]."""
    d, heads = cfg.hidden_size, cfg.num_attention_heads
    head_dim = d // heads
    key = "vision_model.head."
    in_w = w[f"{key}attention.in_proj_weight"].astype(np.float32)  # [3D, D]: q, k, v stacked
    in_b = w[f"{key}attention.in_proj_bias"].astype(np.float32)  # [3D]
    probe = w[f"{key}probe"].astype(np.float32).reshape(1, d)  # [1, D]
    query = (probe @ in_w[:d].T + in_b[:d]) * np.float32(head_dim**-0.5)  # [1, D]
    q_heads = g.const(query.reshape(1, heads, 1, head_dim), f"{key}attention.scaled_query")
    k = linear(g, x, in_w[d : 2 * d], in_b[d : 2 * d], f"{key}attention.k_proj", precision)
    v = linear(g, x, in_w[2 * d :], in_b[2 * d :], f"{key}attention.v_proj", precision)
    heads_shape = g.ints([-1, tokens, heads, head_dim])
    k_heads = split_heads(g, k, heads_shape, keys_last=True)  # [B, H, Dh, N]
    scores = g.op("MatMul", q_heads, k_heads)  # [B, H, 1, N]
    probs = g.op("Softmax", scores, axis=-1)
    attended = g.op("MatMul", probs, split_heads(g, v, heads_shape))  # [B, H, 1, Dh]
    pooled = dense(g, merge_heads(g, attended, d), w, f"{key}attention.out_proj", precision)
    h = layer_norm(g, pooled, w, f"{key}layernorm", cfg.layer_norm_eps)  # [B, D]
    h = dense(g, h, w, f"{key}mlp.fc1", precision)  # [B, M]
    h = dense(g, activation(g, h, cfg.hidden_act), w, f"{key}mlp.fc2", precision)  # [B, D]
    return g.op("Add", pooled, h)  # [B, D]


def build_vision_graph(cfg: SiglipConfig, w: Weights, precision: Precision) -> onnx.ModelProto:
    v = cfg.vision
    d, p, grid, c = v.hidden_size, v.patch_size, v.grid, v.num_channels
    tokens = grid * grid
    g = Graph("siglip_vision")
    heads_shape = g.ints([-1, tokens, v.num_attention_heads, d // v.num_attention_heads])
    block = BlockSpec(
        d, v.num_attention_heads, v.hidden_act, v.layer_norm_eps, precision, heads_shape
    )
    x = g.input(IMAGE_INPUT, FLOAT, ["batch", c, v.image_size, v.image_size])
    if v.image_size != grid * p:  # the strided Conv never reaches the last pixels
        x = g.op("Slice", x, g.ints([0, 0]), g.ints([grid * p, grid * p]), g.ints([2, 3]))
    # The patch Conv has stride == kernel: a MatMul over flattened patches (see clip.py).
    x = g.op("Reshape", x, g.ints([0, c, grid, p, grid, p]))  # [B, C, gh, p, gw, p]
    x = g.op("Transpose", x, perm=[0, 2, 4, 1, 3, 5])  # [B, gh, gw, C, p, p]
    x = g.op("Reshape", x, g.ints([-1, c * p * p]))  # [B*N, C*p*p]
    key = "vision_model.embeddings.patch_embedding"
    patch_w = w[f"{key}.weight"].reshape(d, -1)  # [D, C*p*p]
    x = linear(g, x, patch_w, w[f"{key}.bias"], key, precision)  # [B*N, D]
    x = g.op("Reshape", x, g.ints([-1, tokens, d]))  # [B, N, D]
    pos = w["vision_model.embeddings.position_embedding.weight"].astype(np.float32)  # [N, D]
    x = g.op("Add", x, g.const(pos, "vision_model.embeddings.position_embedding.weight"))
    x = g.op("Reshape", x, g.ints([-1, d]))  # [B*N, D]
    for i in range(v.num_hidden_layers):
        x = encoder_layer(g, x, w, f"vision_model.encoder.layers.{i}.", block, None)
    x = layer_norm(g, x, w, "vision_model.post_layernorm", v.layer_norm_eps)  # [B*N, D]
    x = _attention_pooling(g, x, w, v, tokens, precision)  # [B, D]
    g.output(x, EMBEDDING_OUTPUT, FLOAT, ["batch", d])
    return g.to_model("SigLIP image tower")


def build_text_graph(cfg: SiglipConfig, w: Weights, precision: Precision) -> onnx.ModelProto:
    """Ids [B, T] (T = the context length, as the model was trained) -> [B, P]."""
    t = cfg.text
    d, heads = t.hidden_size, t.num_attention_heads
    g = Graph("siglip_text")
    ids = g.input(TEXT_INPUT, INT64, ["batch", "tokens"])
    tokens = g.op("Shape", ids, start=1, end=2)  # [1] = T
    heads_shape = g.op("Concat", g.ints([-1]), tokens, g.ints([heads, d // heads]), axis=0)
    block = BlockSpec(d, heads, t.hidden_act, t.layer_norm_eps, precision, heads_shape)
    x = table_lookup(g, w, "text_model.embeddings.token_embedding", ids, precision)  # [B, T, D]
    key = "text_model.embeddings.position_embedding.weight"
    pos_table = g.const(w[key].astype(np.float32), key)  # [ctx, D]
    x = g.op("Add", x, g.op("Slice", pos_table, g.ints([0]), tokens, g.ints([0])))  # [B, T, D]
    x = g.op("Reshape", x, g.ints([-1, d]))  # [B*T, D]
    items_shape = g.op("Concat", g.ints([-1]), tokens, g.ints([d]), axis=0)  # (-1, T, D)

    def last_token(h: str) -> str:
        items = g.op("Reshape", h, items_shape)  # [B, T, D]
        last = g.op("Slice", items, g.ints([-1]), g.ints([np.iinfo(np.int64).max]), g.ints([1]))
        return g.op("Reshape", last, g.ints([-1, d]))  # [B, D]

    for i in range(t.num_hidden_layers):
        last = i == t.num_hidden_layers - 1
        layer_key = f"text_model.encoder.layers.{i}."
        x = encoder_layer(g, x, w, layer_key, block, None, last_token if last else None)
    x = layer_norm(g, x, w, "text_model.final_layer_norm", t.layer_norm_eps)  # [B, D]
    x = dense(g, x, w, "text_model.head", precision)  # [B, P]
    g.output(x, EMBEDDING_OUTPUT, FLOAT, ["batch", t.output_size])
    return g.to_model("SigLIP text tower")
