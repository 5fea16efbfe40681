"""Cross-encoders: a text or a (text, text) pair -> one logit per label.

Scores follow TEI's `/predict` and `/rerank`: a sigmoid on a lone logit (a reranker), a
softmax over several (a classifier), or the logits themselves when raw scores are asked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer

from handspring.models.bert import EncoderConfig
from handspring.models.cross_encoder import LOGITS_OUTPUT
from handspring.runtime.session import TowerSession
from handspring.towers.encoder_text import EncoderTextTower
from handspring.towers.text import TextTokens

MODALITY = "text-pair"


class CrossEncoderTower(EncoderTextTower):
    modality = MODALITY
    takes_pairs = True
    default_normalize = False  # logits are scores, never unit vectors

    def __init__(
        self,
        compiled: TowerSession,
        config: EncoderConfig,
        tokenizer: Tokenizer,
        labels: Sequence[str],
    ) -> None:
        super().__init__(compiled, len(labels), config, tokenizer)
        self.labels = tuple(labels)

    def run(self, batch: Sequence[TextTokens]) -> np.ndarray:
        return self.session.run([LOGITS_OUTPUT], self.feeds(batch))[0]  # [N, L]


def label_scores(logits: np.ndarray, raw: bool = False) -> np.ndarray:
    """[N, L] logits -> scores as TEI gives them: sigmoid for one label, softmax for more."""
    logits = np.asarray(logits, dtype=np.float32)
    if raw:
        return logits
    if logits.shape[-1] == 1:
        return (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)  # sigmoid, no overflow
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)
