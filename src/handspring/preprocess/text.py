"""CLIP text tokenizer whose ids equal one of three references, chosen by `cleaning`.

- "hf": transformers' `CLIPTokenizer` (transformers 5, tokenizers-backed) loaded from
  the same files. Transformers 5 rebuilds the CLIP pipeline from code and takes only
  vocab, merges and special tokens from the files; so do we.
- "open_clip": `open_clip.tokenize`. Its Python-side cleaning (ftfy, HTML unescaping,
  whitespace, `str.lower`) and its own split regex run here in Python; only byte-level
  BPE runs in `tokenizers`.
- "imagebind": ImageBind's `SimpleTokenizer` (its copy of CLIP's). Cleaning and split
  regex as open_clip's, but the special pieces it turns into special ids are
  "<|startoftext|>"/"<|endoftext|>". It collapses whitespace with a `regex`
  pattern, which unlike `str.split` leaves U+001C..U+001F alone; ftfy has removed
  those by then. Its rows always end in an eot, so the first eot (what its
  text head selects, by argmax of the ids) can come from the text itself.

`ClipTokenizer.from_clip_vocab` builds the standard CLIP vocabulary that handspring
ships, for checkpoints without tokenizer files (ImageBind, many OpenCLIP ones).

Differences between transformers and open_clip (ImageBind's differ from open_clip's
only as said above), and where each mode handles them:

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

import logging
from collections.abc import Sequence
from dataclasses import dataclass
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
from handspring.preprocess.clip_vocab import (
    BOS_TOKEN,
    EOS_TOKEN,
    clip_bpe_file,
    clip_merges,
    clip_vocab,
)
from handspring.preprocess.hf_special_tokens import (
    TokenizerConfig,
    hf_added_tokens,
    named_tokens,
    read_tokenizer_config,
)
from handspring.preprocess.open_clip_text import (
    OPEN_CLIP_BOS,
    OPEN_CLIP_EOS,
    OPEN_CLIP_PAD_ID,
    open_clip_cleaner,
    open_clip_splitter,
)

log = logging.getLogger(__name__)

Cleaning = Literal["hf", "open_clip", "imagebind"]
CLEANINGS: tuple[Cleaning, ...] = ("hf", "open_clip", "imagebind")
# The text spellings that the split regex of each Python-side mode turns into
# (bos, eot) ids.
SPECIAL_PIECES: dict[Cleaning, tuple[str, str]] = {
    "open_clip": (OPEN_CLIP_BOS, OPEN_CLIP_EOS),
    "imagebind": (BOS_TOKEN, EOS_TOKEN),
}

TOKENIZER_JSON = "tokenizer.json"
VOCAB_JSON = "vocab.json"
MERGES_TXT = "merges.txt"

# transformers 5 CLIPTokenizer, verbatim: the special-token alternatives are part of
# the split regex whatever the configured special tokens are.
HF_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# A one-character piece always becomes exactly one BPE token, so it can hold the
# place of a special token through truncation and be swapped for its id afterwards.
PLACEHOLDER_PIECE = "a"


@dataclass(frozen=True)
class TokenBatch:
    """Token ids of a batch, padded to its longest row (never to the context length)."""

    input_ids: np.ndarray  # int64 [B, T]
    eot_index: np.ndarray  # int64 [B], first end-of-text token: where the text tower reads
    lengths: np.ndarray  # int64 [B], tokens per row including start and end tokens
    truncated: np.ndarray  # bool [B], the text was cut to the context length


class ClipTokenizer:
    """CLIP byte-level BPE tokenizer; ids equal transformers', open_clip's or ImageBind's."""

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
        self.backend = backend
        backend.enable_truncation(max_length=context_length)
        backend.enable_padding(pad_id=pad_id)
        if cleaning in SPECIAL_PIECES:
            bos_piece, eot_piece = SPECIAL_PIECES[cleaning]
            self._clean = open_clip_cleaner()
            self._split = open_clip_splitter(bos_piece, eot_piece)
            self._special_pieces = {bos_piece: bos_id, eot_piece: eot_id}

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
        return cls._build(
            model, {}, read_tokenizer_config(folder), folder, context_length, cleaning
        )

    @classmethod
    def from_clip_vocab(
        cls, *, context_length: int = 77, cleaning: Cleaning = "open_clip"
    ) -> ClipTokenizer:
        """The standard CLIP vocabulary shipped with handspring, built in memory.

        For ImageBind (cleaning="imagebind") and OpenCLIP checkpoints that carry no
        tokenizer files ("open_clip"). The parsed vocabulary is cached per process.
        """
        model = BPE(clip_vocab(), list(clip_merges()))
        config = TokenizerConfig(config={}, special_map={})
        source = Path(str(clip_bpe_file()))
        return cls._build(model, {}, config, source, context_length, cleaning)

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
            model, added, read_tokenizer_config(path.parent), path.parent, context_length, cleaning
        )

    @classmethod
    def _build(
        cls,
        model: BPE,
        json_added: dict[int, AddedToken],
        config: TokenizerConfig,
        source: Path,
        context_length: int,
        cleaning: Cleaning,
    ) -> ClipTokenizer:
        if cleaning not in CLEANINGS:
            raise ValueError(f"cleaning must be one of {CLEANINGS}, got {cleaning!r}")
        named = named_tokens(config, json_added)
        _set_clip_bpe_options(model, str(named["unk_token"]))
        backend = Tokenizer(model)
        bos, eos = str(named["bos_token"]), str(named["eos_token"])
        bos_id, eot_id = _token_id(backend, bos, source), _token_id(backend, eos, source)
        if cleaning == "hf":
            pad_id = _token_id(backend, str(named["pad_token"]), source)
            _hf_pipeline(backend, named, json_added, config)
        else:
            pad_id = OPEN_CLIP_PAD_ID
            _python_side_pipeline(backend)
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
            return TokenBatch(
                np.zeros((0, 0), dtype=np.int64), nothing, nothing.copy(), nothing.astype(bool)
            )
        if self.cleaning == "hf":
            encodings = self.backend.encode_batch(list(texts))
            input_ids = _ids_array(encodings)
        else:
            encodings, input_ids = self._encode_cleaned(texts)
        lengths = np.asarray([e.attention_mask for e in encodings], dtype=np.int64).sum(axis=1)
        eot_index = np.argmax(input_ids == self.eot_id, axis=1).astype(np.int64)
        truncated = np.array([bool(e.overflowing) for e in encodings], dtype=bool)
        return TokenBatch(input_ids, eot_index, lengths, truncated)

    def _encode_cleaned(self, texts: Sequence[str]) -> tuple[list[Encoding], np.ndarray]:
        """open_clip / ImageBind: cleaned and split in Python, byte-level BPE in tokenizers."""
        pieces = [self._split(self._clean(text)) for text in texts]
        swaps = _swap_special_pieces(pieces, self._special_pieces)
        encodings = self.backend.encode_batch(pieces, is_pretokenized=True)
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


def _token_id(backend: Tokenizer, token: str, source: Path) -> int:
    token_id = backend.token_to_id(token)
    if token_id is None:
        raise TokenizerError(f"{source}: special token {token!r} is not in the vocabulary")
    return token_id


# ---------------------------------------------------------------------------
# Special tokens, as transformers 5 resolves them


def _hf_pipeline(
    backend: Tokenizer,
    named: dict[str, Any],
    json_added: dict[int, AddedToken],
    config: TokenizerConfig,
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
    backend.add_tokens(hf_added_tokens(named, json_added, config))
    backend.encode_special_tokens = bool(config.config.get("split_special_tokens", False))


def _python_side_pipeline(backend: Tokenizer) -> None:
    """Text arrives cleaned and split into pieces; only the byte mapping is left to do."""
    backend.normalizer = None
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
