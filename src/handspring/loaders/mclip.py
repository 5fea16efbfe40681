"""M-CLIP (multilingual_clip's `MultilingualCLIP`) as a text-only `Model`: the base encoder,
the mean over the attention mask, then the Linear into the paired CLIP model's image space,
in one graph.

Tokenization is the reference's `tokenizer(texts, padding=True)` with the checkpoint's
tokenizer.json, plus one thing the reference lacks: texts are cut at the tokenizer's
`model_max_length` (and at what the position table holds), where the reference would fail
on a longer text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from handspring.embedder import Model
from handspring.loaders.options import LoadOptions, log_ready, tower_precision
from handspring.loaders.sentence import encoder_tokenizer
from handspring.models.sentence_head import build_sentence_graph
from handspring.preprocess.hf_special_tokens import read_tokenizer_config
from handspring.registry import resolve_alias
from handspring.runtime.session import built_session
from handspring.towers.sentence_text import SentenceTextTower
from handspring.weights import hub
from handspring.weights.mclip_files import (
    ENCODER_PREFIX,
    LINEAR_BIAS,
    LINEAR_WEIGHT,
    check_mclip_weights,
    fetch_mclip,
    mclip_weights,
    read_mclip_config,
)
from handspring.weights.sentence_transformers import DenseLayer, Pooling, SentenceModel

if TYPE_CHECKING:
    import onnx

MODALITIES = ("text",)
# multilingual_clip's forward: (embs * mask).sum(1) / mask.sum(1), then the Linear.
MEAN_POOLING = Pooling(("mean",))


def load_mclip(name: str, root: Path, modalities: Sequence[str], options: LoadOptions) -> Model:
    repo = resolve_alias(name)
    if not hub.is_local(repo):
        root = fetch_mclip(repo, modalities)
    config = read_mclip_config(root / "config.json")
    tensors, paths = mclip_weights(root)
    check_mclip_weights(tensors, config, ", ".join(map(str, paths)))
    precision = tower_precision(name, "text", options)
    # The Linear as a sentence-transformers Dense layer without activation (it stays fp32).
    linear = DenseLayer(root, config.transformer_dim, config.image_dim, True, "identity")
    spec = SentenceModel(
        folder=root,
        transformer_folder=root,
        pooling=MEAN_POOLING,
        dense=(linear,),
        # Unit vectors by default, as CLIP's own text towers give: they are compared
        # with CLIP image vectors by cosine.
        normalize=True,
        max_seq_length=read_tokenizer_config(root).model_max_length(),
    )
    graph_options = {
        "family": "mclip",
        "config": asdict(config.encoder),
        "dims": (config.transformer_dim, config.image_dim),
        "precision": precision.tag,
    }

    def build() -> onnx.ModelProto:
        # Read here, so a cached graph never touches the Linear's tensors.
        head: Mapping[str, np.ndarray] = {
            "linear.weight": tensors[LINEAR_WEIGHT],
            "linear.bias": tensors[LINEAR_BIAS],
        }
        return build_sentence_graph(
            config.encoder, tensors, precision, MEAN_POOLING, (linear,), [head], ENCODER_PREFIX
        )

    compiled = built_session(
        paths, graph_options, build, options.threads, options.spinning, runtime=options.runtime
    )
    log_ready(name, {"text": compiled})
    tokenizer = encoder_tokenizer(root, spec, config.encoder)
    tower = SentenceTextTower(compiled, config.image_dim, spec, config.encoder, tokenizer)
    return Model(name, config.image_dim, {"text": tower}, family="mclip")
