"""Checkpoint resolution and the errors bad checkpoints give (no torch needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from handspring.errors import CheckpointError
from handspring.weights.checkpoint import load_clip_checkpoint
from handspring.weights.safetensors_io import TensorSource
from tests.support.checkpoints import TINY, bf16_round, random_clip_weights, write_bf16_safetensors
from tests.support.hub_cache import hub_repo


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_layouts_are_detected(tiny_hf: Path, tiny_st: Path, tiny_open_clip: Path) -> None:
    assert load_clip_checkpoint(tiny_hf, ["image", "text"]).layout == "transformers"
    st = load_clip_checkpoint(tiny_st, ["image"])
    assert st.layout == "sentence-transformers"
    assert st.folder.name == "0_CLIPModel"
    oc = load_clip_checkpoint(tiny_open_clip, ["text"])
    assert oc.layout == "open_clip"
    assert oc.text_cleaning == "open_clip"


def test_open_clip_names_map_onto_transformers_names(tiny_open_clip: Path) -> None:
    checkpoint = load_clip_checkpoint(tiny_open_clip, ["image", "text"])
    expected = random_clip_weights(TINY, seed=1)  # the weights write_open_clip drew
    assert checkpoint.tensors is not None
    for key in (
        "text_model.encoder.layers.1.self_attn.k_proj.weight",
        "visual_projection.weight",
        "vision_model.encoder.layers.0.self_attn.v_proj.bias",
        "text_projection.weight",
    ):
        np.testing.assert_array_equal(checkpoint.tensors[key], expected[key])


def test_bf16_is_widened_exactly(tmp_path: Path) -> None:
    weights = {"a": np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32)}
    write_bf16_safetensors(weights, tmp_path / "w.safetensors")
    got = TensorSource.open([tmp_path / "w.safetensors"])["a"]
    np.testing.assert_array_equal(got, bf16_round(weights["a"]))


def test_missing_folder_and_bad_repo_id() -> None:
    with pytest.raises(CheckpointError, match="not a Hugging Face repo id"):
        load_clip_checkpoint("/no/such/folder/anywhere", ["image"])


def test_repo_not_in_offline_cache() -> None:
    with pytest.raises(CheckpointError, match="not in the Hugging Face cache"):
        load_clip_checkpoint("nobody/no-such-model", ["image"])


def test_repo_id_resolves_through_hub_cache(tiny_hf: Path) -> None:
    """A repo laid out as huggingface_hub lays out its cache loads offline."""
    repo, snapshot = hub_repo("acme/tiny-clip")
    shutil.copytree(tiny_hf, snapshot)
    try:
        checkpoint = load_clip_checkpoint("acme/tiny-clip", ["image"])
        assert checkpoint.folder == snapshot
        assert checkpoint.layout == "transformers"
    finally:
        shutil.rmtree(repo)


def test_unknown_architecture(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="unknown architecture: model_type 'llama'"):
        load_clip_checkpoint(tmp_path, ["image"])


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no CLIP checkpoint found"):
        load_clip_checkpoint(tmp_path, ["image"])


def test_corrupt_config(tiny_hf: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_hf, tmp_path / "m")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        load_clip_checkpoint(folder, ["image"])


def test_missing_weights_and_pickle_hint(tiny_hf: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_hf, tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no model\.safetensors"):
        load_clip_checkpoint(folder, ["image"])
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(
        CheckpointError, match=r"pytorch_model\.bin: PyTorch pickle weights are not read.*convert"
    ):
        load_clip_checkpoint(folder, ["image"])


def test_corrupt_safetensors(tiny_hf: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_hf, tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors: not a readable safetensors file"
    ):
        load_clip_checkpoint(folder, ["image"])


def test_truncated_safetensors(tiny_hf: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_hf, tmp_path / "m")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_clip_checkpoint(folder, ["image"])


def _rewrite(folder: Path, edit) -> None:  # type: ignore[no-untyped-def]
    weights = load_file(folder / "model.safetensors")
    edit(weights)
    save_file(weights, str(folder / "model.safetensors"))


def test_shape_mismatch_names_the_key(tiny_hf: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_hf, tmp_path / "m")
    key = "vision_model.encoder.layers.1.mlp.fc1.weight"
    _rewrite(folder, lambda w: w.__setitem__(key, np.zeros((3, 3), np.float32)))
    with pytest.raises(
        CheckpointError, match=rf"\[{key}\]: shape \(3, 3\), but the config implies \(128, 64\)"
    ):
        load_clip_checkpoint(folder, ["image"])


def test_missing_key_is_named(tiny_hf: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_hf, tmp_path / "m")
    key = "text_model.final_layer_norm.bias"
    _rewrite(folder, lambda w: w.pop(key))
    with pytest.raises(CheckpointError, match=rf"\[{key}\]: 1 of \d+ text tensors missing"):
        load_clip_checkpoint(folder, ["text"])
    # The image tower does not need that key, and loads.
    assert load_clip_checkpoint(folder, ["image"]).layout == "transformers"


def test_config_with_fewer_layers_than_weights(tiny_hf: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_hf, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["vision_config"]["num_hidden_layers"] = 1
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError,
        match=r"vision_model\.encoder\.layers\.1\..*tensors the config does not account for",
    ):
        load_clip_checkpoint(folder, ["image"])


def test_open_clip_unsupported_option(tiny_open_clip: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_open_clip, tmp_path / "m")
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["model_cfg"]["vision_cfg"]["attentional_pool"] = True
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="attentional_pool"):
        load_clip_checkpoint(folder, ["image"])


def test_immich_repo_id_fetches_only_the_asked_tower(tmp_path: Path) -> None:
    """Through the hub cache, an Immich repo is recognised from its small files,
    and a text-only load needs no visual graph."""
    repo, snapshot = hub_repo("acme/immich-clip")
    (snapshot / "visual").mkdir(parents=True)
    (snapshot / "textual").mkdir(parents=True)
    (snapshot / "config.json").write_text(
        json.dumps({"embed_dim": 40, "text_cfg": {"context_length": 77}})
    )
    (snapshot / "visual" / "preprocess_cfg.json").write_text(json.dumps({"size": [32, 32]}))
    (snapshot / "textual" / "model.onnx").write_bytes(b"not read by this test")
    (snapshot / "textual" / "tokenizer.json").write_text("{}")
    try:
        checkpoint = load_clip_checkpoint("acme/immich-clip", ["text"])
        assert checkpoint.layout == "immich"
        assert set(checkpoint.onnx_files) == {"text"}
        with pytest.raises(
            CheckpointError, match=r"visual/model\.onnx: file not found \(image tower"
        ):
            load_clip_checkpoint("acme/immich-clip", ["image"])
    finally:
        shutil.rmtree(repo)
