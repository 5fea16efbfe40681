"""open_clip's SigLIP configs (timm image trunks, open_clip text towers) as `SiglipConfig`:
the keys are mapped onto the transformers names in weights/open_clip_siglip_names.py, and the
graphs are models/siglip.py's. What open_clip can ask for and this does not compute is
refused, naming the config field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from handspring.models.siglip import SiglipConfig, SiglipTextConfig, SiglipVisionConfig, square


def config_from_open_clip(model_cfg: Mapping[str, Any]) -> SiglipConfig:
    """From an open_clip model config (`open_clip_config.json` ["model_cfg"], or Immich's
    `config.json`) whose image tower is a timm SigLIP trunk. ValueError names the field
    that asks for what this implementation does not compute."""
    vision_cfg = dict(model_cfg.get("vision_cfg") or {})
    text_cfg = dict(model_cfg.get("text_cfg") or {})
    trunk = timm_siglip_trunk(str(vision_cfg.get("timm_model_name") or ""))
    refused = _open_clip_refusals(model_cfg, vision_cfg, text_cfg)
    if refused:
        raise ValueError("; ".join(refused))
    image_size = square(vision_cfg.get("image_size", trunk.image_size), "image_size")
    if int(image_size) != trunk.image_size:
        # open_clip does not pass its image_size to timm: the trunk's own size holds.
        raise ValueError(
            f"vision_cfg.image_size={image_size}, but timm's {vision_cfg['timm_model_name']} "
            f"takes {trunk.image_size} x {trunk.image_size} images"
        )
    embed_dim = int(model_cfg.get("embed_dim", trunk.width))
    if embed_dim != trunk.width:
        raise ValueError(
            f"embed_dim={embed_dim}, but the timm trunk (timm_proj 'none') gives "
            f"{trunk.width} values per image"
        )
    width = int(text_cfg.get("width", 512))
    approximate = (text_cfg.get("act_kwargs") or {}).get("approximate", "none")
    return SiglipConfig(
        vision=SiglipVisionConfig(
            hidden_size=trunk.width,
            intermediate_size=int(trunk.width * trunk.mlp_ratio),
            num_hidden_layers=trunk.depth,
            num_attention_heads=trunk.heads,
            patch_size=trunk.patch_size,
            image_size=trunk.image_size,
            hidden_act=_TIMM_ACTIVATIONS[trunk.act],
            layer_norm_eps=1e-6,  # timm's LayerNorm
        ),
        text=SiglipTextConfig(
            vocab_size=int(text_cfg.get("vocab_size", 49408)),
            hidden_size=width,
            intermediate_size=int(width * float(text_cfg.get("mlp_ratio", 4.0))),
            num_hidden_layers=int(text_cfg.get("layers", 12)),
            num_attention_heads=int(text_cfg.get("heads", 8)),
            max_position_embeddings=int(text_cfg.get("context_length", 77)),
            hidden_act="gelu_pytorch_tanh" if approximate == "tanh" else "gelu",
            # torch's LayerNorm default, unless norm_kwargs says otherwise
            layer_norm_eps=float((text_cfg.get("norm_kwargs") or {}).get("eps", 1e-5)),
            projection_size=embed_dim,
        ),
    ).checked()


@dataclass(frozen=True)
class TimmSiglipTrunk:
    """A timm SigLIP image trunk (VisionTransformer without class token, read by a MAP head)
    as its timm model function defines it: what open_clip's `timm_model_name` stands for."""

    width: int
    depth: int
    heads: int
    patch_size: int
    image_size: int
    mlp_ratio: float = 4.0
    act: str = "gelu"  # timm's nn.GELU (erf); "gelu_tanh" in its later SigLIP trunks


_TIMM_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}
_SO = 3.7362  # so400m's mlp_ratio
_TANH = "gelu_tanh"

# timm 1.0's `vit_*_siglip_*` functions with the MAP head, name for name:
# (width, depth, heads, patch_size, image_size, mlp_ratio, act).
TIMM_SIGLIP_TRUNKS: dict[str, TimmSiglipTrunk] = {
    "vit_base_patch32_siglip_256": TimmSiglipTrunk(768, 12, 12, 32, 256, act=_TANH),
    "vit_base_patch16_siglip_224": TimmSiglipTrunk(768, 12, 12, 16, 224),
    "vit_base_patch16_siglip_256": TimmSiglipTrunk(768, 12, 12, 16, 256),
    "vit_base_patch16_siglip_384": TimmSiglipTrunk(768, 12, 12, 16, 384),
    "vit_base_patch16_siglip_512": TimmSiglipTrunk(768, 12, 12, 16, 512),
    "vit_large_patch16_siglip_256": TimmSiglipTrunk(1024, 24, 16, 16, 256),
    "vit_large_patch16_siglip_384": TimmSiglipTrunk(1024, 24, 16, 16, 384),
    "vit_large_patch16_siglip_512": TimmSiglipTrunk(1024, 24, 16, 16, 512, act=_TANH),
    "vit_so400m_patch14_siglip_224": TimmSiglipTrunk(1152, 27, 16, 14, 224, _SO),
    "vit_so400m_patch14_siglip_378": TimmSiglipTrunk(1152, 27, 16, 14, 378, _SO),
    "vit_so400m_patch14_siglip_384": TimmSiglipTrunk(1152, 27, 16, 14, 384, _SO),
    "vit_so400m_patch16_siglip_256": TimmSiglipTrunk(1152, 27, 16, 16, 256, _SO, _TANH),
    "vit_so400m_patch16_siglip_384": TimmSiglipTrunk(1152, 27, 16, 16, 384, _SO, _TANH),
    "vit_so400m_patch16_siglip_512": TimmSiglipTrunk(1152, 27, 16, 16, 512, _SO, _TANH),
    "vit_giantopt_patch16_siglip_256": TimmSiglipTrunk(1536, 40, 16, 16, 256, act=_TANH),
    "vit_giantopt_patch16_siglip_384": TimmSiglipTrunk(1536, 40, 16, 16, 384, act=_TANH),
}


