"""The true CLIP BPE tokenizer files, derived from the vocabulary open_clip ships.

No network in tests (DESIGN decision 7), so checkpoints written by the tests get
their tokenizer from open_clip's `bpe_simple_vocab_16e6.txt.gz`, turned into the
files a Hugging Face CLIP checkpoint carries.
"""

from __future__ import annotations

import atexit
import gzip
import importlib.util
import json
import shutil
import tempfile
from functools import cache
from pathlib import Path

# CLIP keeps the first 49152 - 256 - 2 merges of the file (line 0 is a header):
# 256 byte tokens, 256 end-of-word byte tokens, the merges, then 2 special tokens.
N_MERGES = 49152 - 256 - 2
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
VOCAB_SIZE = 49408

VOCAB_FILES = ("vocab.json", "merges.txt")
HF_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


COMMITTED_BPE = Path(__file__).resolve().parents[1] / "data" / "bpe_simple_vocab_16e6.txt.gz"


def bpe_file() -> Path:
    """The original CLIP BPE merges, committed under tests/data so that golden
    tests run without open_clip (test_tokenizer checks it is open_clip's file)."""
    return COMMITTED_BPE


def open_clip_bpe_file() -> Path | None:
    """open_clip's own copy, found through the package folder: importing
    open_clip would import torch (seconds)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


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


def clip_merges() -> list[str]:
    """Merges as 'a b' lines, in rank order."""
    with gzip.open(bpe_file()) as f:
        lines = f.read().decode("utf-8").split("\n")
    return lines[1 : N_MERGES + 1]


def clip_vocab(merges: list[str]) -> dict[str, int]:
    """Token -> id exactly as CLIP's SimpleTokenizer numbers them, with the HF special-token names."""
    byte_tokens = list(bytes_to_unicode().values())
    tokens = byte_tokens + [t + "</w>" for t in byte_tokens]
    tokens += [m.replace(" ", "") for m in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == VOCAB_SIZE, len(vocab)
    return vocab


def _write_vocab_files(folder: Path) -> None:
    merges = clip_merges()
    vocab = clip_vocab(merges)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
    )


def _write_hf_files(folder: Path) -> None:
    """Let transformers write the files, so they look like a real checkpoint's."""
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer(
        vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=77
    )
    # openai/clip-vit-base-patch32 pads with <|endoftext|>; a different pad would change ids.
    assert tokenizer.pad_token == EOS_TOKEN, tokenizer.pad_token
    tokenizer.save_pretrained(folder)
    # transformers 5 no longer writes this legacy file; checkpoints on the hub still carry it.
    special = json.dumps(tokenizer.special_tokens_map, indent=2, sort_keys=True)
    (folder / "special_tokens_map.json").write_text(special + "\n", encoding="utf-8")


@cache
def _cache_dir() -> Path:
    """Derived once per test session and copied from here; removed at exit."""
    root = Path(tempfile.mkdtemp(prefix="handspring-clip-vocab-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    _write_vocab_files(root)
    return root


@cache
def _cache_dir_with_hf_files() -> Path:
    """Separate from `_cache_dir` so vocab-only callers need not import transformers."""
    root = _cache_dir()
    _write_hf_files(root)
    return root


def write_clip_tokenizer(
    folder: Path, *, tokenizer_json: bool = True, vocab_files: bool = True
) -> None:
    """Put the real CLIP tokenizer files into `folder` (created if needed).

    tokenizer_json: tokenizer.json, tokenizer_config.json, special_tokens_map.json,
    written by transformers' CLIPTokenizer (so transformers must be installed).
    vocab_files: vocab.json and merges.txt.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer_json:
        for name in HF_FILES:
            shutil.copyfile(_cache_dir_with_hf_files() / name, folder / name)
    if vocab_files:
        for name in VOCAB_FILES:
            shutil.copyfile(_cache_dir() / name, folder / name)
