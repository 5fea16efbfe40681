"""open_clip SigLIP checkpoints with a timm image trunk, random weights (tests only), and
their Immich export.

- `write_open_clip_siglip`: what open_clip's hub repos hold (timm/ViT-B-16-SigLIP):
  open_clip_config.json (model_cfg + preprocess_cfg: squash, bicubic, mean = std = 0.5),
  open_clip_model.safetensors, and the tokenizer files. The tiny model's image trunk is a
  timm VisionTransformer registered here under a name of its own, in timm and in
  Handspring alike; a full-size one is open_clip's own config (ViT-B-16-SigLIP).
- Tokenizers: google's spiece.model cannot be downloaded, so a small one is trained
  (tests/support/siglip_checkpoints.py) and made into what timm's repos ship: a T5
  tokenizer.json as transformers 4's SpmConverter wrote it (normalizer with trailing
  strip and "  " runs to "▁", Metaspace prepending "first"), pad token "</s>"
  (open_clip's SigLipTokenizer sets pad = eos = 1); or transformers' SiglipTokenizer files.
- `write_immich_siglip`: Immich's exporter on that model: config.json is the open_clip
  model config, visual/ and textual/ the graphs of `encode_image` / `encode_text` with
  normalize=True (torch.onnx.export), visual/preprocess_cfg.json open_clip's preprocess
  config, textual/ the tokenizer files as AutoTokenizer saves them.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from handspring.models.siglip_open_clip import TimmSiglipTrunk, register_timm_siglip_trunk

TINY_TRUNK_NAME = "vit_handspring_test_patch8_siglip_36"
# 36 is not a multiple of 8: the last 4 rows and columns fall outside the 4 x 4 patches,
# as 384 does with so400m's 14. Trunk GELU tanh, text GELU erf: both variants run.
TINY_TRUNK = TimmSiglipTrunk(64, 2, 4, 8, 36, mlp_ratio=2.0, act="gelu_tanh")
TINY_TEXT: dict[str, Any] = {
    "context_length": 64,
    "width": 48,
    "heads": 4,
    "layers": 2,
    "mlp_ratio": 2.0,
    "no_causal_mask": True,
    "proj_bias": True,
    "pool_type": "last",
    "norm_kwargs": {"eps": 1e-6},
    "tokenizer_kwargs": {"clean": "canonicalize"},
}
SIGLIP_PREPROCESS = {
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "interpolation": "bicubic",
    "resize_mode": "squash",
}


def register_tiny_trunk() -> None:
    """The tiny trunk, known to timm (for open_clip) and to Handspring by one name."""
    import timm
    from timm.models import register_model
    from timm.models.vision_transformer import VisionTransformer

    register_timm_siglip_trunk(TINY_TRUNK_NAME, TINY_TRUNK)
    if timm.models.is_model(TINY_TRUNK_NAME):
        return
    t = TINY_TRUNK

    def create(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        args = {
            "img_size": t.image_size,
            "patch_size": t.patch_size,
            "embed_dim": t.width,
            "depth": t.depth,
            "num_heads": t.heads,
            "mlp_ratio": t.mlp_ratio,
            "class_token": False,
            "global_pool": "map",
            "act_layer": t.act,
        }
        return VisionTransformer(**(args | kwargs))

    create.__name__ = TINY_TRUNK_NAME
    register_model(create)


def tiny_model_cfg(vocab_size: int) -> dict[str, Any]:
    """open_clip's model config of the tiny SigLIP (ViT-B-16-SigLIP's keys)."""
    return {
        "embed_dim": TINY_TRUNK.width,
        "init_logit_bias": -10,
        "custom_text": True,
        "vision_cfg": {
            "image_size": TINY_TRUNK.image_size,
            "timm_model_name": TINY_TRUNK_NAME,
            "timm_model_pretrained": False,
            "timm_pool": "map",
            "timm_proj": "none",
        },
        "text_cfg": {**TINY_TEXT, "vocab_size": vocab_size, "hf_tokenizer_name": "test/tiny"},
    }


def write_t5_tokenizer(folder: Path) -> int:
    """tokenizer.json and tokenizer_config.json as timm's SigLIP repos hold them; the
    vocabulary size."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from transformers import T5Tokenizer

    from tests.support.siglip_checkpoints import write_spiece_tokenizer

    source = folder / "spiece_source"
    write_spiece_tokenizer(source)
    only_model = folder / "spiece_only"
    only_model.mkdir(parents=True)
    shutil.copy(source / "spiece.model", only_model / "spiece.model")
    tokenizer = T5Tokenizer.from_pretrained(only_model, legacy=False, extra_ids=0, pad_token="</s>")
    tokenizer.save_pretrained(folder)
    shutil.rmtree(source)
    shutil.rmtree(only_model)
    path = folder / "tokenizer.json"
    backend = Tokenizer.from_file(str(path))
    backend.normalizer = normalizers.Sequence(
        [
            backend.normalizer,
            normalizers.Strip(left=False, right=True),
            normalizers.Replace(Regex(" {2,}"), "\u2581"),
        ]
    )
    backend.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    backend.save(str(path))
    return len(tokenizer)


