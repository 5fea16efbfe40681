"""ClipTokenizer: ids equal transformers' CLIPTokenizer ("hf") and open_clip.tokenize
("open_clip") on a few hundred awkward strings, from tokenizer.json and from
vocab.json + merges.txt; batch shapes; errors."""

# Strings full of look-alike characters are the point of these tests.
# ruff: noqa: RUF001

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handspring.errors import TokenizerError
from handspring.preprocess import open_clip_text
from handspring.preprocess import text as text_module
from handspring.preprocess.clip_vocab import EOS_TOKEN, clip_vocab
from handspring.preprocess.text import ClipTokenizer, TokenBatch
from tests.support.clip_vocab import write_clip_tokenizer
from tests.support.text_corpus import HAND_WRITTEN, TEXTS, random_piece

BOS_ID, EOT_ID = 49406, 49407
CONTEXT = 77


# ---------------------------------------------------------------------------
# Fixtures: tokenizer folders


@pytest.fixture(scope="module")
def vocab_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """vocab.json + merges.txt only, from the packaged vocabulary: no transformers needed."""
    folder = tmp_path_factory.mktemp("clip_vocab")
    write_clip_tokenizer(folder, tokenizer_json=False)
    return folder


@pytest.fixture(scope="module")
def json_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tokenizer.json + configs only, as transformers writes them."""
    folder = tmp_path_factory.mktemp("clip_json")
    write_clip_tokenizer(folder, vocab_files=False)
    return folder


@pytest.fixture(params=["tokenizer.json", "vocab+merges"])
def reference_folder(request: pytest.FixtureRequest) -> Path:
    name = "json_folder" if request.param == "tokenizer.json" else "vocab_folder"
    return request.getfixturevalue(name)


def hf_reference(folder: Path, texts: list[str]) -> np.ndarray:
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(folder)
    out = tokenizer(texts, truncation=True, max_length=CONTEXT, padding=True, return_tensors="np")
    return out["input_ids"].astype(np.int64)


def open_clip_reference(texts: list[str]) -> np.ndarray:
    import open_clip

    return open_clip.tokenize(texts).numpy().astype(np.int64)


def first_mismatches(texts: list[str], ours: np.ndarray, ref: np.ndarray) -> list[Any]:
    rows = np.flatnonzero((ours != ref).any(axis=1))
    return [(texts[i], ours[i].tolist(), ref[i].tolist()) for i in rows[:3]]


# ---------------------------------------------------------------------------
# Parity with the references


@pytest.mark.reference
def test_vocab_equals_open_clip_encoder() -> None:
    from open_clip.tokenizer import SimpleTokenizer

    encoder = dict(SimpleTokenizer().encoder)
    encoder["<|startoftext|>"] = encoder.pop("<start_of_text>")
    encoder["<|endoftext|>"] = encoder.pop("<end_of_text>")
    assert clip_vocab() == encoder


@pytest.mark.reference
def test_hf_mode_equals_transformers(reference_folder: Path) -> None:
    ours = ClipTokenizer.from_folder(reference_folder, cleaning="hf").encode(TEXTS)
    ref = hf_reference(reference_folder, TEXTS)
    # Both pad with <|endoftext|> to the longest row, so whole arrays compare.
    assert ours.input_ids.shape == ref.shape
    assert first_mismatches(TEXTS, ours.input_ids, ref) == []


@pytest.mark.reference
def test_open_clip_mode_equals_open_clip(reference_folder: Path) -> None:
    ours = ClipTokenizer.from_folder(reference_folder, cleaning="open_clip").encode(TEXTS)
    ref = open_clip_reference(TEXTS)
    width = ours.input_ids.shape[1]
    # open_clip pads with 0 to 77; we pad with 0 to the longest row.
    assert not ref[:, width:].any()
    assert first_mismatches(TEXTS, ours.input_ids, ref[:, :width]) == []


@pytest.mark.reference
def test_modes_differ_where_references_differ(json_folder: Path) -> None:
    """The known differences are real: a mode equal to the wrong reference would fail here."""
    texts = ["don’t", "ＡＢＣ", "&amp;", "<|endoftext|>", "<end_of_text>", "ΟΔΟΣ", "'\u017f"]
    hf = ClipTokenizer.from_folder(json_folder, cleaning="hf").encode(texts)
    oc = ClipTokenizer.from_folder(json_folder, cleaning="open_clip").encode(texts)
    for i in range(len(texts)):
        assert (
            hf.input_ids[i, : hf.lengths[i]].tolist() != oc.input_ids[i, : oc.lengths[i]].tolist()
        )


@pytest.mark.reference
def test_from_tokenizer_json_equals_from_folder(json_folder: Path, vocab_folder: Path) -> None:
    by_path = ClipTokenizer.from_tokenizer_json(json_folder / "tokenizer.json").encode(TEXTS)
    by_vocab = ClipTokenizer.from_folder(vocab_folder).encode(TEXTS)
    np.testing.assert_array_equal(by_path.input_ids, by_vocab.input_ids)


# ---------------------------------------------------------------------------
# Special-token flags in the files, resolved the way transformers 5 resolves them


def _added(content: str, normalized: bool) -> dict[str, Any]:
    return {
        "content": content,
        "lstrip": False,
        "normalized": normalized,
        "rstrip": False,
        "single_word": False,
        "special": True,
    }


def _legacy(content: str) -> dict[str, Any]:
    """How transformers 4 serialized AddedTokens in tokenizer_config.json (the hub's CLIP)."""
    token = {"__type": "AddedToken", **_added(content, True)}
    del token["special"]
    return token


def _edit_json(path: Path, edit: Callable[[Any], None]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def _set_decoder(normalized: bool) -> Callable[[dict[str, Any]], None]:
    def edit(cfg: dict[str, Any]) -> None:
        cfg["added_tokens_decoder"] = {
            str(BOS_ID): _added("<|startoftext|>", normalized),
            str(EOT_ID): _added(EOS_TOKEN, normalized),
        }

    return edit


def _normalize_json_added(tokenizer_json: dict[str, Any]) -> None:
    for token in tokenizer_json["added_tokens"]:
        token["normalized"] = True


def _legacy_config(cfg: dict[str, Any]) -> None:
    cfg.clear()
    cfg.update(
        {
            "unk_token": _legacy(EOS_TOKEN),
            "bos_token": _legacy("<|startoftext|>"),
            "eos_token": _legacy(EOS_TOKEN),
            "pad_token": EOS_TOKEN,
            "do_lower_case": True,
            "model_max_length": CONTEXT,
            "tokenizer_class": "CLIPTokenizer",
        }
    )


def _pad_bang(cfg: dict[str, Any]) -> None:
    """LAION's converted open_clip checkpoints pad with "!" (id 0)."""
    cfg["pad_token"] = "!"


def _old_converter_pipeline(tokenizer_json: dict[str, Any]) -> None:
    """transformers 4's converter wrote the split regex without the special tokens."""
    pattern = tokenizer_json["pre_tokenizer"]["pretokenizers"][0]["pattern"]
    specials = r"<\|startoftext\|>|<\|endoftext\|>|"
    assert pattern["Regex"].startswith(specials)
    pattern["Regex"] = pattern["Regex"].removeprefix(specials)


# name -> (write tokenizer.json?, [(file, edit)])
VARIANTS: dict[str, tuple[bool, list[tuple[str, Callable[[Any], None]]]]] = {
    "config-decoder-normalized": (True, [("tokenizer_config.json", _set_decoder(True))]),
    "json-added-normalized": (True, [("tokenizer.json", _normalize_json_added)]),
    "decoder-beats-json": (
        True,
        [
            ("tokenizer.json", _normalize_json_added),
            ("tokenizer_config.json", _set_decoder(False)),
        ],
    ),
    "hub-like": (
        True,
        [("tokenizer.json", _normalize_json_added), ("tokenizer_config.json", _legacy_config)],
    ),
    "legacy-config-no-json": (False, [("tokenizer_config.json", _legacy_config)]),
    "pad-bang": (True, [("tokenizer_config.json", _pad_bang)]),
    "old-converter-regex": (True, [("tokenizer.json", _old_converter_pipeline)]),
}
SPECIAL_TEXTS = [
    "<|endoftext|>",
    "<|ENDOFTEXT|>",
    "x<|StartOfText|>y",
    "a <|endoftext|>b",
    "<|endoftext|>" * 3,
    "a photo of a cat",
    "",
]


def write_variant(folder: Path, name: str) -> Path:
    with_json, edits = VARIANTS[name]
    write_clip_tokenizer(folder, tokenizer_json=with_json)
    if not with_json:
        (folder / "tokenizer_config.json").write_text("{}", encoding="utf-8")
    for file, edit in edits:
        _edit_json(folder / file, edit)
    return folder


@pytest.mark.reference
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_special_token_flags_follow_transformers(tmp_path: Path, name: str) -> None:
    folder = write_variant(tmp_path, name)
    ours = ClipTokenizer.from_folder(folder).encode(SPECIAL_TEXTS)
    ref = hf_reference(folder, SPECIAL_TEXTS)
    assert first_mismatches(SPECIAL_TEXTS, ours.input_ids, ref) == []


# ---------------------------------------------------------------------------
# Batch layout (no reference needed)


@pytest.mark.parametrize("cleaning", ["hf", "open_clip"])
def test_batch_layout(vocab_folder: Path, cleaning: text_module.Cleaning) -> None:
    tokenizer = ClipTokenizer.from_folder(vocab_folder, cleaning=cleaning)
    batch = tokenizer.encode(TEXTS)
    ids, lengths = batch.input_ids, batch.lengths
    assert isinstance(batch, TokenBatch)
    assert ids.dtype == lengths.dtype == batch.eot_index.dtype == np.int64
    assert ids.shape == (len(TEXTS), lengths.max())
    assert lengths.max() == CONTEXT  # the corpus has over-long texts
    assert (lengths >= 2).all()
    rows = np.arange(len(TEXTS))
    assert (ids[:, 0] == BOS_ID).all()
    assert (ids[rows, lengths - 1] == EOT_ID).all()
    assert (batch.eot_index == [row.tolist().index(EOT_ID) for row in ids]).all()
    assert (batch.eot_index <= lengths - 1).all()
    beyond = np.arange(ids.shape[1])[None, :] >= lengths[:, None]
    assert (ids[beyond] == tokenizer.pad_id).all()


def test_pad_ids(vocab_folder: Path) -> None:
    assert ClipTokenizer.from_folder(vocab_folder).pad_id == EOT_ID
    assert ClipTokenizer.from_folder(vocab_folder, cleaning="open_clip").pad_id == 0


@pytest.mark.parametrize("cleaning", ["hf", "open_clip"])
def test_empty_and_whitespace_give_bos_eot(
    vocab_folder: Path, cleaning: text_module.Cleaning
) -> None:
    batch = ClipTokenizer.from_folder(vocab_folder, cleaning=cleaning).encode(["", "  \t\n "])
    assert batch.input_ids.tolist() == [[BOS_ID, EOT_ID]] * 2
    assert batch.eot_index.tolist() == [1, 1]
    assert batch.lengths.tolist() == [2, 2]


def test_width_is_longest_row_not_context(vocab_folder: Path) -> None:
    batch = ClipTokenizer.from_folder(vocab_folder).encode(["a photo of a cat", "cat"])
    assert batch.input_ids.shape == (2, 7)
    assert batch.lengths.tolist() == [7, 3]
    assert batch.eot_index.tolist() == [6, 2]


@pytest.mark.parametrize("cleaning", ["hf", "open_clip"])
@pytest.mark.parametrize("context_length", [2, 5, 16])
def test_truncation_keeps_eot_last(
    vocab_folder: Path, cleaning: text_module.Cleaning, context_length: int
) -> None:
    tokenizer = ClipTokenizer.from_folder(
        vocab_folder, context_length=context_length, cleaning=cleaning
    )
    full = ClipTokenizer.from_folder(vocab_folder, cleaning=cleaning)
    texts = ["x" * 500, "word " * 300, "a cat"]
    short, long = tokenizer.encode(texts), full.encode(texts)
    for row in range(len(texts)):
        n = int(short.lengths[row])
        assert n == min(context_length, int(long.lengths[row]))
        assert short.input_ids[row, n - 1] == EOT_ID
        assert short.input_ids[row, : n - 1].tolist() == long.input_ids[row, : n - 1].tolist()


def test_model_max_length_caps_context(tmp_path: Path, vocab_folder: Path) -> None:
    write_clip_tokenizer(tmp_path, tokenizer_json=False)
    (tmp_path / "tokenizer_config.json").write_text('{"model_max_length": 8}', encoding="utf-8")
    assert ClipTokenizer.from_folder(tmp_path).context_length == 8
    huge = '{"model_max_length": 1000000000000000019884624838656}'
    (tmp_path / "tokenizer_config.json").write_text(huge, encoding="utf-8")
    assert ClipTokenizer.from_folder(tmp_path).context_length == CONTEXT


def test_empty_batch(vocab_folder: Path) -> None:
    batch = ClipTokenizer.from_folder(vocab_folder).encode([])
    assert batch.input_ids.shape == (0, 0)
    assert batch.eot_index.shape == batch.lengths.shape == (0,)


def test_single_string_is_refused(vocab_folder: Path) -> None:
    with pytest.raises(TypeError):
        ClipTokenizer.from_folder(vocab_folder).encode("a photo of a cat")


def test_open_clip_specials_in_text(vocab_folder: Path) -> None:
    """open_clip's own special names become special ids where its regex starts a piece."""
    tokenizer = ClipTokenizer.from_folder(vocab_folder, cleaning="open_clip")
    batch = tokenizer.encode(["a<END_OF_TEXT>b", "!<end_of_text>"])
    assert batch.input_ids[0, :4].tolist() == [BOS_ID, 320, EOT_ID, 321]
    assert batch.eot_index.tolist() == [2, batch.lengths[1] - 1]


# ---------------------------------------------------------------------------
# Without ftfy / regex (not dependencies of ours)


@pytest.fixture
def without_optional_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real = open_clip_text._optional_module
    monkeypatch.setattr(
        open_clip_text,
        "_optional_module",
        lambda name: None if name in ("ftfy", "regex") else real(name),
    )
    open_clip_text.open_clip_cleaner.cache_clear()
    open_clip_text.open_clip_splitter.cache_clear()
    yield
    open_clip_text.open_clip_cleaner.cache_clear()
    open_clip_text.open_clip_splitter.cache_clear()


def test_fallback_splitter_equals_regex_module(without_optional_modules: None) -> None:
    regex = pytest.importorskip("regex")
    exact = regex.compile(open_clip_text.OPEN_CLIP_SPLIT, regex.IGNORECASE).findall
    fallback = open_clip_text.open_clip_splitter()
    rng = random.Random(7)
    # Known gaps of the fallback: a lone U+0345, and letters newer than Unicode 14
    # (Oniguruma's tables are older than the regex module's).
    pieces = [random_piece(rng) for _ in range(4000)]
    pieces = [p for p in pieces if all(_in_unicode_14(c) for c in p)]
    texts = [t for t in HAND_WRITTEN if all(_in_unicode_14(c) for c in t)]
    texts += [" ".join(pieces[i : i + 20]) for i in range(0, len(pieces), 20)]
    texts = [t.lower() for t in texts]
    assert len(texts) > 200
    assert [fallback(t) for t in texts] == [exact(t) for t in texts]


def _in_unicode_14(char: str) -> bool:
    import unicodedata

    return unicodedata.category(char) != "Cn" and char != "\u0345"


def test_fallback_cleaner(without_optional_modules: None) -> None:
    clean = open_clip_text.open_clip_cleaner()
    assert clean("  Fish &amp;amp; CHIPS\t\n e\u0301 ") == "fish & chips \u00e9"


# ---------------------------------------------------------------------------
# Errors


def test_missing_files_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError) as err:
        ClipTokenizer.from_folder(tmp_path)
    assert str(tmp_path) in str(err.value)
    assert "tokenizer.json" in str(err.value) and "vocab.json" in str(err.value)


def test_missing_folder_named(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match=r"tokenizer\.json") as err:
        ClipTokenizer.from_folder(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)


def test_missing_merges_named(tmp_path: Path, vocab_folder: Path) -> None:
    (tmp_path / "vocab.json").write_bytes((vocab_folder / "vocab.json").read_bytes())
    with pytest.raises(TokenizerError, match=r"merges\.txt") as err:
        ClipTokenizer.from_folder(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_missing_tokenizer_json_path(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match=r"tokenizer\.json") as err:
        ClipTokenizer.from_tokenizer_json(tmp_path / "textual" / "tokenizer.json")
    assert str(tmp_path / "textual") in str(err.value)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("tokenizer.json", "{not json"),
        ("tokenizer.json", '{"model": {"type": "WordPiece", "vocab": {"a": 0}}}'),
        ("tokenizer_config.json", "[1, 2]"),
    ],
)
def test_unusable_files_named(tmp_path: Path, vocab_folder: Path, name: str, content: str) -> None:
    for file in ("vocab.json", "merges.txt"):
        (tmp_path / file).write_bytes((vocab_folder / file).read_bytes())
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(TokenizerError, match=name.replace(".", r"\.")) as err:
        ClipTokenizer.from_folder(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_corrupt_vocab_named(tmp_path: Path) -> None:
    (tmp_path / "vocab.json").write_text("[]", encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"vocab\.json") as err:
        ClipTokenizer.from_folder(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_special_token_missing_from_vocab(tmp_path: Path) -> None:
    (tmp_path / "vocab.json").write_text('{"a": 0, "a</w>": 1}', encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="not in the vocabulary") as err:
        ClipTokenizer.from_folder(tmp_path)
    assert str(tmp_path) in str(err.value)
