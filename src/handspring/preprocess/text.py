"""CLIP text tokenizer whose ids equal one of two references, chosen by `cleaning`.

- "hf": transformers' `CLIPTokenizer` (transformers 5, tokenizers-backed) loaded from
  the same files. Transformers 5 rebuilds the CLIP pipeline from code and takes only
  vocab, merges and special tokens from the files; so do we.
- "open_clip": `open_clip.tokenize`. Its Python-side cleaning (ftfy, HTML unescaping,
  whitespace, `str.lower`) and its own split regex run here in Python; only byte-level
  BPE runs in `tokenizers`.

Differences between the two references, and where each mode handles them:

- ftfy (open_clip only) straightens curly quotes ("don" U+2019 "t" becomes "don't", a
  contraction), folds fullwidth forms (U+FF21 -> "a"), expands ligatures, drops
  control characters, reads C1 controls as Windows-1252 (U+0085 -> U+2026) and
  repairs mojibake. HF keeps all of these as they are.
- open_clip unescapes HTML twice ("&amp;lt;" -> "<"); HF keeps entities as text.
- Literal special tokens: HF matches "<|startoftext|>"/"<|endoftext|>" in the text
  (after lowercasing when the added token is `normalized`) and gives their ids.
  open_clip treats those as plain text, but its own names "<start_of_text>" and
  "<end_of_text>" (any case) become the special ids when its regex reaches them at
  the start of a piece ("a<end_of_text>" does, "!<end_of_text>" does not).
- Case: open_clip uses Python's `str.lower`, which turns a word-final capital sigma
  into final sigma U+03C2; `tokenizers` lowercases one character at a time (U+03C3).
- Whitespace: open_clip collapses what Python's `str.split` calls whitespace, HF what
  Oniguruma's whitespace class holds; they disagree on U+001C..U+001F.
- Regex: open_clip's pattern is case-insensitive, so "'" + U+017F (long s) is a
  contraction and a lone U+0345 is dropped. Its `regex` module also has newer Unicode
  tables than the Oniguruma inside `tokenizers`: about 17,500 recent code points are
  letters or digits to one and not to the other.
- Padding: open_clip pads with 0, HF with its pad token (CLIP: "<|endoftext|>").
"""

from __future__ import annotations

import html
import importlib
import json
import logging
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tokenizers import (
    AddedToken,
    Encoding,
    Regex,
    Tokenizer,
    normalizers,
    pre_tokenizers,
    processors,
)
from tokenizers.models import BPE

from handspring.errors import TokenizerError

log = logging.getLogger(__name__)

Cleaning = Literal["hf", "open_clip"]

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
VOCAB_JSON = "vocab.json"
MERGES_TXT = "merges.txt"

# transformers 5 CLIPTokenizer, verbatim: the special-token alternatives are part of
# the split regex whatever the configured special tokens are.
HF_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
HF_DEFAULTS = {
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
}
# Order in which transformers adds named special tokens; for duplicates the last wins.
HF_NAMED_TOKENS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)

# open_clip's SimpleTokenizer names its special tokens differently from HF.
OPEN_CLIP_BOS = "<start_of_text>"
OPEN_CLIP_EOS = "<end_of_text>"
OPEN_CLIP_SPLIT = (
    f"{OPEN_CLIP_BOS}|{OPEN_CLIP_EOS}"
    r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)
OPEN_CLIP_PAD_ID = 0
# A one-character piece always becomes exactly one BPE token, so it can hold the
# place of a special token through truncation and be swapped for its id afterwards.
PLACEHOLDER_PIECE = "a"

# transformers' "no limit" sentinel is 1e30; anything this large is not a real limit.
NO_LIMIT = 1_000_000


@dataclass(frozen=True)
class TokenBatch:
    """Token ids of a batch, padded to its longest row (never to the context length)."""

    input_ids: np.ndarray  # int64 [B, T]
    eot_index: np.ndarray  # int64 [B], first end-of-text token: where the text tower reads
    lengths: np.ndarray  # int64 [B], tokens per row including start and end tokens


@dataclass(frozen=True)
class _Config:
    """What tokenizer_config.json and special_tokens_map.json say (empty when absent)."""

    config: dict[str, Any]
    special_map: dict[str, Any]

    def model_max_length(self) -> int | None:
        value = self.config.get("model_max_length")
        if isinstance(value, int | float) and 0 < value < NO_LIMIT:
            return int(value)
        return None


