"""Text cleaning that runs before tokenizer.json, written as data (preprocess.json's
`text.clean`): the steps handspring's tokenizers take in Python before, or around, the
`tokenizers` library.

Each step is one of a few operations, defined in docs/export.md so that any language can
run them; regular expressions use only character classes with \\uXXXX escapes, which
Python's `re`, JavaScript (with the `u` flag) and Oniguruma read alike:
- `{"op": "ftfy_fix_text"}`: Python's ftfy.fix_text with its defaults (no equivalent
  elsewhere; plain text passes through it unchanged).
- `{"op": "html_unescape"}`: Python's html.unescape (HTML5 named and numeric references).
- `{"op": "replace_regex", "pattern": P, "replacement": R}`: every match of P becomes R.
- `{"op": "replace", "find": F, "replacement": R}`: every occurrence of F becomes R.
- `{"op": "strip", "chars": C}`: C removed from both ends.
- `{"op": "lowercase"}`: Unicode default full lowercasing (Python's str.lower, JavaScript's
  String.prototype.toLowerCase; both apply the final-sigma rule).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from handspring.preprocess.open_clip_text import open_clip_cleaner
from handspring.preprocess.siglip_text_exports import immich_cleaner
from handspring.preprocess.siglip_text_exports import open_clip_cleaner as open_clip_hf_cleaner

Step = dict[str, Any]


def char_class(chars: Iterable[str]) -> str:
    """A regex character class of `chars`, in \\uXXXX ranges."""
    codes = sorted({ord(c) for c in chars})
    if any(code > 0xFFFF for code in codes):
        raise ValueError("char_class writes \\uXXXX escapes: code points over U+FFFF need pairs")
    ranges: list[tuple[int, int]] = []
    for code in codes:
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    parts = [f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges]
    return "[" + "".join(parts) + "]"


# What Python's str.split() and re's \s call whitespace (it includes U+001C..U+001F, which
# JavaScript's \s lacks, and leaves out U+FEFF, which JavaScript's \s has). None is
# above U+FFFF.
PYTHON_WHITESPACE = char_class(chr(c) for c in range(0x10000) if chr(c).isspace())
ASCII_PUNCTUATION = char_class("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")  # string.punctuation

FTFY: Step = {"op": "ftfy_fix_text"}
HTML_UNESCAPE: Step = {"op": "html_unescape"}
LOWERCASE: Step = {"op": "lowercase"}
REMOVE_PUNCTUATION: Step = {"op": "replace_regex", "pattern": ASCII_PUNCTUATION, "replacement": ""}
UNDERSCORE_TO_SPACE: Step = {"op": "replace", "find": "_", "replacement": " "}
# `" ".join(text.split())`: runs of whitespace to one space, none at either end.
COLLAPSE_WHITESPACE: list[Step] = [
    {"op": "replace_regex", "pattern": PYTHON_WHITESPACE + "+", "replacement": " "},
    {"op": "strip", "chars": " "},
]
# open_clip's basic_clean: ftfy, then HTML unescaped twice.
OPEN_CLIP_BASIC: list[Step] = [FTFY, HTML_UNESCAPE, HTML_UNESCAPE]

# handspring's Python cleanings, by name, as steps.
CLEANINGS: dict[str, list[Step]] = {
    # open_clip's CLIP tokenizer and ImageBind's: whitespace_clean(basic_clean(t)).lower();
    # open_clip's HFTokenizer with clean="lower" is the same.
    "open_clip_lower": [*OPEN_CLIP_BASIC, *COLLAPSE_WHITESPACE, LOWERCASE],
    "open_clip_whitespace": [*OPEN_CLIP_BASIC, *COLLAPSE_WHITESPACE],
    # open_clip's canonicalize_text (SigLIP): "_" to space, punctuation out, lower, collapse.
    "open_clip_canonicalize": [
        *OPEN_CLIP_BASIC,
        UNDERSCORE_TO_SPACE,
        REMOVE_PUNCTUATION,
        LOWERCASE,
        *COLLAPSE_WHITESPACE,
    ],
    # Immich's clean_text: collapse first, then (canonicalize) punctuation out and lower.
    "immich_canonicalize": [*COLLAPSE_WHITESPACE, REMOVE_PUNCTUATION, LOWERCASE],
    "immich_whitespace": [*COLLAPSE_WHITESPACE],
}


def _candidates() -> dict[str, Callable[[str], str]]:
    return {
        "open_clip_lower": open_clip_cleaner(),
        "open_clip_whitespace": open_clip_hf_cleaner("whitespace"),
        "open_clip_canonicalize": open_clip_hf_cleaner("canonicalize"),
        "immich_canonicalize": immich_cleaner(True),
        "immich_whitespace": immich_cleaner(False),
    }


# Strings on which the cleanings above all differ from one another: HTML entities,
# underscores, punctuation, case and runs of whitespace.
_PROBES = ("A_b,  C&amp;x\u00a0Y", "Tab\tand\n  NL_x!", "&lt;B&gt; é_É")


def identify_cleaning(clean: Callable[[str], str]) -> str:
    """The name in CLEANINGS of a tokenizer's cleaning function, found by what it does:
    the tokenizer keeps the function, not the name of the config that chose it."""
    outputs = tuple(clean(p) for p in _PROBES)
    for name, candidate in _candidates().items():
        if tuple(candidate(p) for p in _PROBES) == outputs:
            return name
    raise ValueError("the tokenizer cleans texts in a way no export step list describes")
