"""Sentence-transformers text encoders (BERT, DistilBERT, XLM-RoBERTa, MPNet): prompt +
text -> tokens -> one graph (encoder, pooling, Dense).

A prompt is tokenized with its text; when the model's pooling leaves prompts out, the
graph gets a pooling mask without the prompt's tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from tokenizers import Tokenizer

from handspring.models.bert import INPUT_NAMES, EncoderConfig
from handspring.models.sentence_head import POOLING_MASK
from handspring.runtime.session import TowerSession
from handspring.towers.base import Options
from handspring.towers.text import PROMPT_OPTIONS, TextTokens, TextTower, pad_rows
from handspring.weights.sentence_transformers import SentenceModel


class SentenceTextTower(TextTower):
    def __init__(
        self,
        compiled: TowerSession,
        dim: int,
        spec: SentenceModel,
        config: EncoderConfig,
        tokenizer: Tokenizer,
    ) -> None:
        super().__init__(compiled, dim)
        self.spec = spec
        self.config = config
        self.tokenizer = tokenizer
        self.default_normalize = spec.normalize
        self.pad_id = int((tokenizer.padding or {}).get("pad_id", config.pad_token_id))

    @property
    def prompts(self) -> Mapping[str, str]:  # type: ignore[override]
        return self.spec.prompts

    @property
    def max_tokens(self) -> int:
        return int(self.tokenizer.truncation["max_length"])  # type: ignore[index]

    def check_options(self, options: Options) -> None:
        unknown = [k for k in options if k not in PROMPT_OPTIONS]
        if unknown:
            raise ValueError(f"text inputs take no option {unknown[0]!r}")
        self.prompt(options)

    def prompt(self, options: Options) -> str:
        """The prompt text `options` ask for: `prompt`, else `prompt_name`, else the default."""
        if (prompt := options.get("prompt")) is not None:
            return str(prompt)
        name = options.get("prompt_name") or self.spec.default_prompt_name
        if name is None:
            return ""
        if name not in self.spec.prompts:
            known = ", ".join(sorted(self.spec.prompts)) or "none"
            raise ValueError(f"no prompt named {name!r} (known: {known})")
        return self.spec.prompts[name]

    def tokenize(self, texts: Sequence[str], options: Options) -> list[TextTokens]:
        prefix = self.prompt(options)
        skip = self._prompt_tokens(prefix) if prefix and not self.spec.pooling.include_prompt else 0
        inputs = [prefix + t for t in texts]
        if self.spec.do_lower_case:
            inputs = [t.lower() for t in inputs]
        encodings = self.tokenizer.encode_batch(inputs) if inputs else []
        out = []
        for e in encodings:
            n = sum(e.attention_mask)
            types = np.asarray(e.type_ids[:n], dtype=np.int64)
            ids = np.asarray(e.ids[:n], dtype=np.int64)
            out.append(TextTokens(ids, bool(e.overflowing), type_ids=types, prompt_tokens=skip))
        return out

    def _prompt_tokens(self, prompt: str) -> int:
        """The prompt's tokens as sentence-transformers counts them: with the
        leading special token, without a trailing one."""
        encoding = self.tokenizer.encode(prompt.lower() if self.spec.do_lower_case else prompt)
        count = sum(encoding.attention_mask)
        return count - 1 if count and encoding.special_tokens_mask[count - 1] else count

    def run(self, batch: Sequence[TextTokens]) -> np.ndarray:
        width = max(t.tokens for t in batch)
        mask = pad_rows([np.ones(t.tokens, np.int64) for t in batch], width, 0)  # [N, T]
        feeds = {
            INPUT_NAMES[0]: pad_rows([t.ids for t in batch], width, self.pad_id),
            INPUT_NAMES[1]: mask,
        }
        if self.config.takes_token_types:
            types = [t.type_ids if t.type_ids is not None else np.zeros(0, np.int64) for t in batch]
            feeds[INPUT_NAMES[2]] = pad_rows(types, width, 0)
        if not self.spec.pooling.include_prompt:
            pooling = mask.copy()
            for row, t in enumerate(batch):
                pooling[row, : t.prompt_tokens] = 0
            feeds[POOLING_MASK] = pooling
        return self.session.run(None, feeds)[0]
