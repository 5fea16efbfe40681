"""BERT-family text encoders (BERT, DistilBERT, XLM-RoBERTa, MPNet) as one ONNX graph.

The graph returns the last hidden state, one vector per token; pooling and
normalisation (mean over the mask, CLS, Dense layers of sentence-transformers)
belong to the caller, since they differ per checkpoint and not per family.

Weight names are the transformers checkpoint keys of the base model
(`encoder.layer.3.attention.self.query.weight` ...). A sentence-transformers
folder stores them bare; a task-head checkpoint stores them under a prefix
(`bert.`, `roberta.`, `distilbert.`), which callers pass as `prefix`.

Exactness notes:
- The attention scale is folded into the query weights, as in clip.py.
- Padded keys get finfo(float32).min added to their scores, as transformers
  does, so the real tokens' outputs equal an unpadded run. Rows of padded
  positions are computed but meaningless; the caller masks them out.
- XLM-RoBERTa numbers positions from padding_idx + 1 and counts only
  non-padding tokens, computed from the ids exactly as transformers'
  `create_position_ids_from_input_ids` does (so left padding works too).
- MPNet does the same with padding_idx hard-coded to 1 (whatever the config's
  pad_token_id), and adds a learned relative position bias to every layer's
  scores. Its bucket ids depend only on positions, so they are computed here
  with transformers' formula for all [P, P] pairs and stored as a constant;
  the graph slices them to [T, T] and gathers the bias table once, folding the
  bias into the padding mask (exact on real tokens: their mask entry is 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from handspring.graph.builder import FLOAT, INT64, Graph
from handspring.graph.layers import (
    BlockSpec,
    Precision,
    activation,
    dense,
    layer_norm,
    merge_heads,
    split_heads,
    table_lookup,
)
from handspring.models.mpnet_positions import MPNET_BUCKETS, relative_position_buckets

if TYPE_CHECKING:
    import onnx

# --------------------------------------------------------------------- config

# Activations `layers.activation` implements with the same formula as HF's ACT2FN.
_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "quick_gelu")
# Families sharing RoBERTa's embeddings (positions counted from padding_idx + 1).
_ROBERTA_TYPES = ("xlm-roberta", "roberta")
SUPPORTED_MODEL_TYPES = ("bert", "distilbert", *_ROBERTA_TYPES, "mpnet")
# MPNetEmbeddings hard-codes padding_idx = 1 for its position ids.
_MPNET_PADDING_IDX = 1


@dataclass(frozen=True)
class EncoderConfig:
    model_type: str = "bert"
    vocab_size: int = 30522
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 512
    # 0 when the family has no token-type table (DistilBERT).
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    # Rows of MPNet's relative attention bias table; 0 for the other families.
    relative_attention_num_buckets: int = 0

    @property
    def roberta_positions(self) -> bool:
        return self.model_type in (*_ROBERTA_TYPES, "mpnet")

    @property
    def position_padding_idx(self) -> int:
        return _MPNET_PADDING_IDX if self.model_type == "mpnet" else self.pad_token_id

    @property
    def takes_token_types(self) -> bool:
        # With a single type every token reads row 0, which the graph folds
        # into a constant instead of asking the caller for an all-zero input.
        return self.type_vocab_size > 1

    @property
    def input_names(self) -> tuple[str, ...]:
        return INPUT_NAMES if self.takes_token_types else INPUT_NAMES[:2]

    @classmethod
    def from_hf(cls, config: Mapping[str, Any]) -> EncoderConfig:
        """From a transformers `config.json`."""
        model_type = config.get("model_type")
        if model_type == "distilbert":
            cfg = cls._from_distilbert(config)
        elif model_type in ("bert", *_ROBERTA_TYPES):
            cfg = cls._from_bert(config, model_type)
        elif model_type == "mpnet":
            cfg = cls._from_mpnet(config)
        else:
            raise ValueError(
                f"unsupported model_type {model_type!r}: expected one of "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        if cfg.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {cfg.hidden_act!r} for {model_type}")
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ValueError("hidden_size is not a multiple of num_attention_heads")
        return cfg

    @classmethod
    def _from_bert(cls, config: Mapping[str, Any], model_type: str) -> EncoderConfig:
        position_type = config.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            # relative_key(_query) adds a distance table to the scores: not built here.
            raise ValueError(f"unsupported position_embedding_type {position_type!r}")
        return cls(
            model_type=model_type,
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config.get("hidden_size", 768)),
            intermediate_size=int(config.get("intermediate_size", 3072)),
            num_hidden_layers=int(config.get("num_hidden_layers", 12)),
            num_attention_heads=int(config.get("num_attention_heads", 12)),
            max_position_embeddings=int(config.get("max_position_embeddings", 512)),
            type_vocab_size=int(config.get("type_vocab_size", 2)),
            hidden_act=str(config.get("hidden_act", "gelu")),
            layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
            pad_token_id=int(config.get("pad_token_id") or 0),
        )

    @classmethod
    def _from_mpnet(cls, config: Mapping[str, Any]) -> EncoderConfig:
        buckets = int(config.get("relative_attention_num_buckets", 32))
        if buckets < MPNET_BUCKETS:
            # Bucket ids run up to 31 whatever the table size (see mpnet_positions).
            raise ValueError(f"relative_attention_num_buckets {buckets} < {MPNET_BUCKETS}")
        # BERT's config names, no token types, and HF's pad default of 1.
        return replace(
            cls._from_bert({"pad_token_id": _MPNET_PADDING_IDX} | dict(config), "mpnet"),
            type_vocab_size=0,
            relative_attention_num_buckets=buckets,
        )

    @classmethod
    def _from_distilbert(cls, config: Mapping[str, Any]) -> EncoderConfig:
        # Sinusoidal position tables are still saved as position_embeddings.weight,
        # so `sinusoidal_pos_embds` needs no special case here.
        return cls(
            model_type="distilbert",
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config.get("dim", 768)),
            intermediate_size=int(config.get("hidden_dim", 3072)),
            num_hidden_layers=int(config.get("n_layers", 6)),
            num_attention_heads=int(config.get("n_heads", 12)),
            max_position_embeddings=int(config.get("max_position_embeddings", 512)),
            type_vocab_size=0,
            hidden_act=str(config.get("activation", "gelu")),
            layer_norm_eps=1e-12,  # hard-coded in transformers' DistilBERT
            pad_token_id=int(config.get("pad_token_id") or 0),
        )


# ------------------------------------------------------------- weight names


@dataclass(frozen=True)
class _LayerNames:
    """Checkpoint keys of one block's Linear and LayerNorm modules (no suffix)."""

    query: str
    key: str
    value: str
    attn_out: str
    attn_norm: str
    ffn_in: str
    ffn_out: str
    ffn_norm: str


