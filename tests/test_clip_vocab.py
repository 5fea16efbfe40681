"""The packaged CLIP vocabulary and `ClipTokenizer.from_clip_vocab`: the shipped merges
file is byte-for-byte open_clip's and ImageBind's, and the ids (full 77-wide rows) and
end-of-text positions equal ImageBind's `SimpleTokenizer` and `open_clip.tokenize` on
the tokenizer test corpus."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handspring.preprocess.clip_vocab import (
    BOS_TOKEN,
    EOS_TOKEN,
    VOCAB_SIZE,
    clip_bpe_file,
    clip_merges,
    clip_vocab,
)
from handspring.preprocess.text import ClipTokenizer, TokenBatch
from tests.support import samples
from tests.support.clip_vocab import write_clip_tokenizer
from tests.support.text_corpus import TEXTS as CORPUS

TEXTS = CORPUS + samples.TEXTS
CONTEXT = 77
EOT_ID = 49407


def reference_file(package: str, relative: str) -> Path:
    """A file in a reference package, found without importing it (that imports torch)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def imagebind_bpe_file() -> Path:
    from tests.support.imagebind_reference import imagebind_package_folder

    return imagebind_package_folder() / "bpe" / "bpe_simple_vocab_16e6.txt.gz"


@pytest.fixture(scope="module")
def imagebind_tokenizer() -> Any:
    """ImageBind's own `SimpleTokenizer` on the merges file its package ships.

    The package's `__init__` imports pytorchvideo (not installable); a bare package
    module registered first lets the submodule import on its own.
    """
    from tests.support.imagebind_reference import register_bare_package

    bpe = imagebind_bpe_file()
    register_bare_package()
    module = importlib.import_module("imagebind.models.multimodal_preprocessors")
    return module.SimpleTokenizer(bpe_path=str(bpe), context_length=CONTEXT)


def padded(batch: TokenBatch, width: int) -> np.ndarray:
    """Our rows are as wide as the longest; the references always give `width` zero-padded."""
    out = np.zeros((len(batch.input_ids), width), dtype=np.int64)
    out[:, : batch.input_ids.shape[1]] = batch.input_ids
    return out


def first_mismatches(ours: np.ndarray, ref: np.ndarray) -> list[Any]:
    rows = np.flatnonzero((ours != ref).any(axis=1))
    return [(TEXTS[i], ours[i].tolist(), ref[i].tolist()) for i in rows[:3]]


# ---------------------------------------------------------------------------
# The file and the vocabulary


@pytest.mark.reference
@pytest.mark.parametrize(
    ("package", "relative"),
    [
        ("open_clip", "bpe_simple_vocab_16e6.txt.gz"),
        ("imagebind", "bpe/bpe_simple_vocab_16e6.txt.gz"),
    ],
)
def test_packaged_bpe_file_is_the_references(package: str, relative: str) -> None:
    assert clip_bpe_file().read_bytes() == reference_file(package, relative).read_bytes()


@pytest.mark.reference
def test_vocab_and_merges_equal_imagebind(imagebind_tokenizer: Any) -> None:
    assert clip_vocab() == imagebind_tokenizer.encoder
    assert dict(zip(clip_merges(), range(len(clip_merges())), strict=True)) == (
        imagebind_tokenizer.bpe_ranks
    )


def test_vocab_shape() -> None:
    vocab = clip_vocab()
    assert len(vocab) == VOCAB_SIZE
    assert (vocab[BOS_TOKEN], vocab[EOS_TOKEN]) == (49406, EOT_ID)
    assert sorted(vocab.values()) == list(range(VOCAB_SIZE))


# ---------------------------------------------------------------------------
# Parity with the references


@pytest.mark.reference
@pytest.mark.parametrize("context_length", [CONTEXT, 16])
def test_imagebind_mode_equals_imagebind(imagebind_tokenizer: Any, context_length: int) -> None:
    import torch

    ours = ClipTokenizer.from_clip_vocab(
        context_length=context_length, cleaning="imagebind"
    ).encode(TEXTS)
    ref = imagebind_tokenizer(TEXTS, context_length=context_length)
    assert first_mismatches(padded(ours, context_length), ref.numpy()) == []
    # ImageBind's text preprocessor hands `text.argmax(dim=-1)` to its head as the
    # position to read: the first 49407, which the text itself may contain.
    np.testing.assert_array_equal(ours.eot_index, torch.argmax(ref, dim=-1).numpy())
    n_tokens = np.array([len(imagebind_tokenizer.encode(t)) + 2 for t in TEXTS])
    np.testing.assert_array_equal(ours.truncated, n_tokens > context_length)
    np.testing.assert_array_equal(ours.lengths, np.minimum(n_tokens, context_length))
    # The corpus reaches the cases that matter: cut rows, and an eot inside the text.
    assert ours.truncated.any()
    assert (ours.eot_index < ours.lengths - 1).any()
    assert (ours.eot_index[ours.truncated] < context_length - 1).any()


@pytest.mark.reference
def test_open_clip_mode_equals_open_clip() -> None:
    import open_clip

    ours = ClipTokenizer.from_clip_vocab(cleaning="open_clip").encode(TEXTS)
    ref = open_clip.tokenize(TEXTS, context_length=CONTEXT).numpy()
    assert first_mismatches(padded(ours, CONTEXT), ref) == []
    np.testing.assert_array_equal(ours.eot_index, ref.argmax(axis=1))
    assert ours.truncated.any()
    assert (ours.eot_index < ours.lengths - 1).any()


def test_hf_mode_equals_vocab_files(tmp_path: Path) -> None:
    write_clip_tokenizer(tmp_path, tokenizer_json=False)
    ours = ClipTokenizer.from_clip_vocab(cleaning="hf").encode(TEXTS)
    files = ClipTokenizer.from_folder(tmp_path, cleaning="hf").encode(TEXTS)
    np.testing.assert_array_equal(ours.input_ids, files.input_ids)


def test_modes_and_context() -> None:
    imagebind = ClipTokenizer.from_clip_vocab(context_length=8, cleaning="imagebind")
    assert (imagebind.context_length, imagebind.pad_id, imagebind.eot_id) == (8, 0, EOT_ID)
    assert ClipTokenizer.from_clip_vocab(cleaning="hf").pad_id == EOT_ID
    batch = imagebind.encode(["a <|endoftext|> b", "a <end_of_text> b"])
    assert batch.eot_index.tolist() == [2, batch.lengths[1] - 1]


def test_unknown_cleaning_refused() -> None:
    with pytest.raises(ValueError, match="cleaning"):
        ClipTokenizer.from_clip_vocab(cleaning="clip")  # type: ignore[arg-type]
