"""Random-weight CLIP checkpoints in every layout we read, written with numpy only.

Weights are drawn from a seeded generator, so a checkpoint is the same on
every machine and golden outputs computed once stay valid. The key set comes
from our own shape functions; the reference implementations loading these
files without missing or unexpected keys is what checks those functions.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from handspring.models.clip import (
    ClipConfig,
    TextConfig,
    VisionConfig,
    text_weight_shapes,
    vision_weight_shapes,
)

TINY = ClipConfig(
    vision=VisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        patch_size=8,
        image_size=32,
    ),
    text=TextConfig(
        hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4
    ),
    projection_dim=40,
)
VIT_B32 = ClipConfig(vision=VisionConfig(), text=TextConfig(), projection_dim=512)


def random_clip_weights(cfg: ClipConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = vision_weight_shapes(cfg) | text_weight_shapes(cfg)
    weights: dict[str, np.ndarray] = {}
    for key, shape in sorted(shapes.items()):
        if "layer_norm" in key or "layrnorm" in key:
            # LayerNorm gains near 1 and offsets near 0, but not exactly, so a
            # mixed-up or missing norm shows in the output.
            base = 1.0 if key.endswith("weight") else 0.0
            value = base + 0.1 * rng.standard_normal(shape)
        elif key.endswith("bias"):
            value = 0.02 * rng.standard_normal(shape)
        elif "embedding" in key:
            value = 0.05 * rng.standard_normal(shape)
        else:
            fan_in = shape[-1] if len(shape) == 2 else int(np.prod(shape[1:]))
            value = rng.standard_normal(shape) / np.sqrt(fan_in)
        weights[key] = value.astype(np.float32)
    weights["logit_scale"] = np.asarray(np.log(1 / 0.07), dtype=np.float32)
    return weights


def hf_config(cfg: ClipConfig) -> dict:
    return {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": cfg.projection_dim,
        "logit_scale_init_value": 2.6592,
        "vision_config": {
            **asdict(cfg.vision),
            "model_type": "clip_vision_model",
            "projection_dim": cfg.projection_dim,
        },
        "text_config": {
            **asdict(cfg.text),
            "model_type": "clip_text_model",
            "projection_dim": cfg.projection_dim,
        },
    }


def _preprocessor_config(image_size: int) -> dict:
    return {
        "crop_size": {"height": image_size, "width": image_size},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "CLIPImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": image_size},
    }


def _tokenizer_files(folder: Path, tokenizer_json: bool) -> None:
    from tests.support.clip_vocab import write_clip_tokenizer

    write_clip_tokenizer(folder, tokenizer_json=tokenizer_json)


def write_hf_clip(
    folder: Path,
    cfg: ClipConfig = TINY,
    seed: int = 0,
    dtype: str = "float32",
    tokenizer_json: bool = True,
) -> Path:
    """A transformers-layout checkpoint; dtype "float16" or "bfloat16" stores
    the same weights rounded, as half-precision checkpoints on the hub are.
    tokenizer_json=False writes only vocab.json + merges.txt (no transformers needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = random_clip_weights(cfg, seed)
    (folder / "config.json").write_text(json.dumps(hf_config(cfg), indent=2))
    (folder / "preprocessor_config.json").write_text(
        json.dumps(_preprocessor_config(cfg.vision.image_size), indent=2)
    )
    _tokenizer_files(folder, tokenizer_json)
    if dtype == "float32":
        save_file(weights, str(folder / "model.safetensors"))
    elif dtype == "float16":
        save_file(
            {k: v.astype(np.float16) for k, v in weights.items()}, str(folder / "model.safetensors")
        )
    elif dtype == "bfloat16":
        write_bf16_safetensors(weights, folder / "model.safetensors")
    else:
        raise ValueError(dtype)
    return folder


def bf16_round(a: np.ndarray) -> np.ndarray:
    """float32 -> the nearest bfloat16 value, as float32 (round to nearest even)."""
    bits = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return (rounded.astype(np.uint32) << 16).view(np.float32)


def write_bf16_safetensors(weights: dict[str, np.ndarray], path: Path) -> None:
    # numpy has no bfloat16; write the documented safetensors layout by hand.
    header: dict[str, dict] = {}
    blobs: list[bytes] = []
    offset = 0
    for key in sorted(weights):
        bits = (bf16_round(weights[key]).view(np.uint32) >> 16).astype("<u2").tobytes()
        header[key] = {
            "dtype": "BF16",
            "shape": list(weights[key].shape),
            "data_offsets": [offset, offset + len(bits)],
        }
        blobs.append(bits)
        offset += len(bits)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for blob in blobs:
            f.write(blob)


def write_sentence_transformers_clip(folder: Path, cfg: ClipConfig = TINY, seed: int = 0) -> Path:
    """sentence-transformers/clip-ViT-B-32's layout: modules.json + 0_CLIPModel/."""
    folder.mkdir(parents=True, exist_ok=True)
    write_hf_clip(folder / "0_CLIPModel", cfg, seed)
    modules = [
        {
            "idx": 0,
            "name": "0",
            "path": "0_CLIPModel",
            "type": "sentence_transformers.models.CLIPModel",
        }
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"__version__": {}}))
    return folder


