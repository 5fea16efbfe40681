"""An Immich-layout M-CLIP folder (tests only), exported as Immich's exporter does: the
MultilingualCLIP text encoder traced by torch.onnx with `input_ids` and `attention_mask`,
int32 [1, 77] (no dynamic axes: one text per run), unit vectors out; the encoder's own
tokenizer files in `textual/`; a CLIP image tower of the same width in `visual/`; and the
open_clip config of that CLIP, whose context length (77) Immich pads the texts to.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.support.checkpoints import TINY
from tests.support.immich import write_immich
from tests.support.mclip_checkpoints import MclipCheckpoint, write_mclip

CONTEXT = 77


def write_immich_mclip(folder: Path, base: str = "xlm-roberta", seed: int = 0) -> Path:
    source = write_mclip(
        folder.parent / f"{folder.name}_mclip",
        base,
        "safetensors",
        seed,
        image_dim=TINY.projection_dim,
    )
    write_immich(folder, seed=seed, batch_of_one=True)
    shutil.rmtree(folder / "textual")
    (folder / "textual").mkdir()
    _export_text(source, folder / "textual" / "model.onnx")
    source.tokenizer.save_pretrained(folder / "textual")
    config = json.loads((folder / "config.json").read_text())
    config["text_cfg"]["context_length"] = CONTEXT
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _export_text(source: MclipCheckpoint, path: Path) -> None:
    import torch

    model = source.model

    class Text(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.model.transformer(input_ids, attention_mask)[0]  # [1, T, W]
            mask = attention_mask.unsqueeze(2)  # [1, T, 1]
            pooled = (hidden * mask).sum(dim=1) / attention_mask.sum(dim=1)[:, None]
            projected = self.model.LinearTransformation(pooled)
            return torch.nn.functional.normalize(projected, dim=-1)

    ones = torch.ones(1, CONTEXT, dtype=torch.int32)
    with torch.no_grad():
        torch.onnx.export(
            Text().eval(),
            (ones, ones),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamo=False,
        )