class ClipTokenizer:
    """CLIP byte-level BPE tokenizer; ids equal transformers' or open_clip's (see module doc)."""

    context_length: int
    pad_id: int
    bos_id: int
    eot_id: int

    def __init__(
        self,
        backend: Tokenizer,
        *,
        context_length: int,
        pad_id: int,
        bos_id: int,
        eot_id: int,
        cleaning: Cleaning,
    ) -> None:
        if context_length < 2:
            raise ValueError(
                f"context_length must leave room for start and end tokens, got {context_length}"
            )
        self.context_length = context_length
        self.pad_id = pad_id
        self.bos_id = bos_id
        self.eot_id = eot_id
        self.cleaning = cleaning
        self._backend = backend
        backend.enable_truncation(max_length=context_length)
        backend.enable_padding(pad_id=pad_id)
        if cleaning == "open_clip":
            self._clean = open_clip_cleaner()
            self._split = open_clip_splitter()

    @classmethod
    def from_folder(
        cls, folder: str | Path, *, context_length: int = 77, cleaning: Cleaning = "hf"
    ) -> ClipTokenizer:
        """tokenizer.json if present, else vocab.json + merges.txt, plus the config files."""
        folder = Path(folder)
        if not folder.is_dir():
            raise TokenizerError(f"{folder}: no such folder (looked for {TOKENIZER_JSON})")
        if (folder / TOKENIZER_JSON).is_file():
            return cls.from_tokenizer_json(
                folder / TOKENIZER_JSON, context_length=context_length, cleaning=cleaning
            )
        missing = [name for name in (VOCAB_JSON, MERGES_TXT) if not (folder / name).is_file()]
        if missing:
            raise TokenizerError(
                f"{folder}: no {TOKENIZER_JSON} and no {' or '.join(missing)}: "
                f"a CLIP tokenizer needs {TOKENIZER_JSON}, or {VOCAB_JSON} with {MERGES_TXT}"
            )
        model = _bpe_from_vocab_files(folder)
        return cls._build(model, {}, _read_config(folder), folder, context_length, cleaning)

    @classmethod
    def from_tokenizer_json(
        cls, path: str | Path, *, context_length: int = 77, cleaning: Cleaning = "hf"
    ) -> ClipTokenizer:
        """A tokenizer.json (e.g. Immich's textual/tokenizer.json); config files beside it are read too."""
        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"{path.parent}: {path.name} not found")
        model, added = _bpe_from_tokenizer_json(path)
        return cls._build(
            model, added, _read_config(path.parent), path.parent, context_length, cleaning
        )

    @classmethod
    def _build(
        cls,
        model: BPE,
        json_added: dict[int, AddedToken],
        config: _Config,
        folder: Path,
        context_length: int,
        cleaning: Cleaning,
    ) -> ClipTokenizer:
        if cleaning not in ("hf", "open_clip"):
            raise ValueError(f"cleaning must be 'hf' or 'open_clip', got {cleaning!r}")
        named = _named_tokens(config, json_added)
        _set_clip_bpe_options(model, str(named["unk_token"]))
        backend = Tokenizer(model)
        bos, eos = str(named["bos_token"]), str(named["eos_token"])
        bos_id, eot_id = _token_id(backend, bos, folder), _token_id(backend, eos, folder)
        if cleaning == "hf":
            pad_id = _token_id(backend, str(named["pad_token"]), folder)
            _hf_pipeline(backend, named, json_added, config)
        else:
            pad_id = OPEN_CLIP_PAD_ID
            _open_clip_pipeline(backend)
        backend.post_processor = processors.RobertaProcessing(
            (eos, eot_id), (bos, bos_id), trim_offsets=False, add_prefix_space=False
        )
        # The tokenizer's own limit wins when smaller: the checkpoint was made for it.
        limit = config.model_max_length()
        if limit is not None:
            context_length = min(context_length, limit)
        return cls(
            backend,
            context_length=context_length,
            pad_id=pad_id,
            bos_id=bos_id,
            eot_id=eot_id,
            cleaning=cleaning,
        )

    def encode(self, texts: Sequence[str]) -> TokenBatch:
        """Token ids of each text: [bos, ..., eot], cut to context_length keeping eot last."""
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts; wrap a single text in a list")
        if len(texts) == 0:
            nothing = np.zeros((0,), dtype=np.int64)
            return TokenBatch(np.zeros((0, 0), dtype=np.int64), nothing, nothing.copy())
        if self.cleaning == "hf":
            encodings = self._backend.encode_batch(list(texts))
            input_ids = _ids_array(encodings)
        else:
            encodings, input_ids = self._encode_open_clip(texts)
        lengths = np.asarray([e.attention_mask for e in encodings], dtype=np.int64).sum(axis=1)
        eot_index = np.argmax(input_ids == self.eot_id, axis=1).astype(np.int64)
        return TokenBatch(input_ids=input_ids, eot_index=eot_index, lengths=lengths)

    def _encode_open_clip(self, texts: Sequence[str]) -> tuple[list[Encoding], np.ndarray]:
        pieces = [self._split(self._clean(text)) for text in texts]
        specials = {OPEN_CLIP_BOS: self.bos_id, OPEN_CLIP_EOS: self.eot_id}
        swaps = _swap_special_pieces(pieces, specials)
        encodings = self._backend.encode_batch(pieces, is_pretokenized=True)
        input_ids = _ids_array(encodings)
        for row, word, token_id in swaps:
            word_ids = encodings[row].word_ids
            if word in word_ids:  # else truncated away
                input_ids[row, word_ids.index(word)] = token_id
        return encodings, input_ids


