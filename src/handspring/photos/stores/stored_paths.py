"""File paths whose names are not valid UTF-8, in stores that only hold valid text.

On Linux a file name is bytes; Python hands a name that is not valid UTF-8 over as a
str with each undecodable byte as a lone surrogate (os.fsdecode: b"caf\\xe9.jpg" ->
"caf\\udce9.jpg"), and opens the file again from that str. SQLite's TEXT (through
Python's sqlite3), Qdrant's JSON payloads and JSON in general cannot carry lone
surrogates, so the stores keep paths (and texts that may quote one: error reasons) in
a stored form:

- text that is valid Unicode without NUL, as every path that decodes is, is stored as
  it is, so every index written before this form existed reads the same;
- each lone surrogate, and NUL, becomes NUL and its code point in four lowercase hex
  digits ("caf\\udce9.jpg" -> "caf\\x00dce9.jpg"). No file name holds NUL, so a stored
  path is never mistaken for another path, and every stored form turns back exactly.

The escape stays within its name and never touches "/", so a folder's stored form is
a prefix of the stored form of every path below it: folder filters and prefix ranges
work on stored forms as on paths. What people read (JSON, terminals) gets
`display_path`, where each undecodable byte shows as U+FFFD.
"""

from __future__ import annotations

import re

_ESCAPE = "\x00"
_NOT_STORABLE = re.compile("[\x00\ud800-\udfff]")
_ESCAPED = re.compile("\x00([0-9a-f]{4})")
_SURROGATE = re.compile("[\ud800-\udfff]")


def encode_stored(text: str) -> str:
    """The valid-Unicode form a store keeps of a path or a text (see the module notes)."""
    return _NOT_STORABLE.sub(lambda found: f"{_ESCAPE}{ord(found.group()):04x}", text)


def decode_stored(stored: str) -> str:
    """The path or text a stored form stands for: the inverse of `encode_stored`."""
    if _ESCAPE not in stored:  # nearly every path: no regex pass
        return stored
    return _ESCAPED.sub(lambda found: chr(int(found.group(1), 16)), stored)


def display_path(text: str) -> str:
    """A path (or a text quoting one) for people and JSON: each byte of a name that is
    not valid UTF-8 (a lone surrogate) shown as U+FFFD. Lossy: files are found by id,
    never by this text."""
    return _SURROGATE.sub("\ufffd", text)
