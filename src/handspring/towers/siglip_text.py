"""SigLIP texts: tokenize -> ids padded to the full context -> the graph.

SigLIP reads a text at its last position and has no attention mask, so the padding is
part of the input the model was trained on: every row is padded to the context length
(64), never just to the longest of its batch, and sorting by length gains nothing.

The graph is ours (`input_ids`, int64) or an Immich export (`text`, int32, and in newer
exports a batch of exactly one row). Immich's M-CLIP exports run the same way, with an
`attention_mask` beside the ids (1 on the text's tokens, 0 on the padding).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from handspring.preprocess.siglip_text import SiglipTokenizer
from handspring.runtime.session import TowerSession
from handspring.towers.base import Options
from handspring.towers.text import TextTokens, TextTower


class SiglipTextTower(TextTower):
    sort_window = 1

    def __init__(self, compiled: TowerSession, dim: int, tokenizer: SiglipTokenizer) -> None:
        super().__init__(compiled, dim)
        self.tokenizer = tokenizer
        graph_input = self.session.get_inputs()[0]
        self.input_name = graph_input.name
        self.input_dtype = np.int32 if "int32" in graph_input.type else np.int64
        if graph_input.shape[0] == 1:  # exported for one text at a time
            self.run_rows = 1
        self.takes_mask = "attention_mask" in {i.name for i in self.session.get_inputs()}

    @property
    def max_tokens(self) -> int:
        return self.tokenizer.context_length

    def tokenize(self, texts: Sequence[str], options: Options) -> list[TextTokens]:
        encoded = self.tokenizer.encode(texts)
        return [
            TextTokens(ids, bool(cut))
            for ids, cut in zip(encoded.ids, encoded.truncated, strict=True)
        ]

    def run(self, batch: Sequence[TextTokens]) -> np.ndarray:
        ids = self.tokenizer.pad([t.ids for t in batch]).astype(self.input_dtype, copy=False)
        inputs = {self.input_name: ids}  # [N, context]
        if self.takes_mask:
            lengths = np.array([len(t.ids) for t in batch])  # [N]
            positions = np.arange(ids.shape[1])  # [context]
            inputs["attention_mask"] = (positions < lengths[:, None]).astype(self.input_dtype)
        return self.run_chunked(inputs)  # -> [N, P]
