"""The standard CLIP vocabulary, derived from the BPE merges file OpenAI's CLIP ships
(`bpe_simple_vocab_16e6.txt.gz`, MIT licence; open_clip and ImageBind carry the same
bytes). Checkpoints without tokenizer files (ImageBind, many OpenCLIP ones) use it.

Ids are numbered as CLIP's `SimpleTokenizer` numbers them: 256 byte tokens, the same
256 with the end-of-word mark, one token per merge, then the two special tokens.
"""

from __future__ import annotations

import gzip
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable

from handspring.errors import TokenizerError

BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
# CLIP keeps the file's first 49152 - 256 - 2 merges (line 0 is a version header):
# with 512 byte tokens and 2 special tokens that makes 49408.
N_MERGES = 49152 - 256 - 2
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
VOCAB_SIZE = 49408


def clip_bpe_file() -> Traversable:
    """The packaged merges file (under handspring/preprocess/data)."""
    return files("handspring.preprocess").joinpath("data", BPE_FILE_NAME)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map of bytes to printable characters (copied from CLIP)."""
    bs = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


@cache
def clip_merges() -> tuple[tuple[str, str], ...]:
    """CLIP's merges in rank order. Cached: reading the gzip takes most of the time."""
    path = clip_bpe_file()
    try:
        lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path}: the packaged CLIP vocabulary is unreadable ({e})") from e
    merges = tuple(_merge_pair(line, path) for line in lines[1 : N_MERGES + 1])
    if len(merges) != N_MERGES:
        raise TokenizerError(f"{path}: {len(merges)} merges, CLIP needs {N_MERGES}")
    return merges


def _merge_pair(line: str, path: Traversable) -> tuple[str, str]:
    parts = line.split(" ")
    if len(parts) != 2:
        raise TokenizerError(f"{path}: merge line {line!r} is not two symbols")
    return parts[0], parts[1]


@cache
def clip_tokens() -> tuple[str, ...]:
    """Every token, its position being its id; HF's names for the special tokens."""
    byte_tokens = list(bytes_to_unicode().values())
    tokens = (
        byte_tokens
        + [t + END_OF_WORD for t in byte_tokens]
        + [a + b for a, b in clip_merges()]
        + [BOS_TOKEN, EOS_TOKEN]
    )
    if len(set(tokens)) != VOCAB_SIZE:
        raise TokenizerError(
            f"{clip_bpe_file()}: {len(set(tokens))} distinct tokens, CLIP has {VOCAB_SIZE}"
        )
    return tuple(tokens)


def clip_vocab() -> dict[str, int]:
    """Token -> id, a fresh dict each call (the cached tokens stay untouched)."""
    return {token: i for i, token in enumerate(clip_tokens())}
