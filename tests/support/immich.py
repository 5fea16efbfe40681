"""An Immich-layout CLIP folder, exported from open_clip by torch.onnx (tests only).

Immich ships CLIP as `visual/model.onnx` (input "image" [B, 3, H, W]) and
`textual/model.onnx` (input "text", int32 [B, context_length], padded with 0),
with the open_clip model config as `config.json`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from handspring.models.clip import ClipConfig
from tests.support.checkpoints import TINY, open_clip_model_cfg, write_open_clip


def write_immich(
    folder: Path, cfg: ClipConfig = TINY, seed: int = 0, batch_of_one: bool = False
) -> Path:
    """`batch_of_one`: graphs fixed at one item per run, as Immich's newer exports are."""
    import open_clip
    import torch
    from safetensors.torch import load_file

    source = write_open_clip(folder.parent / f"{folder.name}_open_clip", cfg, seed)
    model_cfg = open_clip_model_cfg(cfg)
    model = open_clip.model.CLIP(**model_cfg).eval()
    model.load_state_dict(load_file(source / "open_clip_model.safetensors"), strict=True)

    class Text(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, text: torch.Tensor) -> torch.Tensor:
            return self.model.encode_text(text.long())

    (folder / "visual").mkdir(parents=True, exist_ok=True)
    (folder / "textual").mkdir(parents=True, exist_ok=True)
    size = cfg.vision.image_size
    ctx = cfg.text.max_position_embeddings
    # The fused MHA fast path has no ONNX export; the plain path is what exports.
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.no_grad():
        torch.onnx.export(
            model.visual,
            (torch.zeros(1, 3, size, size),),
            str(folder / "visual" / "model.onnx"),
            input_names=["image"],
            output_names=["embedding"],
            dynamic_axes=None
            if batch_of_one
            else {"image": {0: "batch"}, "embedding": {0: "batch"}},
            dynamo=False,
        )
        torch.onnx.export(
            Text(),
            (torch.zeros(1, ctx, dtype=torch.int32),),
            str(folder / "textual" / "model.onnx"),
            input_names=["text"],
            output_names=["embedding"],
            dynamic_axes=None
            if batch_of_one
            else {"text": {0: "batch"}, "embedding": {0: "batch"}},
            dynamo=False,
        )
    (folder / "config.json").write_text(json.dumps(model_cfg))
    preprocess = {
        "size": [size, size],
        "mode": "RGB",
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "fill_color": 0,
    }
    (folder / "visual" / "preprocess_cfg.json").write_text(json.dumps(preprocess))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(source / name, folder / "textual" / name)
    return folder
