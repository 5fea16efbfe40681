"""SigLIP's text tokenizers, with ids equal to transformers' (always padded to the context
length, 64, as SigLIP was trained and as its processor is called: padding="max_length").

- SigLIP: `spiece.model` (SentencePiece), as transformers' `SiglipTokenizer` (a Python
  tokenizer over SentencePiece) uses it, step for step: split out the special tokens,
  then for each remaining piece the big_vision canonicalisation (lowercase when
  `do_lower_case`, ASCII punctuation removed, whitespace collapsed, stripped) and
  SentencePiece on `"<unk>" + piece` with the pieces of "<unk>" cut off again; "</s>"
  appended. Its quirks are kept: a special token written in the text is a special token
  (before punctuation removal could touch it), and case matters for that match.
- SigLIP 2 (fixed-resolution checkpoints saved as `SiglipModel`): a Gemma `tokenizer.json`
  run as transformers' `Siglip2Tokenizer` runs it: vocab, merges and added tokens from the
  file, the pipeline from code (lowercase, spaces to "▁", byte-fallback BPE). SigLIP 2 was
  trained on lowercased text. transformers' AutoTokenizer gives these folders a
  `GemmaTokenizer` (their tokenizer_config says so), which in transformers 5 drops the
  lowercasing that their tokenizer.json holds; we keep it, as Siglip2Tokenizer and
  transformers 4 do.
- open_clip SigLIP folders (timm/ViT-B-16-SigLIP ...): open_clip's HFTokenizer cleans the
  text in Python (`tokenizer_kwargs.clean`: "canonicalize" for SigLIP, i.e. ftfy, HTML
  unescaping, "_" to space, ASCII punctuation removed, lowercase, whitespace collapsed),
  then runs the folder's tokenizer as AutoTokenizer loads it, padded to the context length.
  Their T5-style tokenizer.json runs as it is (`TokenizerJson`): on cleaned text it gives
  transformers 5's ids, and transformers 4's, which read the file as it is.
- Immich's SigLIP exports: Immich collapses whitespace (and for "canonicalize" configs
  removes ASCII punctuation and lowercases, without ftfy and without turning "_" into a
  space), then runs textual/tokenizer.json as it is, padded with tokenizer_config.json's
  pad token.
"""

from __future__ import annotations

import logging
import re
import string
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from handspring.errors import TokenizerError
from handspring.preprocess.hf_special_tokens import (
    TokenizerConfig,
    hf_added_tokens,
    named_tokens,
    read_tokenizer_config,
)

log = logging.getLogger(__name__)

SPIECE_MODEL = "spiece.model"
TOKENIZER_JSON = "tokenizer.json"
SENTENCEPIECE_CLASSES = ("SiglipTokenizer",)
GEMMA_CLASSES = ("GemmaTokenizer", "GemmaTokenizerFast", "Siglip2Tokenizer")

SPIECE_UNDERLINE = "▁"
PUNCTUATION = str.maketrans("", "", string.punctuation)
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class SiglipEncoding:
    ids: list[np.ndarray]  # int64 [T_i] per text: special tokens included, cut, not padded
    truncated: np.ndarray  # bool [N]: the text was cut to the context length


class SiglipTokenizer(ABC):
    """Texts -> ids, and ids -> the padded rows the text tower takes."""

    context_length: int
    pad_id: int
    padding_side: str  # "right" | "left", as the checkpoint's tokenizer pads

    @abstractmethod
    def encode(self, texts: Sequence[str]) -> SiglipEncoding: ...

    def pad(self, rows: Sequence[np.ndarray]) -> np.ndarray:
        """int64 [N, context_length]."""
        out = np.full((len(rows), self.context_length), self.pad_id, dtype=np.int64)
        for i, row in enumerate(rows):
            if self.padding_side == "left":
                out[i, self.context_length - len(row) :] = row
            else:
                out[i, : len(row)] = row
        return out


def siglip_tokenizer(folder: Path, context_length: int) -> SiglipTokenizer:
    """The tokenizer of a SigLIP checkpoint folder: the class its tokenizer_config.json
    names, else whichever of spiece.model and tokenizer.json it has."""
    config = read_tokenizer_config(folder)
    kind = str(config.config.get("tokenizer_class") or "")
    if kind in SENTENCEPIECE_CLASSES or (not kind and (folder / SPIECE_MODEL).is_file()):
        return SentencePieceTokenizer(folder / SPIECE_MODEL, config, context_length)
    if kind in GEMMA_CLASSES or (not kind and (folder / TOKENIZER_JSON).is_file()):
        return GemmaTokenizer(folder / TOKENIZER_JSON, config, context_length)
    if kind:
        raise TokenizerError(
            f"{folder}: tokenizer_class {kind!r} is not a SigLIP tokenizer "
            f"(expected one of {', '.join(SENTENCEPIECE_CLASSES + GEMMA_CLASSES)})"
        )
    raise TokenizerError(f"{folder}: no {SPIECE_MODEL} and no {TOKENIZER_JSON}")


