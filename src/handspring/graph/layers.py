"""Layers shared by the model families, written in the Graph builder.

Weights arrive in PyTorch's layout (Linear: [out, in]) under their checkpoint
keys; these functions transpose, quantize and fold them as the graph needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from handspring.graph.builder import FLOAT, MS_DOMAIN, Graph


@dataclass(frozen=True)
class Precision:
    """How MatMul weights are stored. fp32 is exact; int8 quantizes weights per
    output channel (symmetric, signed) and activations per row (token) at run
    time. bench/int8_recipes.py measured the alternatives."""

    int8: bool = False
    # Signed 7-bit weights avoid the int16 overflow of u8*s8 kernels on CPUs
    # without VNNI; on VNNI CPUs full 8-bit is exact to its own rounding.
    weight_bits: int = 8
    # Linear layers (checkpoint key suffixes) kept in fp32 under int8.
    fp32_layers: tuple[str, ...] = ()
    per_channel: bool = True
    # Activations quantized per row (token) rather than per tensor: each
    # token gets its own range, and a row's result no longer depends on the
    # other rows of the batch.
    per_row: bool = True

    @property
    def tag(self) -> str:
        if not self.int8:
            return "fp32"
        granularity = "" if self.per_channel else "-tensor"
        granularity += "-rows" if self.per_row else ""
        return f"int8w{self.weight_bits}{granularity}" + "".join(f"-{k}" for k in self.fp32_layers)

    def quantizes(self, key: str) -> bool:
        return self.int8 and not key.endswith(self.fp32_layers)


def quantize_per_channel(
    weight_in_out: np.ndarray, bits: int, per_channel: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization of a [in, out] matrix, one scale per output
    column (or one for the whole matrix, repeated per column)."""
    qmax = float(2 ** (bits - 1) - 1)
    absmax = np.maximum(weight_in_out.max(axis=0), -weight_in_out.min(axis=0))  # [out]
    if not per_channel:
        absmax = np.full_like(absmax, absmax.max())
    scale = absmax / qmax  # [out]
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    # Laid out as the input is, so a transposed view ([D, V] of a [V, D] table) needs no
    # transposed copy, here or when it is transposed back.
    order = (
        "F" if weight_in_out.flags.f_contiguous and not weight_in_out.flags.c_contiguous else "C"
    )
    q = np.empty(weight_in_out.shape, dtype=np.int8, order=order)  # [in, out]
    # In blocks of rows, so that the fp32 temporaries stay small: a token table (49408 x 512)
    # quantized whole took three more fp32 copies of itself at once.
    rows = max(1, QUANTIZE_BLOCK_ELEMENTS // max(1, q.shape[1]))
    for start in range(0, len(q), rows):
        block = weight_in_out[start : start + rows] / scale
        np.rint(block, out=block)
        np.clip(block, -qmax, qmax, out=block)
        q[start : start + rows] = block
    return q, scale


QUANTIZE_BLOCK_ELEMENTS = 1 << 20


def _quantized_input(g: Graph, x: str) -> tuple[str, str, str]:
    # One DynamicQuantizeLinear per input, shared by every MatMul reading it
    # (Q, K and V read the same LayerNorm output).
    key = ("dql", x)
    if key not in g.shared:
        g.shared[key] = tuple(g.op_multi("DynamicQuantizeLinear", x, outputs=3, name=f"{x}.q"))
    xq, xs, xz = g.shared[key]
    return xq, xs, xz


def _quantized_rows(g: Graph, x: str) -> tuple[str, str]:
    """Symmetric per-row quantization of a 2-D [N, K] input:
    x ~ scale * (xq - 128), with xq uint8 [N, K] and scale [N, 1].

    Written with as few nodes as possible: a session's start-up time grows
    with the node count, and this runs once per distinct Linear input."""
    key = ("rows", x)
    if key not in g.shared:
        # max(max, -min) rather than max(Abs): two reads of x instead of writing |x| and
        # reading it back (the same value, bit for bit).
        top = g.op("ReduceMax", x, axes=[1], keepdims=0)  # [N]
        bottom = g.op("ReduceMin", x, axes=[1], keepdims=0)  # [N]
        absmax = g.op("Max", top, g.op("Neg", bottom))  # [N]
        # The floor keeps an all-zero row finite; 1e-30 / 127 is still a normal float.
        floor = g.const(np.asarray(1e-30, np.float32))
        scale = g.op("Mul", g.op("Max", absmax, floor), g.const(np.asarray(1 / 127, np.float32)))
        # QuantizeLinear with one scale per row (axis 0) divides inside its own kernel: the
        # same bytes as a Div before it, without writing and re-reading an fp32 [N, K] copy.
        mid = g.op("Expand", g.const(np.asarray(128, np.uint8)), g.op("Shape", scale))  # [N]
        xq = g.op("QuantizeLinear", x, scale, mid, axis=0)  # [N, K] uint8
        g.shared[key] = (xq, g.op("Unsqueeze", scale, g.ints([1])))  # [N, 1]
    xq, scale = g.shared[key]
    return xq, scale


def linear(
    g: Graph,
    x: str,
    weight: np.ndarray,
    bias: np.ndarray | None,
    key: str,
    precision: Precision,
) -> str:
    """y = x @ weight.T + bias, with weight [out, in] as PyTorch stores it."""
    w_in_out = np.ascontiguousarray(weight.T, dtype=np.float32)  # [in, out]
    if not precision.quantizes(key):
        y = g.op("MatMul", x, g.const(w_in_out, f"{key}.weight"))
        if bias is not None:
            y = g.op("Add", y, g.const(bias.astype(np.float32), f"{key}.bias"))
        return y
    q, scale = quantize_per_channel(w_in_out, precision.weight_bits, precision.per_channel)
    if precision.per_row:  # x is [N, in]: models keep their token stream 2-D for this
        xq, row_scale = _quantized_rows(g, x)
        mid = g.const(np.asarray(128, np.uint8))
        w_q, w_s = g.const(q, f"{key}.weight_int8"), g.const(scale, f"{key}.weight_scale")
        # The row scales go in as the product's input scale ([N, 1]): the op multiplies its
        # own output by them in place (a broadcast), which spares a second [N, out] tensor:
        # 3-5% of CLIP B/32's image tower, for bit-identical vectors. Not the bias: given
        # one, the op adds it before that multiplication, so it stays an Add of its own.
        y = g.op("MatMulIntegerToFloat", xq, w_q, row_scale, w_s, mid, domain=MS_DOMAIN)
        if bias is not None:
            y = g.op("Add", y, g.const(bias.astype(np.float32), f"{key}.bias"))
        return y
    xq, xs, xz = _quantized_input(g, x)
    inputs = [xq, g.const(q, f"{key}.weight_int8"), xs, g.const(scale, f"{key}.weight_scale"), xz]
    if bias is not None:
        inputs += ["", g.const(bias.astype(np.float32), f"{key}.bias")]
    return g.op("MatMulIntegerToFloat", *inputs, domain=MS_DOMAIN)


def dense(
    g: Graph,
    x: str,
    w: Mapping[str, np.ndarray],
    key: str,
    precision: Precision,
    scale: float = 1.0,
) -> str:
    """`linear` with `key.weight` and (if present) `key.bias` read from `w`,
    both multiplied by `scale` (used to fold constants into a layer)."""
    bias = w[f"{key}.bias"] * scale if f"{key}.bias" in w else None
    return linear(g, x, w[f"{key}.weight"] * scale, bias, key, precision)


def layer_norm(g: Graph, x: str, w: Mapping[str, np.ndarray], key: str, eps: float) -> str:
    return g.op(
        "LayerNormalization",
        x,
        g.const(w[f"{key}.weight"].astype(np.float32), f"{key}.weight"),
        g.const(w[f"{key}.bias"].astype(np.float32), f"{key}.bias"),
        axis=-1,
        epsilon=float(eps),
    )


def activation(g: Graph, x: str, kind: str) -> str:
    if kind == "quick_gelu":
        return g.op("QuickGelu", x, domain=MS_DOMAIN, alpha=1.702)
    if kind == "gelu":  # the erf form, as torch.nn.GELU() and HF "gelu"
        return g.op("Gelu", x, domain=MS_DOMAIN)
    if kind in ("gelu_new", "gelu_pytorch_tanh"):
        return g.op("FastGelu", x, domain=MS_DOMAIN)
    if kind == "relu":
        return g.op("Relu", x)
    raise ValueError(f"unsupported activation {kind!r}")


def split_heads(g: Graph, x: str, shape: str, keys_last: bool = False) -> str:
    """[B*T, H*Dh] -> [B, H, T, Dh], or [B, H, Dh, T] for keys; `shape` holds (-1, T, H, Dh)."""
    x = g.op("Reshape", x, shape)  # [B, T, H, Dh]
    return g.op("Transpose", x, perm=[0, 2, 3, 1] if keys_last else [0, 2, 1, 3])


def merge_heads(g: Graph, x: str, width: int) -> str:
    """[B, H, T, Dh] -> [B*T, H*Dh]."""
    x = g.op("Transpose", x, perm=[0, 2, 1, 3])  # [B, T, H, Dh]
    return g.op("Reshape", x, g.ints([-1, width]))


@dataclass(frozen=True)
class BlockSpec:
    """What a transformer block needs besides its input and weights.

    Model files keep their token stream 2-D, [B*T, D] (one row per token), so
    every Linear is a plain [rows, in] x [in, out] product whose int8
    activations can be quantized per row; attention views the rows as
    [B, T, H, Dh] through `heads_shape`."""

    width: int
    heads: int
    act: str
    eps: float
    precision: Precision
    heads_shape: str  # a shape tensor holding (-1, T, H, Dh)


def table_lookup(
    g: Graph, w: Mapping[str, np.ndarray], key: str, ids: str, precision: Precision
) -> str:
    """Rows of an embedding table `key.weight` [V, D] for ids [B, T] -> [B, T, D].

    Under int8 the table is stored as int8 rows with one scale each: token
    tables are a third to most of a text model's weights, and only a few rows
    are read per text, so the dequantization costs nothing measurable."""
    table = w[f"{key}.weight"].astype(np.float32, copy=False)  # [V, D]
    if not precision.quantizes(key):
        return g.op("Gather", g.const(table, f"{key}.weight"), ids)  # [B, T, D]
    q, scale = quantize_per_channel(table.T, 8)  # [D, V] int8, [V]: one scale per row
    del table  # the largest tensor of a text model: not held while the rest is built
    rows = g.op("Gather", g.const(q.T, f"{key}.weight_int8"), ids)
    scales = g.op("Gather", g.const(scale.reshape(-1, 1), f"{key}.weight_scale"), ids)
    return g.op("Mul", g.op("Cast", rows, to=FLOAT), scales)  # [B, T, D]
