"""Sentence-transformers text encoders (BERT, DistilBERT, XLM-RoBERTa, MPNet): prompt +
text -> tokens -> one graph (encoder, pooling, Dense).

A prompt is tokenized with its text; when the model's pooling leaves prompts out, the
graph gets a pooling mask without the prompt's tokens. Graphs built with the per-token
output also give each token's last hidden state (TEI's `/embed_all`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer

from handspring.errors import HandspringError
from handspring.models.bert import OUTPUT_NAME as TOKENS_OUTPUT
from handspring.models.bert import EncoderConfig
from handspring.models.sentence_head import EMBEDDING_OUTPUT, POOLING_MASK
from handspring.runtime.session import TowerSession
from handspring.towers.encoder_text import EncoderTextTower
from handspring.towers.text import TextTokens
from handspring.weights.sentence_transformers import SentenceModel


class SentenceTextTower(EncoderTextTower):
    def __init__(
        self,
        compiled: TowerSession,
        dim: int,
        spec: SentenceModel,
        config: EncoderConfig,
        tokenizer: Tokenizer,
    ) -> None:
        super().__init__(
            compiled,
            dim,
            config,
            tokenizer,
            lower_case=spec.do_lower_case,
            prompts=spec.prompts,
            default_prompt_name=spec.default_prompt_name,
        )
        self.spec = spec
        self.default_normalize = spec.normalize
        outputs = {o.name for o in self.session.get_outputs()}
        self.gives_tokens = TOKENS_OUTPUT in outputs
        self.pooling_name = "+".join(spec.pooling.modes)

    def prompt_tokens_skipped(self, prompt: str) -> int:
        """The prompt's tokens as sentence-transformers counts them: with the leading special
        token, without a trailing one; none when pooling reads the prompt too."""
        if self.spec.pooling.include_prompt:
            return 0
        encoding = self.tokenizer.encode(prompt.lower() if self.lower_case else prompt)
        count = sum(encoding.attention_mask)
        return count - 1 if count and encoding.special_tokens_mask[count - 1] else count

    def run(self, batch: Sequence[TextTokens]) -> np.ndarray:
        feeds = self.feeds(batch)
        if not self.spec.pooling.include_prompt:
            pooling = feeds["attention_mask"].copy()
            for row, t in enumerate(batch):
                pooling[row, : t.prompt_tokens] = 0
            feeds[POOLING_MASK] = pooling
        return self.session.run([EMBEDDING_OUTPUT], feeds)[0]

    def run_tokens(self, batch: Sequence[TextTokens]) -> list[np.ndarray]:
        """Each item's last hidden state, one row per token it ran as: [T_i, D]."""
        if not self.gives_tokens:
            raise HandspringError(f"{self.graph_path}: this graph gives no per-token vectors")
        feeds = self.feeds(batch)
        if not self.spec.pooling.include_prompt:  # the graph asks for it; tokens ignore it
            feeds[POOLING_MASK] = feeds["attention_mask"]
        tokens = self.session.run([TOKENS_OUTPUT], feeds)[0]  # [N, T, D]
        return [tokens[row, : t.tokens].copy() for row, t in enumerate(batch)]
