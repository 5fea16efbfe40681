"""Layers shared by the model families, written in the Graph builder.

Weights arrive in PyTorch's layout (Linear: [out, in]) under their checkpoint
keys; these functions transpose, quantize and fold them as the graph needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from handspring.graph.builder import MS_DOMAIN, Graph


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
    absmax = np.abs(weight_in_out).max(axis=0)  # [out]
    if not per_channel:
        absmax = np.full_like(absmax, absmax.max())
    scale = absmax / qmax  # [out]
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    q = np.clip(np.rint(weight_in_out / scale), -qmax, qmax).astype(np.int8)  # [in, out]
    return q, scale


def _quantized_input(g: Graph, x: str) -> tuple[str, str, str]:
    # One DynamicQuantizeLinear per input, shared by every MatMul reading it
    # (Q, K and V read the same LayerNorm output).
    key = ("dql", x)
    if key not in g.shared:
        g.shared[key] = tuple(g.op_multi("DynamicQuantizeLinear", x, outputs=3, name=f"{x}.q"))
    xq, xs, xz = g.shared[key]
    return xq, xs, xz


def _quantized_rows(g: Graph, x: str) -> tuple[str, str, str]:
    """Symmetric per-row quantization: x ~ scale * (xq - 128), xq uint8.

    Returns (xq as [N, K], scale as [N, 1], the [..., out] shape prefix of x).
    Rows are viewed as a 2-D matrix so QuantizeLinear can take one scale per row.
    """
    key = ("rows", x)
    if key not in g.shared:
        k = g.op("Shape", x, start=-1)  # [1] = K
        rows = g.op("Reshape", x, g.op("Concat", g.ints([-1]), k, axis=0))  # [N, K]
        high = g.op("ReduceMax", rows, axes=[1], keepdims=0)  # [N]
        low = g.op("ReduceMin", rows, axes=[1], keepdims=0)  # [N]
        absmax = g.op("Max", high, g.op("Neg", low))  # [N]
        scale = g.op("Mul", absmax, g.const(np.asarray(1 / 127, np.float32)))
        scale = g.op("Max", scale, g.const(np.asarray(1e-30, np.float32)))  # an all-zero row
        # A per-row zero point must have the scale's shape: 128 for every row.
        mid = g.op("Expand", g.const(np.asarray(128, np.uint8)), g.op("Shape", scale))  # [N]
        xq = g.op("QuantizeLinear", rows, scale, mid, axis=0)  # [N, K] uint8
        prefix = g.op("Shape", x, start=0, end=-1)  # [r] = x's leading dims
        g.shared[key] = (xq, g.op("Unsqueeze", scale, g.ints([1])), prefix)
    xq, scale, prefix = g.shared[key]
    return xq, scale, prefix


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
    if precision.per_row:
        xq, row_scale, prefix = _quantized_rows(g, x)
        unit = g.const(np.asarray(1.0, np.float32))
        mid = g.const(np.asarray(128, np.uint8))
        w_q, w_s = g.const(q, f"{key}.weight_int8"), g.const(scale, f"{key}.weight_scale")
        y = g.op("MatMulIntegerToFloat", xq, w_q, unit, w_s, mid, domain=MS_DOMAIN)  # [N, out]
        y = g.op("Mul", y, row_scale)
        if bias is not None:
            y = g.op("Add", y, g.const(bias.astype(np.float32), f"{key}.bias"))
        out_shape = g.op("Concat", prefix, g.ints([weight.shape[0]]), axis=0)
        return g.op("Reshape", y, out_shape)  # [..., out]
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


def split_heads(g: Graph, x: str, heads: int, head_dim: int, keys_last: bool = False) -> str:
    """[B, T, H*Dh] -> [B, H, T, Dh], or [B, H, Dh, T] for keys."""
    x = g.op("Reshape", x, g.ints([0, 0, heads, head_dim]))  # [B, T, H, Dh]
    return g.op("Transpose", x, perm=[0, 2, 3, 1] if keys_last else [0, 2, 1, 3])


def merge_heads(g: Graph, x: str, width: int) -> str:
    """[B, H, T, Dh] -> [B, T, H*Dh]."""
    x = g.op("Transpose", x, perm=[0, 2, 1, 3])  # [B, T, H, Dh]
    return g.op("Reshape", x, g.ints([0, 0, width]))