def _layer_names(cfg: EncoderConfig, i: int, prefix: str) -> _LayerNames:
    if cfg.model_type == "distilbert":
        p = f"{prefix}transformer.layer.{i}."
        return _LayerNames(
            query=f"{p}attention.q_lin",
            key=f"{p}attention.k_lin",
            value=f"{p}attention.v_lin",
            attn_out=f"{p}attention.out_lin",
            attn_norm=f"{p}sa_layer_norm",
            ffn_in=f"{p}ffn.lin1",
            ffn_out=f"{p}ffn.lin2",
            ffn_norm=f"{p}output_layer_norm",
        )
    p = f"{prefix}encoder.layer.{i}."
    if cfg.model_type == "mpnet":
        return _LayerNames(
            query=f"{p}attention.attn.q",
            key=f"{p}attention.attn.k",
            value=f"{p}attention.attn.v",
            attn_out=f"{p}attention.attn.o",
            attn_norm=f"{p}attention.LayerNorm",
            ffn_in=f"{p}intermediate.dense",
            ffn_out=f"{p}output.dense",
            ffn_norm=f"{p}output.LayerNorm",
        )
    return _LayerNames(
        query=f"{p}attention.self.query",
        key=f"{p}attention.self.key",
        value=f"{p}attention.self.value",
        attn_out=f"{p}attention.output.dense",
        attn_norm=f"{p}attention.output.LayerNorm",
        ffn_in=f"{p}intermediate.dense",
        ffn_out=f"{p}output.dense",
        ffn_norm=f"{p}output.LayerNorm",
    )


def _relative_bias_key(prefix: str) -> str:
    return f"{prefix}encoder.relative_attention_bias.weight"