# --------------------------------------------------------------------- SigLIP


def token_content(value: Any) -> str | None:
    """A token as tokenizer_config.json writes it: a string, or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def canonicalize(text: str, lowercase: bool) -> str:
    """big_vision's text canonicalisation, as SiglipTokenizer.canonicalize_text."""
    if lowercase:
        text = text.lower()
    return _WHITESPACE.sub(" ", text.translate(PUNCTUATION)).strip()


class SentencePieceTokenizer(SiglipTokenizer):
    """transformers' slow `SiglipTokenizer` (sentencepiece), re-run step for step."""

    padding_side = "right"

    def __init__(self, model_file: Path, config: TokenizerConfig, context_length: int) -> None:
        try:
            import sentencepiece
        except ImportError as exc:  # a runtime dependency, but imported only by SigLIP
            raise TokenizerError(
                f"{model_file.parent}: reading {model_file.name} needs the sentencepiece "
                "package (pip install sentencepiece)"
            ) from exc
        folder = model_file.parent
        if not model_file.is_file():
            raise TokenizerError(f"{folder}: {model_file.name} not found")
        settings = config.config
        if settings.get("legacy") is False or settings.get("sp_model_kwargs"):
            raise TokenizerError(
                f"{folder}: legacy=false and sp_model_kwargs change SentencePiece's "
                "behaviour, and are not supported"
            )
        self.processor = sentencepiece.SentencePieceProcessor()
        try:
            self.processor.Load(str(model_file))
        except (OSError, RuntimeError) as exc:
            raise TokenizerError(f"{folder}: {model_file.name} unusable ({exc})") from exc
        self.context_length = context_length
        self.lowercase = bool(settings.get("do_lower_case", True))
        self.truncation_side = str(settings.get("truncation_side", "right"))
        self.padding_side = str(settings.get("padding_side", "right"))
        named = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"}
        for key in named:
            value = token_content(settings.get(key)) or token_content(config.special_map.get(key))
            named[key] = value or named[key]
        self.unk_token = named["unk_token"]
        self._specials = set(named.values()) | self._extra_specials(settings)
        self.added_tokens = self._added_ids(settings, folder)
        self.eos_id, self.pad_id = (
            self.added_tokens[named["eos_token"]],
            self.added_tokens[named["pad_token"]],
        )
        # Longest first, so that of two special tokens at one place the longer is taken.
        alternatives = sorted(self.added_tokens, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")
        self._unk_pieces = len(self.processor.encode(self.unk_token, out_type=str))

    @staticmethod
    def _extra_specials(settings: dict[str, Any]) -> set[str]:
        extra: list[Any] = []
        for key in ("additional_special_tokens", "extra_special_tokens"):
            value = settings.get(key) or []
            extra += list(value.values()) if isinstance(value, dict) else list(value)
        return {c for c in map(token_content, extra) if c}

    def _added_ids(self, settings: dict[str, Any], folder: Path) -> dict[str, int]:
        """Text -> id of every token split out before SentencePiece runs."""
        added: dict[str, int] = {}
        decoder = settings.get("added_tokens_decoder")
        for index, value in (decoder if isinstance(decoder, dict) else {}).items():
            if (content := token_content(value)) is not None:
                added[content] = int(index)
        for token in self._specials - set(added):
            index = self.processor.piece_to_id(token)
            if self.processor.id_to_piece(index) != token:
                raise TokenizerError(f"{folder}: special token {token!r} is not in the vocabulary")
            added[token] = index
        return added

    def tokens(self, text: str) -> list[str]:
        """SiglipTokenizer.tokenize: special tokens and SentencePiece pieces."""
        text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        out: list[str] = []
        # Special tokens' lstrip/rstrip flags are not applied: canonicalisation strips
        # the same whitespace from the pieces beside them.
        for chunk in self._split.split(text):
            if not chunk:
                continue
            if chunk in self.added_tokens:
                out.append(chunk)
                continue
            pieces = self.processor.encode(
                self.unk_token + canonicalize(chunk, self.lowercase), out_type=str
            )
            out += pieces[self._unk_pieces :] if len(pieces) >= self._unk_pieces else pieces
        if len(out) > 1 and out[0] == SPIECE_UNDERLINE and out[1] in self._specials:
            out = out[1:]
        return out

    def _id(self, piece: str) -> int:
        return (
            self.added_tokens[piece]
            if piece in self.added_tokens
            else self.processor.piece_to_id(piece)
        )

    def encode(self, texts: Sequence[str]) -> SiglipEncoding:
        rows: list[np.ndarray] = []
        truncated = np.zeros(len(texts), dtype=bool)
        for i, text in enumerate(texts):
            ids = [self._id(piece) for piece in self.tokens(text)]
            room = self.context_length - 1  # for "</s>"
            if len(ids) > room:
                truncated[i] = True
                ids = ids[:room] if self.truncation_side == "right" else ids[len(ids) - room :]
            if not ids or ids[-1] != self.eos_id:  # SiglipTokenizer adds none after its own
                ids.append(self.eos_id)
            rows.append(np.asarray(ids, dtype=np.int64))
        return SiglipEncoding(rows, truncated)


# --------------------------------------------------------------------- SigLIP 2

# transformers' Siglip2Tokenizer (and GemmaTokenizer) defaults.
GEMMA_NAMED = {
    "bos_token": "<bos>",
    "eos_token": "<eos>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
}


class GemmaTokenizer(SiglipTokenizer):
    """transformers' `Siglip2Tokenizer` on a Gemma tokenizer.json."""

    def __init__(self, path: Path, config: TokenizerConfig, context_length: int) -> None:
        folder = path.parent
        if not path.is_file():
            raise TokenizerError(f"{folder}: {path.name} not found")
        try:
            loaded = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises bare Exception for bad files
            raise TokenizerError(f"{folder}: {path.name} unusable ({exc})") from exc
        model = loaded.model
        if not isinstance(model, BPE):
            kind = type(model).__name__
            raise TokenizerError(f"{folder}: {path.name} holds a {kind} model, Gemma's is BPE")
        json_added = loaded.get_added_tokens_decoder()
        named = named_tokens(config, json_added)
        for key, default in GEMMA_NAMED.items():  # named_tokens' own defaults are CLIP's
            if key not in config.config and key not in config.special_map:
                named[key] = default
        model.dropout = None
        model.fuse_unk = True
        model.byte_fallback = True
        model.continuing_subword_prefix = None
        model.end_of_word_suffix = None
        model.ignore_merges = False
        model.unk_token = str(named["unk_token"])
        backend = Tokenizer(model)
        backend.normalizer = normalizers.Sequence(
            [normalizers.Lowercase(), normalizers.Replace(" ", SPIECE_UNDERLINE)]
        )
        backend.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
        backend.add_tokens(hf_added_tokens(named, json_added, config))
        settings = config.config
        backend.encode_special_tokens = bool(settings.get("split_special_tokens", False))
        backend.post_processor = self._post_processor(backend, named, settings, loaded, folder)
        backend.enable_truncation(
            max_length=context_length, direction=str(settings.get("truncation_side", "right"))
        )
        self.backend = backend
        self.context_length = context_length
        self.padding_side = str(settings.get("padding_side", "left"))  # Siglip2Tokenizer's
        self.pad_id = token_id_of(backend, str(named["pad_token"]), folder)

    @staticmethod
    def _post_processor(
        backend: Tokenizer,
        named: dict[str, Any],
        settings: dict[str, Any],
        loaded: Tokenizer,
        folder: Path,
    ) -> Any:
        """The file's, unless tokenizer_config.json says which of bos and eos to add (then
        built as transformers' `update_post_processor` builds it)."""
        explicit = "add_bos_token" in settings or "add_eos_token" in settings
        if not explicit and loaded.post_processor is not None:
            return loaded.post_processor
        single, special = "$A:0", []
        if settings.get("add_bos_token", False):
            bos = str(named["bos_token"])
            single = f"{bos}:0 {single}"
            special.append((bos, token_id_of(backend, bos, folder)))
        if settings.get("add_eos_token", False):
            eos = str(named["eos_token"])
            single = f"{single} {eos}:0"
            special.append((eos, token_id_of(backend, eos, folder)))
        return processors.TemplateProcessing(single=single, special_tokens=special)

    def encode(self, texts: Sequence[str]) -> SiglipEncoding:
        return encode_rows(self.backend, texts)


def encode_rows(backend: Tokenizer, texts: Sequence[str]) -> SiglipEncoding:
    encodings = backend.encode_batch(list(texts))
    rows = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
    return SiglipEncoding(rows, np.array([bool(e.overflowing) for e in encodings]))


def token_id_of(backend: Tokenizer, token: str, folder: Path) -> int:
    token_id = backend.token_to_id(token)
    if token_id is None:
        raise TokenizerError(f"{folder}: special token {token!r} is not in the vocabulary")
    return token_id