def _perturbed(model: Any, seed: int) -> None:
    """LayerNorms and biases moved off 1 and 0, so that a mixed-up one shows; the zero-shot
    scale and bias near SigLIP's learned ones."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or "ln_" in name:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
            elif name.endswith("bias") and "logit" not in name:
                param.add_(0.02 * torch.randn(param.shape, generator=generator))
        model.logit_scale.fill_(float(np.log(10.0)) + 0.3)
        model.logit_bias.fill_(-2.5)


def write_open_clip_siglip(
    folder: Path,
    model_cfg: dict[str, Any] | None = None,
    tokenizer: str = "t5",
    seed: int = 0,
) -> Path:
    """An open_clip SigLIP folder; `model_cfg` None: the tiny one, sized to its tokenizer.
    tokenizer: "t5" (timm's files) or "spiece" (transformers' SiglipTokenizer files)."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from tests.support.siglip_checkpoints import write_spiece_tokenizer

    register_tiny_trunk()
    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = write_t5_tokenizer(folder) if tokenizer == "t5" else write_spiece_tokenizer(folder)
    model_cfg = model_cfg or tiny_model_cfg(vocab_size)
    assert model_cfg["text_cfg"]["vocab_size"] >= vocab_size, "the token table must hold every id"
    config_path = folder / "model_configs" / f"handspring-siglip-{seed}.json"
    config_path.parent.mkdir()
    config_path.write_text(json.dumps(model_cfg))
    open_clip.add_model_config(config_path)
    torch.manual_seed(seed)
    model = open_clip.create_model(config_path.stem).eval()
    shutil.rmtree(config_path.parent)
    _perturbed(model, seed)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "open_clip_model.safetensors"),
    )
    config = {"model_cfg": model_cfg, "preprocess_cfg": SIGLIP_PREPROCESS}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    return folder


def load_open_clip(folder: Path) -> tuple[Any, Any, Any]:
    """open_clip's model, eval transform and tokenizer for an open_clip folder."""
    import open_clip

    register_tiny_trunk()
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    return model.eval(), preprocess, open_clip.get_tokenizer(f"local-dir:{folder}")


def write_immich_siglip(folder: Path, source: Path) -> Path:
    """The Immich layout of the open_clip SigLIP folder `source`, as Immich's newer exporter
    writes it: graphs of a batch of one (the older one's take any batch)."""
    import torch

    model, _, _ = load_open_clip(source)
    model_cfg = json.loads((source / "open_clip_config.json").read_text())["model_cfg"]
    size = model_cfg["vision_cfg"]["image_size"]
    context = model_cfg["text_cfg"]["context_length"]

    class Encoder(torch.nn.Module):
        def __init__(self, image: bool) -> None:
            super().__init__()
            self.model, self.image = model, image

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.image:
                return self.model.encode_image(x, normalize=True)
            return self.model.encode_text(x, normalize=True)

    for sub in ("visual", "textual"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    torch.backends.mha.set_fastpath_enabled(False)  # the fused path has no ONNX export
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python-side checks
        torch.onnx.export(
            Encoder(image=True),
            (torch.zeros(1, 3, size, size),),
            str(folder / "visual" / "model.onnx"),
            input_names=["image"],
            output_names=["embedding"],
            dynamo=False,
        )
        torch.onnx.export(
            Encoder(image=False),
            (torch.ones(1, context, dtype=torch.int32),),
            str(folder / "textual" / "model.onnx"),
            input_names=["text"],
            output_names=["embedding"],
            dynamo=False,
        )
    (folder / "config.json").write_text(json.dumps(model_cfg))
    preprocess = {"size": [size, size], "mode": "RGB", **SIGLIP_PREPROCESS, "fill_color": 0}
    (folder / "visual" / "preprocess_cfg.json").write_text(json.dumps(preprocess))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, folder / "textual" / name)
    return folder