def _ids_array(encodings: list[Encoding]) -> np.ndarray:
    return np.asarray([e.ids for e in encodings], dtype=np.int64)


def _swap_special_pieces(
    pieces: list[list[str]], specials: dict[str, int]
) -> list[tuple[int, int, int]]:
    """Replace special pieces by a one-token placeholder; return (row, word, id) to put back."""
    swaps = []
    for row, words in enumerate(pieces):
        for word, piece in enumerate(words):
            if piece in specials:
                words[word] = PLACEHOLDER_PIECE
                swaps.append((row, word, specials[piece]))
    return swaps


# ---------------------------------------------------------------------------
# Files


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{path.parent}: {path.name} is not readable JSON ({e})") from e


def _read_config(folder: Path) -> _Config:
    parts = []
    for name in (TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP):
        path = folder / name
        data = _read_json(path) if path.is_file() else {}
        if not isinstance(data, dict):
            raise TokenizerError(f"{folder}: {name} is not a JSON object")
        parts.append(data)
    return _Config(config=parts[0], special_map=parts[1])


def _bpe_from_vocab_files(folder: Path) -> BPE:
    try:
        return BPE.from_file(str(folder / VOCAB_JSON), str(folder / MERGES_TXT))
    except Exception as e:  # tokenizers raises bare Exception for bad files
        raise TokenizerError(f"{folder}: {VOCAB_JSON} / {MERGES_TXT} unusable ({e})") from e


def _bpe_from_tokenizer_json(path: Path) -> tuple[BPE, dict[int, AddedToken]]:
    try:
        loaded = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises bare Exception for bad files
        raise TokenizerError(f"{path.parent}: {path.name} unusable ({e})") from e
    if not isinstance(loaded.model, BPE):
        kind = type(loaded.model).__name__
        raise TokenizerError(f"{path.parent}: {path.name} holds a {kind} model, CLIP needs BPE")
    return loaded.model, loaded.get_added_tokens_decoder()


def _set_clip_bpe_options(model: BPE, unk_token: str) -> None:
    """transformers 5 keeps only vocab and merges from the files and sets these itself."""
    model.dropout = None
    model.continuing_subword_prefix = ""
    model.end_of_word_suffix = "</w>"
    model.fuse_unk = False
    model.byte_fallback = False
    model.ignore_merges = False
    model.unk_token = unk_token


def _token_id(backend: Tokenizer, token: str, folder: Path) -> int:
    token_id = backend.token_to_id(token)
    if token_id is None:
        raise TokenizerError(f"{folder}: special token {token!r} is not in the vocabulary")
    return token_id


# ---------------------------------------------------------------------------
# Special tokens, as transformers 5 resolves them


def _as_token(value: Any) -> str | AddedToken | None:
    """A config value: a string, or an AddedToken serialized as a dict."""
    if isinstance(value, dict) and "content" in value:
        fields = {k: v for k, v in value.items() if k != "__type"}
        return AddedToken(**fields)
    if isinstance(value, str):
        return value
    return None


def _config_added_tokens(config: _Config) -> dict[int, AddedToken] | None:
    decoder = config.config.get("added_tokens_decoder")
    if not isinstance(decoder, dict):
        return None
    tokens = {int(i): _as_token(v) for i, v in decoder.items()}
    return {i: t for i, t in tokens.items() if isinstance(t, AddedToken)}