def register_timm_siglip_trunk(name: str, trunk: TimmSiglipTrunk) -> None:
    """Make a timm trunk that is not one of timm's own SigLIP models known by its name (as
    `timm.models.register_model` makes it known to timm)."""
    TIMM_SIGLIP_TRUNKS[name] = trunk


def timm_siglip_trunk(name: str) -> TimmSiglipTrunk:
    """The trunk `name` (a pretrained tag such as ".webli" is ignored), or ValueError."""
    base = name.split(".", 1)[0]
    if base in TIMM_SIGLIP_TRUNKS:
        return TIMM_SIGLIP_TRUNKS[base]
    if not base:
        raise ValueError("vision_cfg.timm_model_name is not set: no timm SigLIP image trunk")
    if "siglip" in base and "_gap_" in base:
        raise ValueError(
            f"vision_cfg.timm_model_name={name!r} pools by averaging (a SigLIP trunk without "
            "its MAP head), which is not computed"
        )
    raise ValueError(
        f"vision_cfg.timm_model_name={name!r} is not a timm SigLIP trunk known here "
        f"(known: timm's vit_*_siglip_* MAP-head models, e.g. {next(iter(TIMM_SIGLIP_TRUNKS))})"
    )


# open_clip options that change the computation: (section, key) -> (open_clip's default,
# the values computed here). A config asking for another value is refused, naming it.
_OPEN_CLIP_OPTIONS: dict[tuple[str, str], tuple[Any, tuple[Any, ...]]] = {
    ("vision_cfg", "timm_pool"): ("avg", ("map",)),
    ("vision_cfg", "timm_proj"): ("linear", ("none",)),
    ("text_cfg", "hf_model_name"): (None, (None,)),
    ("text_cfg", "no_causal_mask"): (False, (True,)),
    ("text_cfg", "pool_type"): ("argmax", ("last",)),
    ("text_cfg", "proj_type"): ("linear", ("linear",)),
    ("text_cfg", "proj_bias"): (False, (True,)),
    ("text_cfg", "embed_cls"): (False, (False,)),
    ("text_cfg", "final_ln_after_pool"): (False, (False,)),
    ("text_cfg", "ls_init_value"): (None, (None,)),
    ("text_cfg", "block_type"): (None, (None, "default")),
    ("text_cfg", "qk_norm"): (False, (False,)),
    ("text_cfg", "scaled_cosine_attn"): (False, (False,)),
    ("text_cfg", "scale_heads"): (False, (False,)),
    ("text_cfg", "scale_attn_inner"): (False, (False,)),
    ("text_cfg", "scale_attn"): (False, (False,)),
    ("text_cfg", "scale_fc"): (False, (False,)),
    ("text_cfg", "tokenizer_mode"): (None, (None,)),
    ("", "quick_gelu"): (False, (False,)),
}


def _open_clip_refusals(
    model_cfg: Mapping[str, Any], vision_cfg: Mapping[str, Any], text_cfg: Mapping[str, Any]
) -> list[str]:
    sections = {"": model_cfg, "vision_cfg": vision_cfg, "text_cfg": text_cfg}
    refused = []
    for (section, key), (default, computed) in _OPEN_CLIP_OPTIONS.items():
        if (value := sections[section].get(key, default)) not in computed:
            name = f"{section}.{key}" if section else key
            refused.append(f"{name}={value!r} (computed: {computed[0]!r})")
    act = text_cfg.get("act_kwargs") or {}
    if set(act) - {"approximate"} or act.get("approximate", "none") not in ("none", "tanh"):
        refused.append(f"text_cfg.act_kwargs={act!r} (computed: approximate 'none' or 'tanh')")
    if set(norm := text_cfg.get("norm_kwargs") or {}) - {"eps"}:
        refused.append(f"text_cfg.norm_kwargs={norm!r} (computed: eps only)")
    return refused
