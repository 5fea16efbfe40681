"""SPLADE sparse encoders (transformers `*ForMaskedLM` folders, and sentence-transformers
SparseEncoder folders) as a `Model` with one `sparse` tower: a text -> term weights over
the vocabulary (`Model.embed_sparse`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from handspring.embedder import Model
from handspring.errors import CheckpointError
from handspring.loaders.cross_encoder import gated_precision
from handspring.loaders.options import LoadOptions, log_ready
from handspring.models.splade import (
    build_splade_graph,
    decoder_keys,
    mlm_head,
    mlm_weight_shapes,
)
from handspring.runtime.session import built_session
from handspring.towers.encoder_text import hf_encoder_tokenizer
from handspring.towers.splade import MODALITY, SpladeTower
from handspring.weights.encoder_tasks import (
    check_task_weights,
    fetch_splade,
    open_task_checkpoint,
    splade_pooling,
)

if TYPE_CHECKING:
    import onnx

MODALITIES = (MODALITY,)


def load_splade(name: str, root: Path, modalities: Sequence[str], options: LoadOptions) -> Model:
    checkpoint = open_task_checkpoint(name, root, fetch_splade)
    folder, cfg = checkpoint.folder, checkpoint.config
    pooling = splade_pooling(folder.root)
    try:
        head = mlm_head(cfg)
    except ValueError as exc:
        raise CheckpointError(str(folder.transformer / "config.json"), str(exc)) from exc
    weight_key, bias_key = decoder_keys(head, checkpoint.tensors)
    decoder = {weight_key: (cfg.vocab_size, cfg.hidden_size), bias_key: (cfg.vocab_size,)}
    # A head's bias saved beside the decoder's own (tied copies) is read by neither.
    spare = {head.bias: (cfg.vocab_size,)} if bias_key != head.bias else {}
    expected = mlm_weight_shapes(cfg, head) | decoder
    check_task_weights(checkpoint, expected, "SPLADE", optional=spare)
    precision = gated_precision(name, MODALITY, options)
    graph_options = {
        "family": "splade",
        "config": asdict(cfg),
        "head": asdict(head),
        "pooling": asdict(pooling),
        "decoder": (weight_key, bias_key),
        "precision": precision.tag,
    }

    def build() -> onnx.ModelProto:
        return build_splade_graph(cfg, checkpoint.tensors, precision, head, pooling)

    compiled = built_session(
        checkpoint.paths,
        graph_options,
        build,
        options.threads,
        options.spinning,
        runtime=options.runtime,
    )
    log_ready(name, {MODALITY: compiled})
    tokenizer = hf_encoder_tokenizer(folder.transformer, cfg, folder.max_seq_length)
    tower = SpladeTower(
        compiled,
        cfg.vocab_size,
        cfg,
        tokenizer,
        prompts=folder.prompts,
        default_prompt_name=folder.default_prompt_name,
    )
    tower.precision_name = precision.tag
    return Model(name, cfg.vocab_size, {MODALITY: tower}, family="splade")
