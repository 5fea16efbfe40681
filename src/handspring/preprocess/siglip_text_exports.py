"""SigLIP tokenizers of the exported layouts: a tokenizer.json run as it is (timm's and
Immich's SigLIP repos), with the Python-side cleaning open_clip's HFTokenizer or Immich's
service applies first. The SentencePiece and Gemma tokenizers are in siglip_text.py."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from handspring.errors import TokenizerError
from handspring.preprocess.hf_special_tokens import TokenizerConfig, read_tokenizer_config
from handspring.preprocess.open_clip_text import open_clip_basic_cleaner
from handspring.preprocess.siglip_text import (
    GEMMA_CLASSES,
    PUNCTUATION,
    SENTENCEPIECE_CLASSES,
    SPIECE_MODEL,
    TOKENIZER_JSON,
    SiglipEncoding,
    SiglipTokenizer,
    encode_rows,
    siglip_tokenizer,
    token_content,
    token_id_of,
)


class TokenizerJson(SiglipTokenizer):
    """A tokenizer.json run as it is, cut to the context length and padded on the right
    with `pad_token`."""

    padding_side = "right"

    def __init__(
        self, path: Path, pad_token: str, context_length: int, truncation_side: str = "right"
    ) -> None:
        folder = path.parent
        if not path.is_file():
            raise TokenizerError(f"{folder}: {path.name} not found")
        try:
            backend = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises bare Exception for bad files
            raise TokenizerError(f"{folder}: {path.name} unusable ({exc})") from exc
        backend.no_padding()  # rows are padded by `pad`, to the context length
        backend.enable_truncation(max_length=context_length, direction=truncation_side)
        self.backend = backend
        self.context_length = context_length
        self.pad_id = token_id_of(backend, pad_token, folder)

    def encode(self, texts: Sequence[str]) -> SiglipEncoding:
        return encode_rows(self.backend, texts)


class CleanedTokenizer(SiglipTokenizer):
    """Another tokenizer, on texts cleaned first (as open_clip and Immich clean in Python)."""

    def __init__(self, inner: SiglipTokenizer, clean: Callable[[str], str]) -> None:
        self.inner = inner
        self.clean = clean
        self.context_length = inner.context_length
        self.pad_id = inner.pad_id
        self.padding_side = inner.padding_side

    def encode(self, texts: Sequence[str]) -> SiglipEncoding:
        return self.inner.encode([self.clean(text) for text in texts])


def _pad_token(config: TokenizerConfig, default: str | None, folder: Path) -> str:
    token = token_content(config.config.get("pad_token")) or token_content(
        config.special_map.get("pad_token")
    )
    if token := token or default:
        return token
    raise TokenizerError(f"{folder}: tokenizer_config.json names no pad_token")


# --------------------------------------------------------------------- open_clip


def open_clip_canonicalize(text: str) -> str:
    """open_clip's `canonicalize_text` (big_vision's, with "_" read as a space)."""
    text = text.replace("_", " ").translate(PUNCTUATION).lower()
    return " ".join(text.split())


def open_clip_cleaner(kind: str) -> Callable[[str], str]:
    """open_clip's HFTokenizer cleaning named by `tokenizer_kwargs.clean`."""
    basic = open_clip_basic_cleaner()
    if kind == "canonicalize":
        return lambda text: open_clip_canonicalize(basic(text))
    if kind == "lower":
        return lambda text: " ".join(basic(text).split()).lower()
    if kind == "whitespace":
        return lambda text: " ".join(basic(text).split())
    raise TokenizerError(
        f"tokenizer_kwargs.clean={kind!r} is not one of open_clip's cleanings "
        "(canonicalize, lower, whitespace)"
    )


def open_clip_siglip_tokenizer(
    folder: Path, context_length: int, text_cfg: Mapping[str, Any]
) -> SiglipTokenizer:
    """The tokenizer open_clip's `get_tokenizer("local-dir:<folder>")` makes for a SigLIP
    config: AutoTokenizer on the folder's files, after open_clip's cleaning."""
    config = read_tokenizer_config(folder)
    kind = str(config.config.get("tokenizer_class") or "")
    inner: SiglipTokenizer
    if kind in SENTENCEPIECE_CLASSES + GEMMA_CLASSES:
        inner = siglip_tokenizer(folder, context_length)
    elif (folder / TOKENIZER_JSON).is_file():
        # T5Tokenizer's own default pad token, when the files name none.
        pad = _pad_token(config, "<pad>" if kind.startswith("T5") else None, folder)
        side = str(config.config.get("truncation_side", "right"))
        inner = TokenizerJson(folder / TOKENIZER_JSON, pad, context_length, side)
    else:
        raise TokenizerError(
            f"{folder}: no {TOKENIZER_JSON}, and tokenizer_class {kind!r} is not "
            f"one read from {SPIECE_MODEL} here"
        )
    clean = str((text_cfg.get("tokenizer_kwargs") or {}).get("clean", "whitespace"))
    return CleanedTokenizer(inner, open_clip_cleaner(clean))


# ------------------------------------------------------------------------ Immich


def immich_cleaner(canonicalize: bool) -> Callable[[str], str]:
    """Immich's `clean_text`."""
    if canonicalize:
        return lambda text: " ".join(text.split()).translate(PUNCTUATION).lower()
    return lambda text: " ".join(text.split())


def immich_tokenizer(folder: Path, context_length: int, canonicalize: bool) -> SiglipTokenizer:
    """Immich's OpenClipTextualEncoder tokenization of an Immich-layout `textual/` folder."""
    pad = _pad_token(read_tokenizer_config(folder), None, folder)
    inner = TokenizerJson(folder / TOKENIZER_JSON, pad, context_length)
    return CleanedTokenizer(inner, immich_cleaner(canonicalize))