def open_clip_model_cfg(cfg: ClipConfig) -> dict:
    v, t = cfg.vision, cfg.text
    return {
        "embed_dim": cfg.projection_dim,
        "quick_gelu": v.hidden_act == "quick_gelu",
        "vision_cfg": {
            "image_size": v.image_size,
            "layers": v.num_hidden_layers,
            "width": v.hidden_size,
            "head_width": v.hidden_size // v.num_attention_heads,
            "mlp_ratio": v.intermediate_size / v.hidden_size,
            "patch_size": v.patch_size,
        },
        "text_cfg": {
            "context_length": t.max_position_embeddings,
            "vocab_size": t.vocab_size,
            "width": t.hidden_size,
            "heads": t.num_attention_heads,
            "layers": t.num_hidden_layers,
            "mlp_ratio": t.intermediate_size / t.hidden_size,
        },
    }


def to_open_clip_names(weights: dict[str, np.ndarray], cfg: ClipConfig) -> dict[str, np.ndarray]:
    """transformers keys -> OpenAI/OpenCLIP keys (fused qkv, [D, P] projections)."""
    out: dict[str, np.ndarray] = {
        "visual.class_embedding": weights["vision_model.embeddings.class_embedding"],
        "visual.conv1.weight": weights["vision_model.embeddings.patch_embedding.weight"],
        "visual.positional_embedding": weights["vision_model.embeddings.position_embedding.weight"],
        "visual.ln_pre.weight": weights["vision_model.pre_layrnorm.weight"],
        "visual.ln_pre.bias": weights["vision_model.pre_layrnorm.bias"],
        "visual.ln_post.weight": weights["vision_model.post_layernorm.weight"],
        "visual.ln_post.bias": weights["vision_model.post_layernorm.bias"],
        "visual.proj": np.ascontiguousarray(weights["visual_projection.weight"].T),
        "token_embedding.weight": weights["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": weights["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": weights["text_model.final_layer_norm.weight"],
        "ln_final.bias": weights["text_model.final_layer_norm.bias"],
        "text_projection": np.ascontiguousarray(weights["text_projection.weight"].T),
        "logit_scale": weights["logit_scale"],
    }
    towers = (
        (
            "vision_model.encoder.layers",
            "visual.transformer.resblocks",
            cfg.vision.num_hidden_layers,
        ),
        ("text_model.encoder.layers", "transformer.resblocks", cfg.text.num_hidden_layers),
    )
    for hf, oc, layers in towers:
        for i in range(layers):
            h, o = f"{hf}.{i}.", f"{oc}.{i}."
            for p in ("weight", "bias"):
                out[f"{o}attn.in_proj_{p}"] = np.concatenate(
                    [weights[f"{h}self_attn.{n}_proj.{p}"] for n in "qkv"]
                )
                for hn, on in (
                    ("self_attn.out_proj", "attn.out_proj"),
                    ("layer_norm1", "ln_1"),
                    ("layer_norm2", "ln_2"),
                    ("mlp.fc1", "mlp.c_fc"),
                    ("mlp.fc2", "mlp.c_proj"),
                ):
                    out[f"{o}{on}.{p}"] = weights[f"{h}{hn}.{p}"]
    return out


def write_open_clip(
    folder: Path, cfg: ClipConfig = TINY, seed: int = 0, tokenizer_json: bool = True
) -> Path:
    """open_clip_config.json + open_clip_model.safetensors, as on timm/ and laion/ repos."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = to_open_clip_names(random_clip_weights(cfg, seed), cfg)
    save_file(weights, str(folder / "open_clip_model.safetensors"))
    config = {
        "model_cfg": open_clip_model_cfg(cfg),
        "preprocess_cfg": {
            "mean": [0.48145466, 0.4578275, 0.40821073],
            "std": [0.26862954, 0.26130258, 0.27577711],
        },
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    _tokenizer_files(folder, tokenizer_json)
    return folder
