"""SPLADE sparse encoders (transformers `*ForMaskedLM`): the encoder of bert.py, the
masked-LM head to vocabulary logits, then log(1 + relu(logits)) pooled over the real
tokens, as one graph. The output is dense [B, V]; most of it is zero.

MLM heads, as transformers writes them (the decoder is usually tied to the word
embeddings, and then not saved):
- BERT: `cls.predictions.transform.dense` + hidden_act + LayerNorm, decoder (bias
  `cls.predictions.bias` when the decoder's own is not saved).
- DistilBERT: `vocab_transform` + activation + `vocab_layer_norm`, `vocab_projector`.
- RoBERTa, XLM-RoBERTa: `lm_head.dense` + exact GELU + `lm_head.layer_norm`, `lm_head.decoder`.

Pooling follows sentence-transformers' SpladePooling. Max pooling commutes with the
monotone log1p(relu(.)), so it runs on the pooled [B, V] logits rather than on every
token's; padded positions are zeroed first, as there. log1p is written as
x * log(u) / (u - 1) with u = 1 + x (exact where 1 + x rounds), since ONNX has no Log1p.
The head stays fp32: the decoder decides which terms are zero.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from handspring.graph.builder import FLOAT, Graph
from handspring.graph.layers import Precision, activation, dense, layer_norm
from handspring.models.bert import INPUT_NAMES, EncoderConfig, encoder_tokens, encoder_weight_shapes

if TYPE_CHECKING:
    import onnx

SPARSE_OUTPUT = "sparse_embedding"
POOLING_STRATEGIES = ("max", "sum")
POOLING_ACTIVATIONS = ("relu", "log1p_relu")


@dataclass(frozen=True)
class MlmHead:
    prefix: str  # where the checkpoint keeps the base model's keys
    dense: str
    activation: str  # a layers.activation kind
    norm: str
    eps: float
    decoder: str  # its `.weight` [V, D], when not tied to the word embeddings
    bias: str  # the decoder's bias [V]


@dataclass(frozen=True)
class SpladePooling:
    strategy: str = "max"  # over tokens: "max" | "sum"
    activation: str = "relu"  # "relu": log(1 + relu(x)); "log1p_relu": log1p of that again


def mlm_head(cfg: EncoderConfig) -> MlmHead:
    t = cfg.model_type
    if t == "bert":
        p = "cls.predictions."
        return MlmHead(
            "bert.", f"{p}transform.dense", cfg.hidden_act, f"{p}transform.LayerNorm",
            cfg.layer_norm_eps, f"{p}decoder", f"{p}bias",
        )  # fmt: skip
    if t == "distilbert":
        return MlmHead(
            "distilbert.", "vocab_transform", cfg.hidden_act, "vocab_layer_norm", 1e-12,
            "vocab_projector", "vocab_projector.bias",
        )  # fmt: skip
    if t in ("roberta", "xlm-roberta"):
        return MlmHead(
            "roberta.", "lm_head.dense", "gelu", "lm_head.layer_norm", cfg.layer_norm_eps,
            "lm_head.decoder", "lm_head.bias",
        )  # fmt: skip
    raise ValueError(
        f"no masked-LM head for model_type {t!r} (supported: bert, distilbert, roberta, "
        "xlm-roberta)"
    )


def word_embeddings_key(head: MlmHead) -> str:
    return f"{head.prefix}embeddings.word_embeddings.weight"


def mlm_weight_shapes(cfg: EncoderConfig, head: MlmHead) -> dict[str, tuple[int, ...]]:
    """What the encoder and head need, but the decoder's weight and bias (see `decoder_keys`)."""
    d = cfg.hidden_size
    shapes = encoder_weight_shapes(cfg, head.prefix)
    shapes |= {f"{head.dense}.weight": (d, d), f"{head.dense}.bias": (d,)}
    shapes |= {f"{head.norm}.weight": (d,), f"{head.norm}.bias": (d,)}
    return shapes


def decoder_keys(head: MlmHead, keys: Collection[str]) -> tuple[str, str]:
    """The decoder's weight and bias among `keys`: its own when saved (untied), else the word
    embeddings and the head's bias, which transformers ties them to."""
    weight = f"{head.decoder}.weight"
    bias = f"{head.decoder}.bias"
    return (
        weight if weight in keys else word_embeddings_key(head),
        bias if bias in keys else head.bias,
    )


def _log1p(g: Graph, x: str) -> str:
    """log(1 + x) for x >= 0, accurate where 1 + x rounds (Goldberg's trick)."""
    u = g.op("Add", x, g.const(np.asarray(1.0, np.float32)))
    d = g.op("Sub", u, g.const(np.asarray(1.0, np.float32)))
    ratio = g.op("Div", g.op("Log", u), g.op("Max", d, g.const(np.asarray(1e-30, np.float32))))
    exact = g.op("Mul", x, ratio)
    return g.op("Where", g.op("Equal", d, g.const(np.asarray(0.0, np.float32))), x, exact)


def _activated(g: Graph, x: str, pooling: SpladePooling) -> str:
    x = _log1p(g, g.op("Relu", x))
    return _log1p(g, x) if pooling.activation == "log1p_relu" else x


def build_splade_graph(
    cfg: EncoderConfig,
    w: Mapping[str, np.ndarray],
    precision: Precision,
    head: MlmHead,
    pooling: SpladePooling,
) -> onnx.ModelProto:
    """Inputs as the encoder's; output `sparse_embedding` float32 [B, V]."""
    g = Graph(f"{cfg.model_type.replace('-', '_')}_splade")
    d, v = cfg.hidden_size, cfg.vocab_size
    tokens = encoder_tokens(g, cfg, w, precision, head.prefix)  # [B, T, D]
    x = g.op("Reshape", tokens, g.ints([-1, d]))  # [B*T, D]
    fp32 = Precision(int8=False)
    x = activation(g, dense(g, x, w, head.dense, fp32), head.activation)
    x = layer_norm(g, x, w, head.norm, head.eps)  # [B*T, D]
    weight_key, bias_key = decoder_keys(head, w)
    decoder_in_out = np.ascontiguousarray(w[weight_key].T, dtype=np.float32)  # [D, V]
    logits = g.op("MatMul", x, g.const(decoder_in_out, f"{head.decoder}.weight_in_out"))
    logits = g.op("Add", logits, g.const(w[bias_key].astype(np.float32), f"{head.decoder}.bias"))
    batch_tokens = g.op("Shape", INPUT_NAMES[0])  # (B, T)
    shape = g.op("Concat", batch_tokens, g.ints([v]), axis=0)
    logits = g.op("Reshape", logits, shape)  # [B, T, V]
    mask = g.op("Unsqueeze", g.op("Cast", INPUT_NAMES[1], to=FLOAT), g.ints([2]))  # [B, T, 1]
    masked = g.op("Mul", logits, mask)  # padded positions read 0, as sentence-transformers'
    if pooling.strategy == "max":
        pooled = _activated(g, g.op("ReduceMax", masked, axes=[1], keepdims=0), pooling)
    else:
        pooled = g.op("ReduceSum", _activated(g, masked, pooling), g.ints([1]), keepdims=0)
    g.output(pooled, SPARSE_OUTPUT, FLOAT, ["batch", v])
    return g.to_model(f"{cfg.model_type} SPLADE ({pooling.strategy} pooling)")