def encoder_weight_shapes(cfg: EncoderConfig, prefix: str = "") -> dict[str, tuple[int, ...]]:
    d, m = cfg.hidden_size, cfg.intermediate_size
    e = f"{prefix}embeddings."
    shapes: dict[str, tuple[int, ...]] = {
        f"{e}word_embeddings.weight": (cfg.vocab_size, d),
        f"{e}position_embeddings.weight": (cfg.max_position_embeddings, d),
        f"{e}LayerNorm.weight": (d,),
        f"{e}LayerNorm.bias": (d,),
    }
    if cfg.type_vocab_size:
        shapes[f"{e}token_type_embeddings.weight"] = (cfg.type_vocab_size, d)
    if cfg.relative_attention_num_buckets:
        shapes[_relative_bias_key(prefix)] = (
            cfg.relative_attention_num_buckets,
            cfg.num_attention_heads,
        )
    for i in range(cfg.num_hidden_layers):
        n = _layer_names(cfg, i, prefix)
        linears = {
            n.query: (d, d),
            n.key: (d, d),
            n.value: (d, d),
            n.attn_out: (d, d),
            n.ffn_in: (m, d),
            n.ffn_out: (d, m),
        }
        for key, shape in linears.items():
            shapes[f"{key}.weight"] = shape
            shapes[f"{key}.bias"] = (shape[0],)
        for key in (n.attn_norm, n.ffn_norm):
            shapes[f"{key}.weight"] = (d,)
            shapes[f"{key}.bias"] = (d,)
    return shapes


# Keys a checkpoint may hold that the encoder does not read: the pooler (a
# Linear + tanh on the CLS token that sentence-transformers never uses) and
# buffers older transformers versions saved.
IGNORED_KEY_PARTS = ("pooler.", "embeddings.position_ids", "embeddings.token_type_ids")


def is_ignored_key(key: str) -> bool:
    return any(part in key for part in IGNORED_KEY_PARTS)


# ------------------------------------------------------------------- graph
#
# The token stream is kept 2-D, [B*T, D]: see layers.BlockSpec.

Weights = Mapping[str, np.ndarray]
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "token_embeddings"


def _attention(g: Graph, x: str, w: Weights, n: _LayerNames, b: BlockSpec, mask: str) -> str:
    """Self-attention over [B*T, D] rows, before the output projection."""
    head_dim = b.width // b.heads
    q = dense(g, x, w, n.query, b.precision, scale=head_dim**-0.5)  # [B*T, D]
    k = dense(g, x, w, n.key, b.precision)  # [B*T, D]
    v = dense(g, x, w, n.value, b.precision)  # [B*T, D]
    q_heads = split_heads(g, q, b.heads_shape)  # [B, H, T, Dh]
    k_heads = split_heads(g, k, b.heads_shape, keys_last=True)  # [B, H, Dh, T]
    scores = g.op("Add", g.op("MatMul", q_heads, k_heads), mask)  # [B, H, T, T]
    probs = g.op("Softmax", scores, axis=-1)  # [B, H, T, T]
    attended = g.op("MatMul", probs, split_heads(g, v, b.heads_shape))  # [B, H, T, Dh]
    return merge_heads(g, attended, b.width)  # [B*T, D]


def _encoder_layer(g: Graph, x: str, w: Weights, n: _LayerNames, b: BlockSpec, mask: str) -> str:
    """Post-norm block (BERT): attention -> add -> LayerNorm; FFN -> add -> LayerNorm."""
    attended = dense(g, _attention(g, x, w, n, b, mask), w, n.attn_out, b.precision)
    x = layer_norm(g, g.op("Add", x, attended), w, n.attn_norm, b.eps)  # [B*T, D]
    h = dense(g, x, w, n.ffn_in, b.precision)  # [B*T, M]
    h = dense(g, activation(g, h, b.act), w, n.ffn_out, b.precision)  # [B*T, D]
    return layer_norm(g, g.op("Add", x, h), w, n.ffn_norm, b.eps)  # [B*T, D]


def _roberta_positions(g: Graph, cfg: EncoderConfig, ids: str) -> str:
    """cumsum(ids != pad) * (ids != pad) + pad: real tokens count from pad + 1,
    padding reads row pad, which no real token uses."""
    pad = cfg.position_padding_idx
    real = g.op("Cast", g.op("Not", g.op("Equal", ids, g.ints([pad]))), to=INT64)
    counted = g.op("Mul", g.op("CumSum", real, g.ints([1])), real)  # [B, T]
    return g.op("Add", counted, g.ints([pad]))  # [B, T]


