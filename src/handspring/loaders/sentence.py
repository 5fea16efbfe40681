"""Sentence-transformers text models (BERT, DistilBERT, XLM-RoBERTa, MPNet) as a `Model`
with one text tower: encoder, pooling and Dense layers in one graph."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer

from handspring.embedder import Model
from handspring.errors import CheckpointError
from handspring.loaders.options import LoadOptions, tower_precision
from handspring.models.bert import EncoderConfig, encoder_weight_shapes, is_ignored_key
from handspring.models.sentence_head import build_sentence_graph
from handspring.runtime.session import built_session
from handspring.towers.encoder_text import hf_encoder_tokenizer
from handspring.towers.sentence_text import SentenceTextTower
from handspring.weights.checkpoint import check_weights, weight_paths
from handspring.weights.json_files import read_json
from handspring.weights.safetensors_io import TensorSource
from handspring.weights.sentence_transformers import SentenceModel, read_sentence_model

if TYPE_CHECKING:
    import onnx

MODALITIES = ("text",)

# Prefixes under which task-head checkpoints keep the base model's keys.
_KEY_PREFIXES = ("", "bert.", "roberta.", "distilbert.", "mpnet.")


def load_sentence(
    name: str, folder: Path, modalities: Sequence[str], options: LoadOptions
) -> Model:
    precision = tower_precision(name, "text", options)
    spec = read_sentence_model(folder)
    encoder_folder = spec.transformer_folder
    config_path = encoder_folder / "config.json"
    try:
        cfg = EncoderConfig.from_hf(read_json(config_path))
    except ValueError as exc:  # an architecture or option we do not build
        raise CheckpointError(str(config_path), str(exc)) from exc
    paths = weight_paths(encoder_folder, "transformers")
    tensors = TensorSource.open(paths)
    source = ", ".join(map(str, paths))
    prefix = _key_prefix(tensors, cfg, source)
    expected = encoder_weight_shapes(cfg, prefix)
    check_weights(tensors, expected, (), source, "encoder")
    leftover = [k for k in tensors if k not in expected and not is_ignored_key(k)]
    if leftover:
        raise CheckpointError(
            source, f"{len(leftover)} tensors the config does not account for", key=leftover[0]
        )
    dense_sources = [
        TensorSource.open(weight_paths(layer.folder, "transformers")) for layer in spec.dense
    ]
    for layer, dense in zip(spec.dense, dense_sources, strict=True):
        shapes = {"linear.weight": (layer.out_features, layer.in_features)}
        if layer.bias:
            shapes["linear.bias"] = (layer.out_features,)
        check_weights(dense, shapes, ("linear.",), dense.describe(), "Dense")
    graph_options = {
        "family": "sentence",
        "config": asdict(cfg),
        "prefix": prefix,
        "pooling": asdict(spec.pooling),
        "dense": [(d.in_features, d.out_features, d.bias, d.activation) for d in spec.dense],
        "precision": precision.tag,
        # The last hidden state as a second output (TEI's /embed_all).
        "outputs": ("embedding", "token_embeddings"),
    }
    weight_files = paths + [f.path for d in dense_sources for f in d.files]

    def build() -> onnx.ModelProto:
        return build_sentence_graph(
            cfg, tensors, precision, spec.pooling, spec.dense, dense_sources, prefix, True
        )

    compiled = built_session(
        weight_files,
        graph_options,
        build,
        options.threads,
        options.spinning,
        runtime=options.runtime,
    )
    dim = spec.dense[-1].out_features if spec.dense else cfg.hidden_size * len(spec.pooling.modes)
    tokenizer = encoder_tokenizer(encoder_folder, spec, cfg)
    tower = SentenceTextTower(compiled, dim, spec, cfg, tokenizer)
    return Model(name, dim, {"text": tower}, family="sentence")


def _key_prefix(tensors: TensorSource, cfg: EncoderConfig, source: str) -> str:
    for prefix in _KEY_PREFIXES:
        if next(iter(encoder_weight_shapes(cfg, prefix))) in tensors:
            return prefix
    raise CheckpointError(
        source, f"no {cfg.model_type} encoder keys found (tried prefixes {_KEY_PREFIXES})"
    )


def encoder_tokenizer(folder: Path, spec: SentenceModel, cfg: EncoderConfig) -> Tokenizer:
    """`folder`'s tokenizer.json as it is, cut at `spec.max_seq_length` (and at what the
    encoder's position table holds), padded to the longest text of a batch."""
    return hf_encoder_tokenizer(folder, cfg, spec.max_seq_length)
