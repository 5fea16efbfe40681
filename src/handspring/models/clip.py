"""CLIP (ViT image tower + causal text tower) as two ONNX graphs.

Weight names follow the transformers checkpoint keys (`vision_model.encoder.
layers.3.self_attn.q_proj.weight` ...). Other layouts (OpenAI / OpenCLIP)
are renamed to these by `handspring.weights.clip_names` before they get here.

Exactness notes:
- The attention scale is folded into the query weights; the reordering moves
  the result by ~1e-7, far inside the 1e-5 parity budget.
- Only the token that is read out (class token for images, first end-of-text
  token for texts) goes through the last block's query, out-projection and
  MLP: every other row of that block would be thrown away.
- Texts are padded only to the longest in the batch: the causal mask keeps
  the end-of-text row blind to everything after it, so padding cannot change it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
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

if TYPE_CHECKING:
    import onnx

# --------------------------------------------------------------------- config


@dataclass(frozen=True)
class VisionConfig:
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    patch_size: int = 32
    image_size: int = 224
    num_channels: int = 3
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    bos_token_id: int = 49406
    eos_token_id: int = 49407
    pad_token_id: int = 1


@dataclass(frozen=True)
class ClipConfig:
    vision: VisionConfig
    text: TextConfig
    projection_dim: int = 512

    @classmethod
    def from_hf(cls, config: Mapping[str, Any]) -> ClipConfig:
        """From a transformers `config.json` (model_type "clip")."""
        return cls(
            vision=subconfig(VisionConfig, config.get("vision_config") or {}),
            text=subconfig(TextConfig, config.get("text_config") or {}),
            projection_dim=int(config.get("projection_dim", 512)),
        )

    @classmethod
    def from_open_clip(cls, config: Mapping[str, Any]) -> ClipConfig:
        """From an open_clip model config (`open_clip_config.json` ["model_cfg"])."""
        vision_cfg, text_cfg = config["vision_cfg"], config["text_cfg"]
        unsupported = _open_clip_unsupported(vision_cfg, text_cfg)
        if unsupported:
            raise ValueError(f"open_clip options not supported: {', '.join(unsupported)}")
        act = "quick_gelu" if config.get("quick_gelu", False) else "gelu"
        v_width = int(vision_cfg["width"])
        t_width = int(text_cfg.get("width", 512))
        image_size = vision_cfg.get("image_size", 224)
        if isinstance(image_size, list | tuple):
            if image_size[0] != image_size[1]:
                raise ValueError(f"non-square image_size {image_size} not supported")
            image_size = image_size[0]
        return cls(
            vision=VisionConfig(
                hidden_size=v_width,
                intermediate_size=int(v_width * float(vision_cfg.get("mlp_ratio", 4.0))),
                num_hidden_layers=int(vision_cfg["layers"]),
                num_attention_heads=v_width // int(vision_cfg.get("head_width", 64)),
                patch_size=int(vision_cfg["patch_size"]),
                image_size=int(image_size),
                hidden_act=act,
            ),
            text=TextConfig(
                vocab_size=int(text_cfg.get("vocab_size", 49408)),
                hidden_size=t_width,
                intermediate_size=int(t_width * float(text_cfg.get("mlp_ratio", 4.0))),
                num_hidden_layers=int(text_cfg.get("layers", 12)),
                num_attention_heads=int(text_cfg.get("heads", 8)),
                max_position_embeddings=int(text_cfg.get("context_length", 77)),
                hidden_act=act,
                # open_clip reads the text feature at argmax(ids): the end-of-text id.
                eos_token_id=2,
                pad_token_id=int(text_cfg.get("pad_id", 0)),
            ),
            projection_dim=int(config["embed_dim"]),
        )


def subconfig(cls: type, raw: Mapping[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in raw.items() if k in names and v is not None})


# Options of open_clip's VisionTransformer / TextTransformer that change the
# computation. Refusing them is better than silently computing something else.
_OPEN_CLIP_DEFAULTS: dict[str, dict[str, Any]] = {
    "vision": {
        "timm_model_name": None,
        "attentional_pool": False,
        "no_ln_pre": False,
        "final_ln_after_pool": False,
        "pool_type": "tok",
        "global_average_pool": False,
        "output_tokens": False,
        "ls_init_value": None,
        "patch_dropout": 0.0,
        "act_kwargs": None,
        "norm_kwargs": None,
    },
    "text": {
        "hf_model_name": None,
        "pool_type": "argmax",
        "no_causal_mask": False,
        "proj_bias": False,
        "embed_cls": False,
        "final_ln_after_pool": False,
        "ls_init_value": None,
        "act_kwargs": None,
        "norm_kwargs": None,
    },
}


def _open_clip_unsupported(vision_cfg: Mapping[str, Any], text_cfg: Mapping[str, Any]) -> list[str]:
    bad = []
    for tower, cfg in (("vision", vision_cfg), ("text", text_cfg)):
        for key, default in _OPEN_CLIP_DEFAULTS[tower].items():
            value = cfg.get(key, default)
            if key == "patch_dropout":  # dropout is off at inference
                continue
            if value not in (default, None) and not (value == {} and default is None):
                bad.append(f"{tower}_cfg.{key}={value!r}")
    return bad


# ------------------------------------------------------------- weight shapes

VISION_PREFIX = "vision_model."
TEXT_PREFIX = "text_model."


def layer_shapes(prefix: str, width: int, mlp: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        shapes[f"{prefix}self_attn.{proj}.weight"] = (width, width)
        shapes[f"{prefix}self_attn.{proj}.bias"] = (width,)
    for norm in ("layer_norm1", "layer_norm2"):
        shapes[f"{prefix}{norm}.weight"] = (width,)
        shapes[f"{prefix}{norm}.bias"] = (width,)
    shapes[f"{prefix}mlp.fc1.weight"] = (mlp, width)
    shapes[f"{prefix}mlp.fc1.bias"] = (mlp,)
    shapes[f"{prefix}mlp.fc2.weight"] = (width, mlp)
    shapes[f"{prefix}mlp.fc2.bias"] = (width,)
    return shapes


def vision_weight_shapes(cfg: ClipConfig) -> dict[str, tuple[int, ...]]:
    v, d = cfg.vision, cfg.vision.hidden_size
    shapes: dict[str, tuple[int, ...]] = {
        "vision_model.embeddings.class_embedding": (d,),
        "vision_model.embeddings.patch_embedding.weight": (
            d,
            v.num_channels,
            v.patch_size,
            v.patch_size,
        ),
        "vision_model.embeddings.position_embedding.weight": (v.grid**2 + 1, d),
        "vision_model.pre_layrnorm.weight": (d,),
        "vision_model.pre_layrnorm.bias": (d,),
        "vision_model.post_layernorm.weight": (d,),
        "vision_model.post_layernorm.bias": (d,),
        "visual_projection.weight": (cfg.projection_dim, d),
    }
    for i in range(v.num_hidden_layers):
        shapes |= layer_shapes(f"vision_model.encoder.layers.{i}.", d, v.intermediate_size)
    return shapes


def text_weight_shapes(cfg: ClipConfig) -> dict[str, tuple[int, ...]]:
    t, d = cfg.text, cfg.text.hidden_size
    shapes: dict[str, tuple[int, ...]] = {
        "text_model.embeddings.token_embedding.weight": (t.vocab_size, d),
        "text_model.embeddings.position_embedding.weight": (t.max_position_embeddings, d),
        "text_model.final_layer_norm.weight": (d,),
        "text_model.final_layer_norm.bias": (d,),
        "text_projection.weight": (cfg.projection_dim, d),
    }
    for i in range(t.num_hidden_layers):
        shapes |= layer_shapes(f"text_model.encoder.layers.{i}.", d, t.intermediate_size)
    return shapes


# Keys a checkpoint may hold that no tower reads: buffers and the contrastive
# temperature (read separately, for zero-shot classification).
IGNORED_KEYS = (
    "logit_scale",
    "vision_model.embeddings.position_ids",
    "text_model.embeddings.position_ids",
)

# ------------------------------------------------------------------- blocks
#
# The token stream is kept 2-D, [B*T, D]: see layers.BlockSpec.

Weights = Mapping[str, np.ndarray]
QuerySelect = Callable[[str], str]


def encoder_layer(
    g: Graph,
    x: str,
    w: Weights,
    key: str,
    b: BlockSpec,
    mask: str | None,
    select: QuerySelect | None = None,
) -> str:
    """Pre-norm transformer block on [B*T, D] rows. With `select`, only one
    query row per item is computed (the last block needs just the token that
    is read out), and the block returns [B, D]."""
    head_dim = b.width // b.heads
    h = layer_norm(g, x, w, f"{key}layer_norm1", b.eps)  # [B*T, D]
    query_in = select(h) if select else h  # [B*Tq, D]
    scale = head_dim**-0.5
    q = dense(g, query_in, w, f"{key}self_attn.q_proj", b.precision, scale=scale)  # [B*Tq, D]
    # Two biases need no pass over the tokens: the key bias adds q.b_k to every score of a
    # query row, which the softmax cancels; the value bias leaves the attention as it came
    # in (each row of probabilities sums to 1), so it joins the output projection's bias.
    k_key, v_key, out_key = (f"{key}self_attn.{p}" for p in ("k_proj", "v_proj", "out_proj"))
    k = linear(g, h, w[f"{k_key}.weight"], None, k_key, b.precision)  # [B*T, D]
    v = linear(g, h, w[f"{v_key}.weight"], None, v_key, b.precision)  # [B*T, D]
    out_w = w[f"{out_key}.weight"]  # [D, D]
    out_b = w[f"{out_key}.bias"] + out_w.astype(np.float64) @ w[f"{v_key}.bias"]  # [D]
    q_shape = g.ints([-1, 1, b.heads, head_dim]) if select else b.heads_shape
    q_heads = split_heads(g, q, q_shape)  # [B, H, Tq, Dh]
    k_heads = split_heads(g, k, b.heads_shape, keys_last=True)  # [B, H, Dh, T]
    scores = g.op("MatMul", q_heads, k_heads)  # [B, H, Tq, T]
    if mask is not None:
        scores = g.op("Add", scores, mask)
    probs = g.op("Softmax", scores, axis=-1)  # [B, H, Tq, T]
    attended = g.op("MatMul", probs, split_heads(g, v, b.heads_shape))  # [B, H, Tq, Dh]
    merged = merge_heads(g, attended, b.width)  # [B*Tq, D]
    out = linear(g, merged, out_w, out_b.astype(np.float32), out_key, b.precision)
    x = g.op("Add", select(x) if select else x, out)  # [B*Tq, D]
    h = layer_norm(g, x, w, f"{key}layer_norm2", b.eps)
    h = dense(g, h, w, f"{key}mlp.fc1", b.precision)  # [B*Tq, M]
    h = dense(g, activation(g, h, b.act), w, f"{key}mlp.fc2", b.precision)  # [B*Tq, D]
    return g.op("Add", x, h)  # [B*Tq, D]


# ------------------------------------------------------------------- towers

IMAGE_INPUT = "pixel_values"
TEXT_INPUTS = ("input_ids", "eot_index")
EMBEDDING_OUTPUT = "embedding"


def build_vision_graph(cfg: ClipConfig, w: Weights, precision: Precision) -> onnx.ModelProto:
    v = cfg.vision
    d, p, grid, c = v.hidden_size, v.patch_size, v.grid, v.num_channels
    tokens = grid * grid + 1
    g = Graph("clip_vision")
    heads_shape = g.ints([-1, tokens, v.num_attention_heads, d // v.num_attention_heads])
    block = BlockSpec(
        d, v.num_attention_heads, v.hidden_act, v.layer_norm_eps, precision, heads_shape
    )
    x = g.input(IMAGE_INPUT, FLOAT, ["batch", c, v.image_size, v.image_size])
    # The patch Conv has stride == kernel, so it is a MatMul over flattened
    # patches; as a MatMul it quantizes well (ConvInteger was slow here).
    x = g.op("Reshape", x, g.ints([0, c, grid, p, grid, p]))  # [B, C, gh, p, gw, p]
    x = g.op("Transpose", x, perm=[0, 2, 4, 1, 3, 5])  # [B, gh, gw, C, p, p]
    x = g.op("Reshape", x, g.ints([-1, c * p * p]))  # [B*N, C*p*p]
    key = "vision_model.embeddings.patch_embedding"
    patch_w = w[f"{key}.weight"].reshape(d, -1)  # [D, C*p*p]
    x = linear(g, x, patch_w, None, key, precision)  # [B*N, D]
    x = g.op("Reshape", x, g.ints([-1, grid * grid, d]))  # [B, N, D]
    pos = w["vision_model.embeddings.position_embedding.weight"]  # [N+1, D]
    x = g.op("Add", x, g.const(pos[1:].astype(np.float32)))  # [B, N, D]
    cls = (w["vision_model.embeddings.class_embedding"] + pos[0]).reshape(1, 1, d)  # [1, 1, D]
    batch = g.op("Shape", x, start=0, end=1)  # [1]
    cls_shape = g.op("Concat", batch, g.ints([1, d]), axis=0)
    cls_tokens = g.op("Expand", g.const(cls.astype(np.float32)), cls_shape)  # [B, 1, D]
    x = g.op("Concat", cls_tokens, x, axis=1)  # [B, N+1, D]
    x = g.op("Reshape", x, g.ints([-1, d]))  # [B*(N+1), D]
    x = layer_norm(g, x, w, "vision_model.pre_layrnorm", v.layer_norm_eps)

    def class_token(t: str) -> str:
        t = g.op("Reshape", t, g.ints([-1, tokens, d]))  # [B, N+1, D]
        t = g.op("Slice", t, g.ints([0]), g.ints([1]), g.ints([1]))  # [B, 1, D]
        return g.op("Reshape", t, g.ints([-1, d]))  # [B, D]

    for i in range(v.num_hidden_layers):
        last = i == v.num_hidden_layers - 1
        layer_key = f"vision_model.encoder.layers.{i}."
        x = encoder_layer(g, x, w, layer_key, block, None, class_token if last else None)
    x = layer_norm(g, x, w, "vision_model.post_layernorm", v.layer_norm_eps)  # [B, D]
    x = dense(g, x, w, "visual_projection", precision)  # [B, P]
    g.output(x, EMBEDDING_OUTPUT, FLOAT, ["batch", cfg.projection_dim])
    return g.to_model("CLIP image tower")


def build_text_graph(cfg: ClipConfig, w: Weights, precision: Precision) -> onnx.ModelProto:
    t = cfg.text
    d, ctx, heads = t.hidden_size, t.max_position_embeddings, t.num_attention_heads
    g = Graph("clip_text")
    ids = g.input(TEXT_INPUTS[0], INT64, ["batch", "tokens"])
    eot = g.input(TEXT_INPUTS[1], INT64, ["batch"])
    tokens = g.op("Shape", ids, start=1, end=2)  # [1] = T
    heads_shape = g.op("Concat", g.ints([-1]), tokens, g.ints([heads, d // heads]), axis=0)
    block = BlockSpec(d, heads, t.hidden_act, t.layer_norm_eps, precision, heads_shape)
    x = table_lookup(g, w, "text_model.embeddings.token_embedding", ids, precision)  # [B, T, D]
    key = "text_model.embeddings.position_embedding.weight"
    pos_table = g.const(w[key].astype(np.float32), key)  # [ctx, D]
    x = g.op("Add", x, g.op("Slice", pos_table, g.ints([0]), tokens, g.ints([0])))  # [B, T, D]
    x = g.op("Reshape", x, g.ints([-1, d]))  # [B*T, D]
    causal = np.triu(np.full((ctx, ctx), np.finfo(np.float32).min, dtype=np.float32), k=1)
    square = g.op("Concat", tokens, tokens, axis=0)  # [2] = (T, T)
    mask = g.op("Slice", g.const(causal), g.ints([0, 0]), square, g.ints([0, 1]))  # [T, T]
    eot_col = g.op("Unsqueeze", eot, g.ints([1]))  # [B, 1]
    eot_mask = g.op("Unsqueeze", g.op("Gather", mask, eot), g.ints([1, 2]))  # [B, 1, 1, T]
    items_shape = g.op("Concat", g.ints([-1]), tokens, g.ints([d]), axis=0)  # (-1, T, D)

    def eot_token(h: str) -> str:
        items = g.op("Reshape", h, items_shape)  # [B, T, D]
        return g.op("GatherND", items, eot_col, batch_dims=1)  # [B, D]

    for i in range(t.num_hidden_layers):
        last = i == t.num_hidden_layers - 1
        layer_key = f"text_model.encoder.layers.{i}."
        x = encoder_layer(
            g, x, w, layer_key, block, eot_mask if last else mask, eot_token if last else None
        )
    x = layer_norm(g, x, w, "text_model.final_layer_norm", t.layer_norm_eps)  # [B, D]
    x = dense(g, x, w, "text_projection", precision)  # [B, P]
    g.output(x, EMBEDDING_OUTPUT, FLOAT, ["batch", cfg.projection_dim])
    return g.to_model("CLIP text tower")
