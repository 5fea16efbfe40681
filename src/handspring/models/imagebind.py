"""ImageBind (`imagebind/models/imagebind_model.py`): six towers as ONNX graphs.

Weight names are the reference state_dict keys (`modality_trunks.audio.blocks.
3.attn.in_proj_weight` ...). Our modality "image" is the reference's "vision".
Each graph ends with the reference's postprocessor: the unit vector, times
the modality's logit scale (none for images).

Exactness notes:
- An image is repeated to 2 frames before the Conv3d with a (2, p, p)
  kernel, so the stem is one MatMul over p x p patches with the kernel's two
  time slices summed (they see the same pixels).
- `add_bias_kv` (audio, depth, thermal, IMU) appends one learned key/value
  position after the in-projection: `bias_k`/`bias_v` live in projected space.
- Only the token that is read out (class token; the end-of-text token for
  texts) goes through the last block's query, out-projection and MLP.
- Texts are padded only to the longest in the batch: the causal mask keeps
  the end-of-text row blind to everything after it. `eot_index` is the
  reference's `argmax(input_ids)`, computed by the caller.
- The attention scale is folded into the query weights (moves results ~1e-7).
- Stem LayerNorms use PyTorch's default eps 1e-5; blocks and heads 1e-6.
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

# Sizes the reference fixes in code rather than in its constructor arguments.
IMAGE_SIZE = 224
IMAGE_FRAMES = 2  # PadIm2Video(ntimes=2)
CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408
IMU_CHANNELS, IMU_LENGTH, IMU_PATCH = 6, 2000, 8  # imu_kernel_size is not used by the reference
MLP_RATIO = 4
BLOCK_EPS = 1e-6  # blocks, vision ln_pre and heads
STEM_EPS = 1e-5  # nn.LayerNorm default, in the audio/depth/thermal/IMU stems
MAX_LOGIT_SCALE = 100.0
NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize

MODALITIES = ("image", "text", "audio", "depth", "thermal", "imu")
REFERENCE_NAMES = {m: "vision" if m == "image" else m for m in MODALITIES}
INPUTS: dict[str, tuple[str, ...]] = {
    "image": ("pixel_values",),
    "text": ("input_ids", "eot_index"),
    "audio": ("fbank",),
    "depth": ("depth",),
    "thermal": ("thermal",),
    "imu": ("imu",),
}
EMBEDDING_OUTPUT = "embedding"

# --------------------------------------------------------------------- config

# Training-only arguments of ImageBindModel: accepted in config.json, no effect here.
_TRAINING_ARGS = frozenset(
    {"audio_drop_path", "depth_drop_path", "thermal_drop_path", "imu_drop_path"}
)


@dataclass(frozen=True)
class ImageBindConfig:
    """ImageBindModel's constructor arguments; the defaults are imagebind_huge()."""

    video_frames: int = 2
    kernel_size: tuple[int, int, int] = (2, 14, 14)
    audio_kernel_size: int = 16
    audio_stride: int = 10
    out_embed_dim: int = 1024
    vision_embed_dim: int = 1280
    vision_num_blocks: int = 32
    vision_num_heads: int = 16
    audio_embed_dim: int = 768
    audio_num_blocks: int = 12
    audio_num_heads: int = 12
    audio_num_mel_bins: int = 128
    audio_target_len: int = 204
    text_embed_dim: int = 1024
    text_num_blocks: int = 24
    text_num_heads: int = 16
    depth_embed_dim: int = 384
    depth_kernel_size: int = 16
    depth_num_blocks: int = 12
    depth_num_heads: int = 8
    thermal_embed_dim: int = 768
    thermal_kernel_size: int = 16
    thermal_num_blocks: int = 12
    thermal_num_heads: int = 12
    imu_embed_dim: int = 512
    imu_kernel_size: int = 8  # ignored by the reference, which always patches by 8
    imu_num_blocks: int = 6
    imu_num_heads: int = 8

    def __post_init__(self) -> None:
        problems = _config_problems(self)
        if problems:
            raise ValueError(f"ImageBind config not supported: {'; '.join(problems)}")

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ImageBindConfig:
        """From a `config.json` with `"model_type": "imagebind"` and constructor arguments."""
        if raw.get("model_type") != "imagebind":
            raise ValueError(f"model_type is {raw.get('model_type')!r}, not 'imagebind'")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - names - _TRAINING_ARGS - {"model_type"})
        if unknown:
            raise ValueError(f"unknown ImageBind config keys: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for key in names & set(raw):
            value = raw[key]
            if key == "kernel_size":
                if not isinstance(value, list | tuple) or len(value) != 3:
                    raise ValueError(f"kernel_size must be 3 integers, got {value!r}")
                values[key] = tuple(_integer(key, v) for v in value)
            else:
                values[key] = _integer(key, value)
        return cls(**values)

    def trunk(self, modality: str) -> tuple[int, int, int]:
        """(width, blocks, heads) of a modality's transformer."""
        prefix = REFERENCE_NAMES[_checked(modality)]
        width, blocks, heads = (getattr(self, f"{prefix}_{k}") for k in _TRUNK_ARGS)
        return width, blocks, heads

    def patch_grid(self, modality: str) -> tuple[int, int]:
        """(rows, columns) of the patches a stem makes; (1, 250) for IMU, (0, 0) for text."""
        if modality == "image":
            return (IMAGE_SIZE // self.kernel_size[1],) * 2
        if modality == "audio":
            k, s = self.audio_kernel_size, self.audio_stride
            return (self.audio_num_mel_bins - k) // s + 1, (self.audio_target_len - k) // s + 1
        if modality in ("depth", "thermal"):
            return (IMAGE_SIZE // getattr(self, f"{modality}_kernel_size"),) * 2
        if modality == "imu":
            return 1, IMU_LENGTH // IMU_PATCH
        return 0, 0

    def tokens(self, modality: str) -> int:
        """Sequence length through the trunk: patches + class token, or 77 text positions."""
        if _checked(modality) == "text":
            return CONTEXT_LENGTH
        rows, cols = self.patch_grid(modality)
        return rows * cols + 1


_TRUNK_ARGS = ("embed_dim", "num_blocks", "num_heads")


def _integer(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    return value


def _config_problems(cfg: ImageBindConfig) -> list[str]:
    problems = []
    kt, kh, kw = cfg.kernel_size
    if kt != IMAGE_FRAMES or kh != kw or IMAGE_SIZE % kh:
        problems.append(f"kernel_size {cfg.kernel_size} is not ({IMAGE_FRAMES}, p, p), p | 224")
    if cfg.video_frames < kt:
        problems.append(f"video_frames {cfg.video_frames} < kernel_size[0] {kt}")
    for m in ("depth", "thermal"):
        if IMAGE_SIZE % getattr(cfg, f"{m}_kernel_size"):
            problems.append(f"{m}_kernel_size must divide {IMAGE_SIZE}")
    if cfg.audio_kernel_size > min(cfg.audio_num_mel_bins, cfg.audio_target_len):
        problems.append("audio_kernel_size larger than the spectrogram")
    for m in MODALITIES:
        width, blocks, heads = cfg.trunk(m)
        if width % heads or blocks < 1:
            problems.append(f"{REFERENCE_NAMES[m]}: {blocks} blocks of {width} in {heads} heads")
    return problems


def _checked(modality: str) -> str:
    if modality not in MODALITIES:
        raise ValueError(f"unknown ImageBind modality {modality!r}; one of {', '.join(MODALITIES)}")
    return modality


# ------------------------------------------------------------- weight names


def key_prefixes(modality: str) -> tuple[str, str, str, str]:
    """The prefixes of a modality's keys: preprocessor, trunk, head, postprocessor."""
    m = REFERENCE_NAMES[_checked(modality)]
    return (
        f"modality_preprocessors.{m}.",
        f"modality_trunks.{m}.",
        f"modality_heads.{m}.",
        f"modality_postprocessors.{m}.",
    )


# Stem projection (no bias) and the stem's LayerNorm, under the preprocessor prefix.
_STEM_KEYS: dict[str, tuple[str, str | None]] = {
    "image": ("rgbt_stem.proj.1", None),  # proj.0 is PadIm2Video
    "audio": ("rgbt_stem.proj", "rgbt_stem.norm_layer"),
    "depth": ("depth_stem.proj", "depth_stem.norm_layer"),
    "thermal": ("rgbt_stem.proj", "rgbt_stem.norm_layer"),
    "imu": ("imu_stem.proj", "imu_stem.norm_layer"),
}
# Head LayerNorm and projection (no bias), under the head prefix. IMU's head
# has a Dropout at index 2, so its projection is at 3.
_HEAD_KEYS: dict[str, tuple[str, str]] = {m: ("0", "2") for m in MODALITIES} | {
    "text": ("proj.0", "proj.1"),
    "imu": ("0", "3"),
}
_POS_KEY = {m: "pos_embedding_helper.pos_embed" for m in MODALITIES} | {
    "text": "pos_embed",
    "imu": "pos_embed",
}
_LOGIT_SCALE_KEY = "1.log_logit_scale"  # Sequential(Normalize, LearnableLogitScaling)
TEXT_LOGIT_SCALE_KEY = f"modality_postprocessors.text.{_LOGIT_SCALE_KEY}"  # learned
# The fixed (non-learnable) output scales: the reference's logit_scale_init
# values, stored as buffers that the graphs read.
OUTPUT_SCALES = {"image": 1.0, "audio": 20.0, "depth": 5.0, "thermal": 10.0, "imu": 5.0}

# Keys a checkpoint holds that no graph reads, with the reason.
IGNORED_KEYS: dict[str, str] = {
    "modality_preprocessors.text.mask": "the fixed causal mask; the graph builds its own, "
    "trimmed to the batch's text length",
}


def _stem_shapes(cfg: ImageBindConfig, modality: str, d: int) -> dict[str, tuple[int, ...]]:
    pre = key_prefixes(modality)[0]
    if modality == "text":
        return {
            f"{pre}pos_embed": (1, CONTEXT_LENGTH, d),
            f"{pre}mask": (CONTEXT_LENGTH, CONTEXT_LENGTH),
            f"{pre}token_embedding.weight": (VOCAB_SIZE, d),
        }
    proj, norm = _STEM_KEYS[modality]
    proj_shape: tuple[int, ...]
    positions = cfg.tokens(modality)
    if modality == "image":
        proj_shape = (d, 3, *cfg.kernel_size)
        # The pos table covers every frame of a `video_frames` clip; an image uses the first.
        positions = 1 + (cfg.video_frames // cfg.kernel_size[0]) * (positions - 1)
    elif modality == "imu":
        proj_shape = (d, IMU_CHANNELS * IMU_PATCH)
    else:
        k = getattr(cfg, f"{modality}_kernel_size")
        proj_shape = (d, 1, k, k)
    shapes = {
        f"{pre}cls_token": (1, 1, d),
        f"{pre}{proj}.weight": proj_shape,
        f"{pre}{_POS_KEY[modality]}": (1, positions, d),
    }
    if norm is not None:
        shapes |= {f"{pre}{norm}.weight": (d,), f"{pre}{norm}.bias": (d,)}
    return shapes


def weight_shapes(cfg: ImageBindConfig, modality: str) -> dict[str, tuple[int, ...]]:
    """Every state_dict key (parameters and persistent buffers) of one modality."""
    d, blocks, _ = cfg.trunk(modality)
    _, trunk, head, post = key_prefixes(modality)
    shapes = _stem_shapes(cfg, modality, d)
    if modality == "image":
        shapes |= {f"{trunk}pre_transformer_layer.0.{p}": (d,) for p in ("weight", "bias")}
    mlp = MLP_RATIO * d
    for i in range(blocks):
        b = f"{trunk}blocks.{i}."
        shapes |= {
            f"{b}attn.in_proj_weight": (3 * d, d),
            f"{b}attn.in_proj_bias": (3 * d,),
            f"{b}attn.out_proj.weight": (d, d),
            f"{b}attn.out_proj.bias": (d,),
            f"{b}mlp.fc1.weight": (mlp, d),
            f"{b}mlp.fc1.bias": (mlp,),
            f"{b}mlp.fc2.weight": (d, mlp),
            f"{b}mlp.fc2.bias": (d,),
        }
        shapes |= {f"{b}{n}.{p}": (d,) for n in ("norm_1", "norm_2") for p in ("weight", "bias")}
        if _has_bias_kv(modality):
            shapes |= {f"{b}attn.bias_k": (1, 1, d), f"{b}attn.bias_v": (1, 1, d)}
    norm, proj = _HEAD_KEYS[modality]
    shapes |= {f"{head}{norm}.weight": (d,), f"{head}{norm}.bias": (d,)}
    shapes[f"{head}{proj}.weight"] = (cfg.out_embed_dim, d)
    if modality != "image":
        shapes[f"{post}{_LOGIT_SCALE_KEY}"] = ()
    return shapes


def _has_bias_kv(modality: str) -> bool:
    return modality not in ("image", "text")


# ------------------------------------------------------------------- trunk
#
# The token stream is kept 2-D, [B*T, D]: see layers.BlockSpec.

Weights = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class _Tokens:
    """What a stem hands to the trunk."""

    rows: str  # [B*T, D]
    heads_shape: str  # (-1, T, H, Dh)
    readout: Callable[[str], str]  # [B*T, D] -> [B, D]: the row the head reads
    mask: str | None = None  # additive [T, T], every block but the last
    readout_mask: str | None = None  # additive [B, 1, 1, T], the last block's read-out rows


@dataclass(frozen=True)
class _BiasKV:
    """Shapes for appending bias_k/bias_v as one more key/value position."""

    items_shape: str  # (-1, T, D)
    token_shape: str  # (B, 1, D)
    heads_shape: str  # (-1, T+1, H, Dh)


def _append_position(g: Graph, x: str, bias: np.ndarray, kv: _BiasKV) -> str:
    items = g.op("Reshape", x, kv.items_shape)  # [B, T, D]
    extra = g.op("Expand", g.const(bias.astype(np.float32)), kv.token_shape)  # [B, 1, D]
    return g.op("Concat", items, extra, axis=1)  # [B, T+1, D]


def _block(
    g: Graph, x: str, w: Weights, key: str, b: BlockSpec, t: _Tokens, kv: _BiasKV | None, last: bool
) -> str:
    """Pre-norm block (BlockWithMasking around nn.MultiheadAttention) on [B*T, D]
    rows. The last block computes only the read-out rows and returns [B, D]."""
    d, head_dim = b.width, b.width // b.heads
    h = layer_norm(g, x, w, f"{key}norm_1", b.eps)  # [B*T, D]
    in_w, in_b = w[f"{key}attn.in_proj_weight"], w[f"{key}attn.in_proj_bias"]  # [3D, D], [3D]
    scale = head_dim**-0.5
    query_in = t.readout(h) if last else h  # [B*Tq, D]
    q_key, k_key, v_key = (f"{key}attn.in_proj_{n}" for n in "qkv")
    q = linear(g, query_in, in_w[:d] * scale, in_b[:d] * scale, q_key, b.precision)  # [B*Tq, D]
    k = linear(g, h, in_w[d : 2 * d], in_b[d : 2 * d], k_key, b.precision)  # [B*T, D]
    v = linear(g, h, in_w[2 * d :], in_b[2 * d :], v_key, b.precision)  # [B*T, D]
    kv_shape = b.heads_shape
    if kv is not None:
        k = _append_position(g, k, w[f"{key}attn.bias_k"], kv)  # [B, T+1, D]
        v = _append_position(g, v, w[f"{key}attn.bias_v"], kv)  # [B, T+1, D]
        kv_shape = kv.heads_shape
    q_shape = g.ints([-1, 1, b.heads, head_dim]) if last else b.heads_shape
    q_heads = split_heads(g, q, q_shape)  # [B, H, Tq, Dh]
    k_heads = split_heads(g, k, kv_shape, keys_last=True)  # [B, H, Dh, Tk]
    scores = g.op("MatMul", q_heads, k_heads)  # [B, H, Tq, Tk]
    mask = t.readout_mask if last else t.mask
    if mask is not None:
        scores = g.op("Add", scores, mask)
    probs = g.op("Softmax", scores, axis=-1)  # [B, H, Tq, Tk]
    attended = g.op("MatMul", probs, split_heads(g, v, kv_shape))  # [B, H, Tq, Dh]
    out = dense(g, merge_heads(g, attended, d), w, f"{key}attn.out_proj", b.precision)
    x = g.op("Add", t.readout(x) if last else x, out)  # [B*Tq, D]
    h = layer_norm(g, x, w, f"{key}norm_2", b.eps)
    h = dense(g, h, w, f"{key}mlp.fc1", b.precision)  # [B*Tq, 4D]
    h = dense(g, activation(g, h, b.act), w, f"{key}mlp.fc2", b.precision)  # [B*Tq, D]
    return g.op("Add", x, h)  # [B*Tq, D]


# ------------------------------------------------------------------- stems


def _patch_rows(g: Graph, x: str, channels: int, grid: int, p: int) -> str:
    """[B, C, grid*p, grid*p] -> [B*grid*grid, C*p*p]: one row per patch, row-major."""
    x = g.op("Reshape", x, g.ints([0, channels, grid, p, grid, p]))  # [B, C, gh, p, gw, p]
    x = g.op("Transpose", x, perm=[0, 2, 4, 1, 3, 5])  # [B, gh, gw, C, p, p]
    return g.op("Reshape", x, g.ints([-1, channels * p * p]))  # [B*N, C*p*p]


def _window_indices(rows: int, cols: int, k: int, stride: int, width: int) -> np.ndarray:
    """Flat indices into a [*, width] plane of every k x k window, row-major: [N, k*k]."""
    top = np.arange(rows)[:, None, None, None] * stride + np.arange(k)[None, None, :, None]
    left = np.arange(cols)[None, :, None, None] * stride + np.arange(k)[None, None, None, :]
    return (top * width + left).reshape(rows * cols, k * k).astype(np.int64)


def _stem_rows(g: Graph, cfg: ImageBindConfig, modality: str, w: Weights, p: Precision) -> str:
    """The model input -> one row per patch, [B*N, D], after the stem's LayerNorm."""
    d = cfg.trunk(modality)[0]
    pre = key_prefixes(modality)[0]
    proj_key, norm_key = _STEM_KEYS[modality]
    proj, norm = pre + proj_key, pre + norm_key if norm_key else None
    if modality == "image":
        x = g.input(INPUTS[modality][0], FLOAT, ["batch", 3, IMAGE_SIZE, IMAGE_SIZE])
        k = cfg.kernel_size[1]
        # Both frames of the padded clip are the image: sum the kernel's time slices.
        weight = w[f"{proj}.weight"].sum(axis=2).reshape(d, -1)  # [D, 3*p*p]
        x = linear(g, _patch_rows(g, x, 3, IMAGE_SIZE // k, k), weight, None, proj, p)
    elif modality == "audio":
        mel, length = cfg.audio_num_mel_bins, cfg.audio_target_len
        x = g.input(INPUTS[modality][0], FLOAT, ["batch", 1, mel, length])
        # The windows overlap (stride 10 < kernel 16), so the patches are
        # gathered (im2col) rather than reshaped. Measured at full size, batch 8:
        # Conv 13.6 ms, gather + fp32 MatMul 9.1 ms (bit-identical), int8 8.2 ms.
        k, s = cfg.audio_kernel_size, cfg.audio_stride
        rows, cols = cfg.patch_grid(modality)
        flat = g.op("Reshape", x, g.ints([0, -1]))  # [B, mel*len]
        windows = g.const(_window_indices(rows, cols, k, s, length))  # [N, k*k]
        x = g.op("Gather", flat, windows, axis=1)  # [B, N, k*k]
        x = g.op("Reshape", x, g.ints([-1, k * k]))  # [B*N, k*k]
        x = linear(g, x, w[f"{proj}.weight"].reshape(d, -1), None, proj, p)  # [B*N, D]
    elif modality in ("depth", "thermal"):
        x = g.input(INPUTS[modality][0], FLOAT, ["batch", 1, IMAGE_SIZE, IMAGE_SIZE])
        k = getattr(cfg, f"{modality}_kernel_size")
        weight = w[f"{proj}.weight"].reshape(d, -1)  # [D, p*p]
        x = linear(g, _patch_rows(g, x, 1, IMAGE_SIZE // k, k), weight, None, proj, p)
    else:  # imu: Tensor.unfold(-1, 8, 8) into 250 patches of 6 channels x 8 samples
        x = g.input(INPUTS[modality][0], FLOAT, ["batch", IMU_CHANNELS, IMU_LENGTH])
        x = g.op("Reshape", x, g.ints([0, IMU_CHANNELS, -1, IMU_PATCH]))  # [B, 6, 250, 8]
        x = g.op("Transpose", x, perm=[0, 2, 1, 3])  # [B, 250, 6, 8]
        x = g.op("Reshape", x, g.ints([-1, IMU_CHANNELS * IMU_PATCH]))  # [B*250, 48]
        x = linear(g, x, w[f"{proj}.weight"], None, proj, p)  # [B*250, D]
    return layer_norm(g, x, w, norm, STEM_EPS) if norm else x  # [B*N, D]


def _patch_tokens(
    g: Graph, cfg: ImageBindConfig, modality: str, w: Weights, p: Precision
) -> tuple[_Tokens, str]:
    """Stem, class token and positions for the fixed-length modalities; also
    returns the shape (B, 1, D) of one token per item."""
    d, _, heads = cfg.trunk(modality)
    pre = key_prefixes(modality)[0]
    n = cfg.tokens(modality)
    x = g.op("Reshape", _stem_rows(g, cfg, modality, w, p), g.ints([-1, n - 1, d]))  # [B, N, D]
    # A video-sized table (video_frames > 2) holds one frame after another; the
    # reference gives an image the first frame's positions.
    pos = w[f"{pre}{_POS_KEY[modality]}"].reshape(-1, d)[:n].astype(np.float32)  # [N+1, D]
    x = g.op("Add", x, g.const(pos[1:]))  # [B, N, D]
    cls = (w[f"{pre}cls_token"].reshape(1, 1, d) + pos[0]).astype(np.float32)  # [1, 1, D]
    batch = g.op("Shape", x, start=0, end=1)  # [1]
    token_shape = g.op("Concat", batch, g.ints([1, d]), axis=0)  # (B, 1, D)
    x = g.op("Concat", g.op("Expand", g.const(cls), token_shape), x, axis=1)  # [B, N+1, D]

    def class_token(h: str) -> str:
        items = g.op("Reshape", h, g.ints([-1, n * d]))  # [B, (N+1)*D]
        return g.op("Slice", items, g.ints([0]), g.ints([d]), g.ints([1]))  # [B, D]

    rows = g.op("Reshape", x, g.ints([-1, d]))  # [B*(N+1), D]
    return _Tokens(rows, g.ints([-1, n, heads, d // heads]), class_token), token_shape


def _text_tokens(g: Graph, cfg: ImageBindConfig, w: Weights, p: Precision) -> _Tokens:
    d, _, heads = cfg.trunk("text")
    pre = key_prefixes("text")[0]
    ids = g.input(INPUTS["text"][0], INT64, ["batch", "tokens"])
    eot = g.input(INPUTS["text"][1], INT64, ["batch"])
    tokens = g.op("Shape", ids, start=1, end=2)  # [1] = T
    heads_shape = g.op("Concat", g.ints([-1]), tokens, g.ints([heads, d // heads]), axis=0)
    x = table_lookup(g, w, f"{pre}token_embedding", ids, p)  # [B, T, D]
    pos_key = f"{pre}pos_embed"
    pos_table = g.const(w[pos_key].reshape(CONTEXT_LENGTH, d).astype(np.float32), pos_key)
    x = g.op("Add", x, g.op("Slice", pos_table, g.ints([0]), tokens, g.ints([0])))  # [B, T, D]
    causal = np.triu(
        np.full((CONTEXT_LENGTH, CONTEXT_LENGTH), np.finfo(np.float32).min, np.float32), k=1
    )
    square = g.op("Concat", tokens, tokens, axis=0)  # [2] = (T, T)
    mask = g.op("Slice", g.const(causal), g.ints([0, 0]), square, g.ints([0, 1]))  # [T, T]
    eot_col = g.op("Unsqueeze", eot, g.ints([1]))  # [B, 1]
    eot_mask = g.op("Unsqueeze", g.op("Gather", mask, eot), g.ints([1, 2]))  # [B, 1, 1, T]
    items_shape = g.op("Concat", g.ints([-1]), tokens, g.ints([d]), axis=0)  # (-1, T, D)

    def eot_token(h: str) -> str:
        items = g.op("Reshape", h, items_shape)  # [B, T, D]
        return g.op("GatherND", items, eot_col, batch_dims=1)  # [B, D]

    rows = g.op("Reshape", x, g.ints([-1, d]))  # [B*T, D]
    return _Tokens(rows, heads_shape, eot_token, mask, eot_mask)


# ------------------------------------------------------------------- towers


def _postprocess(g: Graph, x: str, w: Weights, modality: str) -> str:
    """Normalize(dim=-1), then LearnableLogitScaling: min(exp(log_scale), 100) times."""
    norm = g.op("ReduceL2", x, axes=[1], keepdims=1)  # [B, 1]
    floor = g.const(np.asarray(NORMALIZE_EPS, np.float32))
    x = g.op("Div", x, g.op("Max", norm, floor))  # [B, E]
    if modality == "image":
        return x
    log_scale = np.float32(w[f"{key_prefixes(modality)[3]}{_LOGIT_SCALE_KEY}"])
    scale = np.minimum(np.exp(log_scale), np.float32(MAX_LOGIT_SCALE)).astype(np.float32)
    return g.op("Mul", x, g.const(scale))  # [B, E]


def build_graph(
    cfg: ImageBindConfig, modality: str, weights: Weights, precision: Precision
) -> onnx.ModelProto:
    """One tower: the model input(s) of INPUTS[modality] -> `embedding` [B, out_embed_dim],
    the reference's output for that modality, postprocessor included."""
    d, blocks, heads = cfg.trunk(modality)
    _, trunk, head, _ = key_prefixes(modality)
    w = weights
    g = Graph(f"imagebind_{modality}")
    kv = None
    if modality == "text":
        t = _text_tokens(g, cfg, w, precision)
    else:
        t, token_shape = _patch_tokens(g, cfg, modality, w, precision)
        if _has_bias_kv(modality):
            n = cfg.tokens(modality)
            kv = _BiasKV(g.ints([-1, n, d]), token_shape, g.ints([-1, n + 1, heads, d // heads]))
    x = t.rows  # [B*T, D]
    if modality == "image":
        x = layer_norm(g, x, w, f"{trunk}pre_transformer_layer.0", BLOCK_EPS)
    spec = BlockSpec(d, heads, "gelu", BLOCK_EPS, precision, t.heads_shape)
    for i in range(blocks):
        x = _block(g, x, w, f"{trunk}blocks.{i}.", spec, t, kv, last=i == blocks - 1)
    norm, proj = _HEAD_KEYS[modality]
    x = layer_norm(g, x, w, f"{head}{norm}", BLOCK_EPS)  # [B, D]
    x = dense(g, x, w, f"{head}{proj}", precision)  # [B, E]
    x = _postprocess(g, x, w, modality)
    g.output(x, EMBEDDING_OUTPUT, FLOAT, ["batch", cfg.out_embed_dim])
    return g.to_model(f"ImageBind {modality} tower")
