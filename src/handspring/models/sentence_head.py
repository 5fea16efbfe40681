"""What sentence-transformers runs after the transformer: pooling over the
tokens, then Dense layers, written in the Graph builder so they join the
encoder in one graph (normalisation and Matryoshka truncation stay in numpy).

Each pooling mode follows sentence-transformers' Pooling module, including
its constants (the 1e-9 floor on token counts, -1e9 for masked max).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from handspring.graph.builder import FLOAT, INT64, Graph
from handspring.graph.layers import Precision, linear
from handspring.models.bert import INPUT_NAMES, OUTPUT_NAME, EncoderConfig, encoder_tokens
from handspring.weights.sentence_transformers import DenseLayer, Pooling

if TYPE_CHECKING:
    import onnx


def _f32(g: Graph, value: float) -> str:
    return g.const(np.asarray(value, np.float32))


def _masked_sum(g: Graph, tokens: str, weights: str) -> tuple[str, str]:
    """sum_t x[b, t] * w[b, t] -> [B, D], and sum_t w[b, t] floored at 1e-9 -> [B, 1].

    The sum is a batched MatMul, [B, 1, T] @ [B, T, D]: one small product per row, so a
    row's vector does not depend on the rest of its batch. ReduceSum over the middle axis
    summed in an order that changed with the batch size (1 ulp apart)."""
    row_weights = g.op("Transpose", weights, perm=[0, 2, 1])  # [B, 1, T]
    total = g.op("Squeeze", g.op("MatMul", row_weights, tokens), g.ints([1]))  # [B, D]
    count = g.op("ReduceSum", weights, g.ints([1]), keepdims=0)  # [B, 1]
    return total, g.op("Max", count, _f32(g, 1e-9))


def pool(g: Graph, tokens: str, mask: str, pooling: Pooling) -> str:
    """tokens [B, T, D] float, mask [B, T] int64 (1 = real token) -> [B, D * modes]."""
    weights = g.op("Unsqueeze", g.op("Cast", mask, to=FLOAT), g.ints([2]))  # [B, T, 1]
    outputs = []
    for mode in pooling.modes:
        if mode == "cls":
            first = g.op("Slice", tokens, g.ints([0]), g.ints([1]), g.ints([1]))  # [B, 1, D]
            outputs.append(g.op("Squeeze", first, g.ints([1])))  # [B, D]
        elif mode == "max":
            # Masked positions become -1e9, as in sentence-transformers.
            masked = g.op("Sub", g.op("Mul", tokens, weights), g.op("Mul", g.op("Sub", _f32(g, 1.0), weights), _f32(g, 1e9)))  # fmt: skip
            outputs.append(g.op("ReduceMax", masked, axes=[1], keepdims=0))  # [B, D]
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            total, count = _masked_sum(g, tokens, weights)
            divisor = count if mode == "mean" else g.op("Sqrt", count)
            outputs.append(g.op("Div", total, divisor))  # [B, D]
        elif mode == "weightedmean":
            # Position weights 1..T on real tokens, 0 on (right) padding.
            positions = g.op("CumSum", weights, g.const(np.asarray(1, np.int64)))  # [B, T, 1]
            position_weights = g.op("Mul", weights, positions)
            total, count = _masked_sum(g, tokens, position_weights)
            outputs.append(g.op("Div", total, count))
        elif mode == "lasttoken":
            # Right padding: the last real token sits at (number of real tokens - 1).
            last = g.op(
                "Sub", g.op("ReduceSum", mask, g.ints([1]), keepdims=1), g.ints([1])
            )  # [B, 1]
            outputs.append(g.op("GatherND", tokens, last, batch_dims=1))  # [B, D]
        else:
            raise ValueError(f"unknown pooling mode {mode!r}")
    return outputs[0] if len(outputs) == 1 else g.op("Concat", *outputs, axis=1)


_ACTIVATIONS = {"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid"}


def dense_layers(
    g: Graph, x: str, layers: tuple[DenseLayer, ...], weights: list[Mapping[str, np.ndarray]]
) -> str:
    """x [B, in] through each Dense layer (`linear.weight`, `linear.bias` keys).
    They stay fp32 at every precision: a sliver of the compute, not worth an error."""
    for i, (layer, w) in enumerate(zip(layers, weights, strict=True)):
        bias = w["linear.bias"] if layer.bias else None
        x = linear(g, x, w["linear.weight"], bias, f"dense{i}.linear", Precision(int8=False))
        if layer.activation == "gelu":
            x = g.op("Gelu", x, domain="com.microsoft")
        elif layer.activation in _ACTIVATIONS:
            x = g.op(_ACTIVATIONS[layer.activation], x)
    return x


POOLING_MASK = "pooling_mask"
EMBEDDING_OUTPUT = "embedding"


def build_sentence_graph(
    cfg: EncoderConfig,
    w: Mapping[str, np.ndarray],
    precision: Precision,
    pooling: Pooling,
    layers: tuple[DenseLayer, ...] = (),
    dense_weights: list[Mapping[str, np.ndarray]] | None = None,
    prefix: str = "",
    token_output: bool = False,
) -> onnx.ModelProto:
    """Encoder, pooling and Dense layers in one graph; output `embedding` [B, P]
    (not normalised: the Normalize module and Matryoshka cuts run in numpy). With
    `token_output`, also the last hidden state, `token_embeddings` [B, T, D]: a graph
    output costs nothing when a run does not ask for it."""
    g = Graph(f"sentence_{cfg.model_type.replace('-', '_')}")
    tokens = encoder_tokens(g, cfg, w, precision, prefix)  # [B, T, D]
    # Without include_prompt, pooling skips the prompt's tokens, which the
    # attention still sees: the caller gives a second mask for pooling.
    pool_mask = (
        INPUT_NAMES[1]
        if pooling.include_prompt
        else g.input(POOLING_MASK, INT64, ["batch", "tokens"])
    )
    x = pool(g, tokens, pool_mask, pooling)  # [B, D * modes]
    x = dense_layers(g, x, layers, dense_weights or [])  # [B, P]
    g.output(x, EMBEDDING_OUTPUT, FLOAT, ["batch", None])
    if token_output:
        g.output(tokens, OUTPUT_NAME, FLOAT, ["batch", "tokens", cfg.hidden_size])
    return g.to_model(f"{cfg.model_type} sentence embedding")
