"""The true CLIP BPE tokenizer files, written from the vocabulary handspring ships.

No network in tests (DESIGN decision 7), so checkpoints written by the tests get
their tokenizer from `handspring.preprocess.clip_vocab` (CLIP's
`bpe_simple_vocab_16e6.txt.gz`), turned into the files a Hugging Face CLIP
checkpoint carries.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from functools import cache
from pathlib import Path

from handspring.preprocess.clip_vocab import EOS_TOKEN, clip_merges, clip_vocab

VOCAB_FILES = ("vocab.json", "merges.txt")
HF_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _write_vocab_files(folder: Path) -> None:
    merges = [f"{a} {b}" for a, b in clip_merges()]
    (folder / "vocab.json").write_text(
        json.dumps(clip_vocab(), ensure_ascii=False), encoding="utf-8"
    )
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
