"""Random-weight SigLIP checkpoints written by transformers (`SiglipModel.save_pretrained`),
with tokenizers trained here: google's spiece.model and Gemma's tokenizer.json cannot be
downloaded, so small ones of the same kinds are made from a generated corpus.

- SigLIP: a SentencePiece unigram model with T5's special ids (<pad> 0, </s> 1, <unk> 2),
  saved by transformers' `SiglipTokenizer`.
- SigLIP 2: a SentencePiece BPE model with byte fallback and Gemma's special ids (<pad>,
  <eos>, <bos>, <unk>, <mask>), turned into a `GemmaTokenizer` and given a lowercasing
  normalizer and eos-only post-processing, as transformers' convert_siglip2_to_hf.py makes
  the files of google/siglip2-*.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

from tests.support.text_corpus import HAND_WRITTEN, UNICODE_BITS, WORDS

# The tiny towers: real structure, small widths. Image 32 x 32 in 8 x 8 patches.
TINY_VISION = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
}
TINY_TEXT = {
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "projection_size": 64,
}
# google/siglip-base-patch16-224 (SigLIP 2's base/16-224 differs only in its 256k vocabulary).
BASE_VISION: dict[str, Any] = {}
BASE_TEXT: dict[str, Any] = {"vocab_size": 32000}

GEMMA_SPECIALS = ["<mask>", "<start_of_turn>", "<end_of_turn>"]
GEMMA_PLAIN_ADDED = ["<unused0>"]


def training_lines(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pieces = WORDS + UNICODE_BITS
    lines = [" ".join(rng.choice(pieces) for _ in range(rng.randrange(3, 15))) for _ in range(4000)]
    return lines + [t for t in HAND_WRITTEN if t.strip()]


def _train(**options: Any) -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_lines()),
        model_writer=model,
        hard_vocab_limit=False,
        character_coverage=1.0,
        minloglevel=2,
        num_threads=1,
        **options,
    )
    return model.getvalue()


def write_spiece_tokenizer(folder: Path) -> int:
    """spiece.model and tokenizer_config.json as SiglipTokenizer saves them; the vocab size."""
    from transformers import SiglipTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "spiece.model"
    model.write_bytes(
        _train(
            model_type="unigram",
            vocab_size=1500,
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            normalization_rule_name="nmt_nfkc",
        )
    )
    tokenizer = SiglipTokenizer(vocab_file=str(model))
    tokenizer.save_pretrained(folder)
    return len(tokenizer)


def write_gemma_tokenizer(folder: Path) -> int:
    """tokenizer.json and tokenizer_config.json in google/siglip2-*'s form; the vocab size."""
    from tokenizers import AddedToken, normalizers
    from transformers import GemmaTokenizer
    from transformers.tokenization_utils_sentencepiece import SentencePieceExtractor

    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "gemma-source.model"
    source.write_bytes(
        _train(
            model_type="bpe",
            vocab_size=1500,
            pad_id=0,
            eos_id=1,
            bos_id=2,
            unk_id=3,
            eos_piece="<eos>",
            bos_piece="<bos>",
            user_defined_symbols=GEMMA_SPECIALS + GEMMA_PLAIN_ADDED,
            byte_fallback=True,
            split_digits=True,
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,
            normalization_rule_name="identity",
        )
    )
    vocab, _, merges = SentencePieceExtractor(str(source)).extract()
    source.unlink()
    tokenizer = GemmaTokenizer(
        vocab=vocab,
        merges=merges,
        add_bos_token=False,
        add_eos_token=True,
        padding_side="right",
        model_input_names=["input_ids"],
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in GEMMA_SPECIALS])
    tokenizer.add_tokens(
        [AddedToken(t, special=False, normalized=False) for t in GEMMA_PLAIN_ADDED]
    )
    backend = tokenizer._tokenizer
    backend.normalizer = normalizers.Sequence([normalizers.Lowercase(), backend.normalizer])
    tokenizer.save_pretrained(folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    # What google/siglip2-*'s tokenizer_config.json says (transformers 5 saves less).
    config.update(add_bos_token=False, add_eos_token=True, model_max_length=64)
    config_path.write_text(json.dumps(config, indent=2))
    return len(tokenizer)


def perturb(model: Any, seed: int) -> None:
    """LayerNorms and biases moved off 1 and 0, so that a missing or mixed-up one shows; the
    zero-shot scale and bias set near SigLIP's learned values (t' = log 10, b = -10 at
    initialisation)."""
    import numpy as np
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
            elif name.endswith("bias") and "logit" not in name:
                param.add_(0.02 * torch.randn(param.shape, generator=generator))
        model.logit_scale.fill_(float(np.log(10.0)) + 0.3)
        model.logit_bias.fill_(-2.5)


def write_siglip(
    folder: Path,
    tokenizer: str = "spiece",
    vision: dict[str, Any] | None = None,
    text: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """A `SiglipModel` folder: config, model.safetensors, preprocessor_config.json and the
    tokenizer files ("spiece" or "gemma"). transformers' initialisation, with LayerNorms
    and biases moved off 1 and 0 so that a missing or mixed-up one shows."""
    import torch
    from transformers import SiglipConfig, SiglipModel
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    writer = write_spiece_tokenizer if tokenizer == "spiece" else write_gemma_tokenizer
    vocab_size = writer(folder)
    vision = {**(TINY_VISION if vision is None else vision)}
    text = {**(TINY_TEXT if text is None else text)}
    text.setdefault("vocab_size", vocab_size)
    assert text["vocab_size"] >= vocab_size, "the token table must hold every id"
    text.update(bos_token_id=None, eos_token_id=None, pad_token_id=None)
    config = SiglipConfig(text_config=text, vision_config=vision)
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    perturb(model, seed)
    model.save_pretrained(folder)
    size = config.vision_config.image_size
    SiglipImageProcessorPil(size={"height": size, "width": size}).save_pretrained(folder)
    return folder
