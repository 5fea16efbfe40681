"""Cross-encoders (rerankers and text classifiers: transformers `*ForSequenceClassification`
and sentence-transformers CrossEncoder folders) as a `Model` with one `text-pair` tower:
a text or a pair of texts -> one logit per label (`Model.score`, `Model.rank`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from handspring.embedder import Model
from handspring.errors import CheckpointError
from handspring.graph.layers import Precision
from handspring.loaders.options import LoadOptions, log_ready, tower_precision
from handspring.models.cross_encoder import (
    build_classifier_graph,
    classifier_head,
    classifier_weight_shapes,
)
from handspring.registry import known_model
from handspring.runtime.session import built_session
from handspring.towers.cross_encoder import MODALITY, CrossEncoderTower
from handspring.towers.encoder_text import hf_encoder_tokenizer
from handspring.weights.encoder_tasks import (
    check_task_weights,
    cross_encoder_modules,
    fetch_cross_encoder,
    labels_of,
    open_task_checkpoint,
)

if TYPE_CHECKING:
    import onnx

MODALITIES = (MODALITY,)
log = logging.getLogger("handspring")


def gated_precision(name: str, modality: str, options: LoadOptions) -> Precision:
    """int8 only where the registry holds a measured gate for this model's tower; fp32
    otherwise, said in the log. Scores and term weights move more under int8 than
    embeddings do (tests/test_cross_encoder.py and test_splade.py measure it), so an
    unmeasured model is not run at int8 on trust, as an embedding model is."""
    if not options.precision.int8:
        return options.precision
    known = known_model(name)
    if known is None or known.gate(modality) is None:
        log.warning(
            "%s: int8 has not been measured for this %s tower; running it in fp32", name, modality
        )
        return Precision(int8=False)
    return tower_precision(name, modality, options)  # refuses int8 where the gate failed


def load_cross_encoder(
    name: str, root: Path, modalities: Sequence[str], options: LoadOptions
) -> Model:
    checkpoint = open_task_checkpoint(name, root, fetch_cross_encoder)
    folder, cfg = checkpoint.folder, checkpoint.config
    cross_encoder_modules(folder.root)
    config_path = str(folder.transformer / "config.json")
    labels = labels_of(folder.config, config_path)
    try:
        head = classifier_head(cfg, len(labels))
    except ValueError as exc:
        raise CheckpointError(config_path, str(exc)) from exc
    check_task_weights(checkpoint, classifier_weight_shapes(cfg, head), "cross-encoder")
    precision = gated_precision(name, MODALITY, options)
    graph_options = {
        "family": "cross-encoder",
        "config": asdict(cfg),
        "head": asdict(head),
        "precision": precision.tag,
    }

    def build() -> onnx.ModelProto:
        return build_classifier_graph(cfg, checkpoint.tensors, precision, head)

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
    tower = CrossEncoderTower(compiled, cfg, tokenizer, labels)
    tower.precision_name = precision.tag
    return Model(name, len(labels), {MODALITY: tower}, family="cross-encoder")
