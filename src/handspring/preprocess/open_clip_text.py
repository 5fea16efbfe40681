"""open_clip's Python-side text handling, for the "open_clip" tokenizer mode:
its cleaning (ftfy, HTML unescaping, whitespace, `str.lower`) and its split
regex. ftfy and regex are not dependencies of ours; without them both are
approximated and a warning says so (see `handspring.preprocess.text`).

ImageBind's copy of CLIP's tokenizer ("imagebind" mode) cleans the same way and
splits with the same regex, except that its special-token alternatives are HF's
names "<|startoftext|>"/"<|endoftext|>": hence `open_clip_splitter(bos, eos)`."""

from __future__ import annotations

import html
import importlib
import logging
import re
import unicodedata
from collections.abc import Callable
from functools import cache
from typing import Any

from tokenizers import Regex, pre_tokenizers

log = logging.getLogger(__name__)

# open_clip's SimpleTokenizer names its special tokens differently from HF.
OPEN_CLIP_BOS = "<start_of_text>"
OPEN_CLIP_EOS = "<end_of_text>"
WORD_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def split_pattern(bos: str, eos: str) -> str:
    """The split regex with `bos` and `eos` tried first at each piece."""
    return f"{re.escape(bos)}|{re.escape(eos)}|{WORD_SPLIT}"


OPEN_CLIP_SPLIT = split_pattern(OPEN_CLIP_BOS, OPEN_CLIP_EOS)
OPEN_CLIP_PAD_ID = 0


def _optional_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def open_clip_basic_cleaner() -> Callable[[str], str]:
    """open_clip's `basic_clean` (ftfy, HTML unescaped twice), before any whitespace or case
    handling. Without ftfy (not a dependency of ours): unescaped, then composed to NFC;
    texts ftfy would repair further (curly quotes, fullwidth forms, mojibake) differ."""
    ftfy = _optional_module("ftfy")
    if ftfy is not None:
        return lambda text: html.unescape(html.unescape(ftfy.fix_text(text)))
    log.warning("ftfy is not installed: open_clip text cleaning is approximated")
    return lambda text: unicodedata.normalize("NFC", html.unescape(html.unescape(text)))


@cache
def open_clip_cleaner() -> Callable[[str], str]:
    """open_clip's `_clean_lower`: its basic cleaning (see above), whitespace, lower."""
    basic = open_clip_basic_cleaner()
    return lambda text: _clean_lower(basic(text))


def _clean_lower(text: str) -> str:
    """open_clip's `whitespace_clean(...).lower()`: `str.split` decides what is whitespace."""
    return " ".join(text.split()).lower()


@cache
def open_clip_splitter(
    bos: str = OPEN_CLIP_BOS, eos: str = OPEN_CLIP_EOS
) -> Callable[[str], list[str]]:
    """open_clip's split regex, run by the `regex` module as open_clip runs it.

    Without `regex` (not a dependency of ours) Oniguruma runs the same pattern; it
    differs only on a lone U+0345 and on letters newer than its Unicode tables.
    """
    pattern = split_pattern(bos, eos)
    regex = _optional_module("regex")
    if regex is not None:
        return regex.compile(pattern, regex.IGNORECASE).findall
    log.warning("the regex module is not installed: open_clip text splitting is approximated")
    # open_clip compiles its pattern with IGNORECASE, which makes "'" + long s a contraction.
    split = pre_tokenizers.Split(Regex("(?i)" + pattern), behavior="removed", invert=True)
    return lambda text: [piece for piece, _ in split.pre_tokenize_str(text)]