def _named_tokens(config: _Config, json_added: dict[int, AddedToken]) -> dict[str, Any]:
    """bos/eos/unk/pad/...: CLIP defaults, then tokenizer_config.json, then
    special_tokens_map.json (only when the config has no added_tokens_decoder), each
    replaced by the added token of the same text when there is one."""
    named: dict[str, Any] = dict(HF_DEFAULTS)
    for key in HF_NAMED_TOKENS:
        if (value := _as_token(config.config.get(key))) is not None:
            named[key] = value
    added = _config_added_tokens(config)
    if added is None:
        for key in HF_NAMED_TOKENS:
            value = _as_token(config.special_map.get(key))
            if isinstance(value, AddedToken):
                value.special = True
            if value is not None:
                named[key] = value
        added = json_added
    by_text = {str(t): t for t in added.values()}
    return {key: by_text.get(str(value), value) for key, value in named.items()}


def _hf_added_tokens(
    named: dict[str, Any], json_added: dict[int, AddedToken], config: _Config
) -> list[AddedToken]:
    """The added tokens transformers 5 registers, in its order (for equal text the last wins).

    Their flags matter: a `normalized` token is also found after lowercasing.
    """
    added = _config_added_tokens(config)
    if added is None:
        added = json_added
    tokens: list[Any] = [t for _, t in sorted(added.items())]
    seen = {str(t) for t in tokens}
    for key in HF_NAMED_TOKENS:
        value = named.get(key)
        if value is not None and str(value) not in seen and value not in tokens:
            tokens.append(value)
    named_texts = {str(v) for v in named.values() if v is not None}
    return [_special_added_token(t, named_texts) for t in tokens]


def _special_added_token(token: str | AddedToken, named_texts: set[str]) -> AddedToken:
    if isinstance(token, str):
        return AddedToken(token, special=True)
    if not token.special and str(token) in named_texts:
        token.special = True
    return token


# ---------------------------------------------------------------------------
# Pipelines


def _hf_pipeline(
    backend: Tokenizer, named: dict[str, Any], json_added: dict[int, AddedToken], config: _Config
) -> None:
    """transformers 5 `CLIPTokenizer.__init__`, whatever the tokenizer.json says."""
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(HF_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    backend.add_tokens(_hf_added_tokens(named, json_added, config))
    backend.encode_special_tokens = bool(config.config.get("split_special_tokens", False))


def _open_clip_pipeline(backend: Tokenizer) -> None:
    """Text arrives cleaned and split into pieces; only the byte mapping is left to do."""
    backend.normalizer = None
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)


# ---------------------------------------------------------------------------
# open_clip's Python side


def _optional_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


@cache
def open_clip_cleaner() -> Callable[[str], str]:
    """open_clip's `_clean_lower`: ftfy, HTML unescape twice, whitespace, lower.

    ftfy is not a dependency of ours. Without it we unescape HTML and compose to NFC
    (ftfy unescapes, then applies NFC, before open_clip's own unescaping) and clean
    whitespace; texts ftfy would change further (curly quotes, fullwidth forms,
    ligatures, mojibake, control characters) then differ from open_clip.
    """
    ftfy = _optional_module("ftfy")
    if ftfy is not None:
        return lambda text: _clean_lower(html.unescape(html.unescape(ftfy.fix_text(text))))
    log.warning("ftfy is not installed: open_clip text cleaning is approximated")
    return lambda text: _clean_lower(
        unicodedata.normalize("NFC", html.unescape(html.unescape(text)))
    )


def _clean_lower(text: str) -> str:
    """open_clip's `whitespace_clean(...).lower()`: `str.split` decides what is whitespace."""
    return " ".join(text.split()).lower()


@cache
def open_clip_splitter() -> Callable[[str], list[str]]:
    """open_clip's split regex, run by the `regex` module as open_clip runs it.

    Without `regex` (not a dependency of ours) Oniguruma runs the same pattern; it
    differs only on a lone U+0345 and on letters newer than its Unicode tables.
    """
    regex = _optional_module("regex")
    if regex is not None:
        return regex.compile(OPEN_CLIP_SPLIT, regex.IGNORECASE).findall
    log.warning("the regex module is not installed: open_clip text splitting is approximated")
    # open_clip compiles its pattern with IGNORECASE, which makes "'" + long s a contraction.
    split = pre_tokenizers.Split(Regex("(?i)" + OPEN_CLIP_SPLIT), behavior="removed", invert=True)
    return lambda text: [piece for piece, _ in split.pre_tokenize_str(text)]
