"""Cross-encoders (transformers `*ForSequenceClassification`): the encoder of bert.py on a
text or a pair of texts, then the head on its first token ([CLS] / <s>), as one graph.

Heads, as transformers writes them:
- BERT: the pooler (Linear + tanh) then `classifier`.
- RoBERTa, XLM-RoBERTa, MPNet: `classifier.dense` + tanh, then `classifier.out_proj`.
- DistilBERT: `pre_classifier` + ReLU, then `classifier`.
Dropout is identity at inference. The head stays fp32 at every precision: two small
Linears on one token per item, where an int8 error would reach the score unaveraged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from handspring.graph.builder import FLOAT, Graph
from handspring.graph.layers import Precision, dense
from handspring.models.bert import EncoderConfig, encoder_tokens, encoder_weight_shapes

if TYPE_CHECKING:
    import onnx

LOGITS_OUTPUT = "logits"


@dataclass(frozen=True)
class ClassifierHead:
    prefix: str  # where the checkpoint keeps the base model's keys
    dense: str  # the Linear on the first token
    activation: str  # "tanh" | "relu"
    out: str  # the Linear to the labels
    labels: int


# model_type -> (base model prefix, first Linear, its activation, output Linear)
_HEADS = {
    "bert": ("bert.", "bert.pooler.dense", "tanh", "classifier"),
    "roberta": ("roberta.", "classifier.dense", "tanh", "classifier.out_proj"),
    "xlm-roberta": ("roberta.", "classifier.dense", "tanh", "classifier.out_proj"),
    "mpnet": ("mpnet.", "classifier.dense", "tanh", "classifier.out_proj"),
    "distilbert": ("distilbert.", "pre_classifier", "relu", "classifier"),
}


def classifier_head(cfg: EncoderConfig, labels: int) -> ClassifierHead:
    if cfg.model_type not in _HEADS:
        raise ValueError(
            f"no sequence-classification head for model_type {cfg.model_type!r} "
            f"(supported: {', '.join(_HEADS)})"
        )
    if labels < 1:
        raise ValueError(f"a classifier needs at least one label, got {labels}")
    return ClassifierHead(*_HEADS[cfg.model_type], labels=labels)


def classifier_weight_shapes(
    cfg: EncoderConfig, head: ClassifierHead
) -> dict[str, tuple[int, ...]]:
    d = cfg.hidden_size
    shapes = encoder_weight_shapes(cfg, head.prefix)
    shapes |= {f"{head.dense}.weight": (d, d), f"{head.dense}.bias": (d,)}
    shapes |= {f"{head.out}.weight": (head.labels, d), f"{head.out}.bias": (head.labels,)}
    return shapes


def build_classifier_graph(
    cfg: EncoderConfig, w: Mapping[str, np.ndarray], precision: Precision, head: ClassifierHead
) -> onnx.ModelProto:
    """Inputs as the encoder's; output `logits` float32 [B, labels]."""
    g = Graph(f"{cfg.model_type.replace('-', '_')}_classifier")
    tokens = encoder_tokens(g, cfg, w, precision, head.prefix)  # [B, T, D]
    first = g.op("Slice", tokens, g.ints([0]), g.ints([1]), g.ints([1]))  # [B, 1, D]
    x = g.op("Squeeze", first, g.ints([1]))  # [B, D]
    fp32 = Precision(int8=False)
    x = dense(g, x, w, head.dense, fp32)  # [B, D]
    x = g.op("Tanh" if head.activation == "tanh" else "Relu", x)
    logits = dense(g, x, w, head.out, fp32)  # [B, L]
    g.output(logits, LOGITS_OUTPUT, FLOAT, ["batch", head.labels])
    return g.to_model(f"{cfg.model_type} sequence classification (logits)")