def _embeddings(
    g: Graph, cfg: EncoderConfig, w: Weights, prefix: str, precision: Precision, tokens: str
) -> str:
    e = f"{prefix}embeddings."
    ids = INPUT_NAMES[0]
    x = table_lookup(g, w, f"{e}word_embeddings", ids, precision)  # [B, T, D]
    if cfg.takes_token_types:
        types = INPUT_NAMES[2]
        key = f"{e}token_type_embeddings.weight"
        x = g.op("Add", x, g.op("Gather", g.const(w[key].astype(np.float32), key), types))
    elif cfg.type_vocab_size == 1:
        row = w[f"{e}token_type_embeddings.weight"][0].astype(np.float32)  # [D]
        x = g.op("Add", x, g.const(row, f"{e}token_type_embeddings.weight.row0"))
    key = f"{e}position_embeddings.weight"
    pos_table = g.const(w[key].astype(np.float32), key)  # [P, D]
    if cfg.roberta_positions:
        positions = g.op("Gather", pos_table, _roberta_positions(g, cfg, ids))  # [B, T, D]
    else:
        # A Slice rather than Gather(Range(T)): ORT's optimizer turned that into
        # a Slice which failed at run time ("Starts must be a 1-D array").
        positions = g.op("Slice", pos_table, g.ints([0]), tokens, g.ints([0]))  # [T, D]
    x = g.op("Add", x, positions)  # [B, T, D]
    x = g.op("Reshape", x, g.ints([-1, cfg.hidden_size]))  # [B*T, D]
    return layer_norm(g, x, w, f"{e}LayerNorm", cfg.layer_norm_eps)


def _additive_mask(g: Graph, mask: str) -> str:
    """attention_mask [B, T] (1 real, 0 pad) -> [B, 1, 1, T] of 0 / finfo.min."""
    padding = g.op("Sub", g.const(np.asarray(1.0, np.float32)), g.op("Cast", mask, to=FLOAT))
    lowest = g.const(np.asarray(np.finfo(np.float32).min, np.float32))
    return g.op("Unsqueeze", g.op("Mul", padding, lowest), g.ints([1, 2]))  # [B, 1, 1, T]


def _relative_bias_mask(
    g: Graph, cfg: EncoderConfig, w: Weights, prefix: str, tokens: str, mask: str
) -> str:
    """MPNet: the relative position bias [H, T, T] plus the padding mask -> [B, H, T, T]."""
    p = cfg.max_position_embeddings
    buckets = g.const(relative_position_buckets(p), "relative_position_buckets")  # [P, P]
    ends = g.op("Concat", tokens, tokens, axis=0)  # [2] = (T, T)
    buckets = g.op("Slice", buckets, g.ints([0, 0]), ends, g.ints([0, 1]))  # [T, T]
    key = _relative_bias_key(prefix)
    table = g.const(w[key].astype(np.float32), key)  # [NB, H]
    bias = g.op("Transpose", g.op("Gather", table, buckets), perm=[2, 0, 1])  # [H, T, T]
    return g.op("Add", bias, mask)  # [B, H, T, T]


def encoder_tokens(
    g: Graph, cfg: EncoderConfig, w: Weights, precision: Precision, prefix: str = ""
) -> str:
    """Add the encoder to `g`: inputs `input_ids`, `attention_mask` and (when
    the model has more than one token type) `token_type_ids`, all int64
    [B, T]. Returns the last hidden state, [B, T, D]."""
    d, heads = cfg.hidden_size, cfg.num_attention_heads
    for name in cfg.input_names:
        g.input(name, INT64, ["batch", "tokens"])
    tokens = g.op("Shape", INPUT_NAMES[0], start=1, end=2)  # [1] = T
    x = _embeddings(g, cfg, w, prefix, precision, tokens)  # [B*T, D]
    mask = _additive_mask(g, INPUT_NAMES[1])  # [B, 1, 1, T]
    if cfg.relative_attention_num_buckets:
        mask = _relative_bias_mask(g, cfg, w, prefix, tokens, mask)  # [B, H, T, T]
    heads_shape = g.op("Concat", g.ints([-1]), tokens, g.ints([heads, d // heads]), axis=0)
    block = BlockSpec(d, heads, cfg.hidden_act, cfg.layer_norm_eps, precision, heads_shape)
    for i in range(cfg.num_hidden_layers):
        x = _encoder_layer(g, x, w, _layer_names(cfg, i, prefix), block, mask)
    items_shape = g.op("Concat", g.ints([-1]), tokens, g.ints([d]), axis=0)  # (-1, T, D)
    return g.op("Reshape", x, items_shape)  # [B, T, D]


def build_encoder_graph(
    cfg: EncoderConfig, w: Weights, precision: Precision, prefix: str = ""
) -> onnx.ModelProto:
    """The encoder alone; output `token_embeddings` float32 [B, T, D]."""
    g = Graph(cfg.model_type.replace("-", "_"))
    x = encoder_tokens(g, cfg, w, precision, prefix)
    g.output(x, OUTPUT_NAME, FLOAT, ["batch", "tokens", cfg.hidden_size])
    return g.to_model(f"{cfg.model_type} text encoder (last hidden state)")
