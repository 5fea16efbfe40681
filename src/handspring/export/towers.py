"""What exporting one loaded tower means: how its graph changes, its preprocessing as
data, how it pools, and the files that go beside it (tokenizer, mel filterbank)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from handspring.export.audio_recipe import MEL_BANKS_FILE, array_recipe, audio_recipe
from handspring.export.errors import ExportError
from handspring.export.graphs import GraphPlan
from handspring.export.image_recipe import image_recipe
from handspring.export.tokenizer_files import exported_tokenizer
from handspring.preprocess.audio import CLIPS_PER_ITEM
from handspring.towers.arrays import ArrayTower
from handspring.towers.audio import AudioTower
from handspring.towers.base import Tower
from handspring.towers.image import ImageTower
from handspring.towers.naflex_image import NaflexImageTower
from handspring.towers.sentence_text import SentenceTextTower
from handspring.towers.siglip_text import SiglipTextTower
from handspring.towers.text import ClipTextTower

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_SOURCE_DIR = "tokenizer_source"

# Which field of a `tokenizers` Encoding each text graph input takes.
ENCODING_FIELDS = {
    "input_ids": "ids",
    "text": "ids",  # pre-exported (Immich) text graphs
    "attention_mask": "attention_mask",
    "token_type_ids": "type_ids",
    # Without a prompt; with one, its tokens are set to 0 (preprocess.json `pooling_mask`).
    "pooling_mask": "attention_mask",
}

_IMAGE_POOLING = {
    "clip": "class token, post-LayerNorm, projection",
    "siglip": "attention-pooling (MAP) head",
    "imagebind": "class token, head, postprocessor (L2 normalisation, fixed scale)",
}


@dataclass
class TowerExport:
    plan: GraphPlan
    preprocess: dict[str, Any]
    pooling: str
    files: dict[str, bytes] = field(default_factory=dict)  # relative path -> content


def plan_tower(modality: str, tower: Tower, family: str, dim: int) -> TowerExport:
    inputs = [i.name for i in tower.session.get_inputs()]
    plan = GraphPlan(dim, normalize=tower.default_normalize)
    if isinstance(tower, NaflexImageTower):
        raise ExportError(
            "image",
            "SigLIP 2 NaFlex images cannot be exported yet: each image's position grid is "
            "resized outside the graph; export --modalities text",
        )
    if isinstance(tower, ImageTower):
        pooling = _IMAGE_POOLING.get(family, "as the graph computes it")
        return TowerExport(plan, image_recipe(tower, inputs[0]), pooling)
    if isinstance(tower, AudioTower):
        recipe, banks = audio_recipe(inputs[0])
        pooling = (
            f"per clip: class token, head, postprocessor; then the mean of the "
            f"{CLIPS_PER_ITEM} clips' vectors"
        )
        return TowerExport(
            replace(plan, clips=CLIPS_PER_ITEM), recipe, pooling, {MEL_BANKS_FILE: banks}
        )
    if isinstance(tower, ArrayTower):
        shape: list[int | str] = ["batch", *tower.shape]
        pooling = "class token, head, postprocessor (L2 normalisation, fixed scale)"
        return TowerExport(plan, array_recipe(inputs[0], shape), pooling)
    if modality == "text":
        return _text_tower(tower, plan, [i for i in inputs if i != "eot_index"])
    raise ExportError(modality, f"no export for {type(tower).__name__} towers")


def _text_tower(tower: Tower, plan: GraphPlan, inputs: list[str]) -> TowerExport:
    exported = exported_tokenizer(tower)
    files = {TOKENIZER_FILE: exported.tokenizer.to_str(pretty=True).encode("utf-8")}
    files |= {f"{TOKENIZER_SOURCE_DIR}/{n}": data for n, data in exported.source_files.items()}
    preprocess = exported.description()
    preprocess["feeds"] = {name: ENCODING_FIELDS.get(name, name) for name in inputs}
    if isinstance(tower, ClipTextTower):
        pooling = "the first end-of-text token (eot_id), final LayerNorm, projection"
        if not tower.fixed_length:  # our own graphs; pre-exported ones find it themselves
            plan = replace(plan, eot_id=exported.eot_id)
    elif isinstance(tower, SiglipTextTower):
        pooling = "the last position of the padded row, head"
    elif isinstance(tower, SentenceTextTower):
        spec = tower.spec
        pooling = " + ".join(spec.pooling.modes) + " over the tokens"
        pooling += "".join(f", Dense {d.in_features}->{d.out_features}" for d in spec.dense)
        preprocess["prompts"] = dict(spec.prompts) or None
        preprocess["default_prompt_name"] = spec.default_prompt_name
        preprocess["prompt_in_pooling"] = spec.pooling.include_prompt
        if not spec.pooling.include_prompt:
            preprocess["pooling_mask"] = (
                "attention_mask with its first n entries set to 0, n being the prompt's "
                "tokens (the prompt tokenized alone, without a trailing special token)"
            )
    else:
        pooling = "as the graph computes it"
    return TowerExport(plan, preprocess, pooling, files)
