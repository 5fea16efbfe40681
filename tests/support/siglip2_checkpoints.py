"""Random-weight SigLIP 2 NaFlex checkpoints written by transformers
(`Siglip2Model.save_pretrained`, `Siglip2ImageProcessorPil.save_pretrained`), with a Gemma
tokenizer trained here (tests/support/siglip_checkpoints.py says how)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.siglip_checkpoints import perturb, write_gemma_tokenizer

# Tiny towers: real structure, small widths. An 8 x 8 position grid, patches of 4, images of
# up to 48 patches, so every image's grid is resized: up on some axes, down on others.
TINY_VISION: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "patch_size": 4,
    "num_patches": 64,
}
TINY_TEXT: dict[str, Any] = {
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "projection_size": 64,
}
TINY_MAX_PATCHES = 48
# google/siglip2-base-patch16-naflex's vision tower (transformers' defaults); a tiny text
# tower projecting to its width, since its 256k-token table alone is 790 MB.
BASE_VISION: dict[str, Any] = {}
BASE_TEXT_FOR_VISION: dict[str, Any] = {**TINY_TEXT, "projection_size": 768}
BASE_MAX_PATCHES = 256


def write_siglip2(
    folder: Path,
    vision: dict[str, Any] | None = None,
    text: dict[str, Any] | None = None,
    max_num_patches: int = TINY_MAX_PATCHES,
    seed: int = 0,
) -> Path:
    """A `Siglip2Model` folder: config, model.safetensors, preprocessor_config.json and
    Gemma tokenizer files. transformers' initialisation, with LayerNorms and biases moved off
    1 and 0 so that a missing or mixed-up one shows."""
    import torch
    from transformers import Siglip2Config, Siglip2Model
    from transformers.models.siglip2.image_processing_pil_siglip2 import (
        Siglip2ImageProcessorPil,
    )

    vocab_size = write_gemma_tokenizer(folder)
    vision = {**(TINY_VISION if vision is None else vision)}
    text = {**(TINY_TEXT if text is None else text)}
    text.setdefault("vocab_size", vocab_size)
    text.update(bos_token_id=None, eos_token_id=None, pad_token_id=None)
    config = Siglip2Config(text_config=text, vision_config=vision)
    torch.manual_seed(seed)
    model = Siglip2Model(config).eval()
    perturb(model, seed)
    model.save_pretrained(folder)
    Siglip2ImageProcessorPil(
        patch_size=config.vision_config.patch_size, max_num_patches=max_num_patches
    ).save_pretrained(folder)
    return folder
