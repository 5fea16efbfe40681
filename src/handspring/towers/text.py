"""Texts: tokenize -> the graph, in length-sorted batches padded only to their longest.

`TextTower` holds what every text tower shares (type checks, names, token counts);
`ClipTextTower` runs CLIP-style towers, which read the first end-of-text token (CLIP,
ImageBind). Sentence-transformers encoders are in `towers.sentence_text`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from handspring.errors import InputError
from handspring.preprocess.text import ClipTokenizer
from handspring.runtime.session import TowerSession
from handspring.towers.base import Options, Tower

# Options every text tower accepts, meaning "no prompt" when empty.
PROMPT_OPTIONS = ("prompt_name", "prompt")


@dataclass(frozen=True)
class TextTokens:
    """One text as model input."""

    ids: np.ndarray  # int64 [T], special tokens included, after truncation
    truncated: bool  # cut to the model's length
    eot: int = 0  # where a CLIP-style tower reads the text (its first end-of-text token)
    type_ids: np.ndarray | None = None  # int64 [T], for encoders that take token types
    prompt_tokens: int = 0  # leading prompt tokens that pooling leaves out

    @property
    def tokens(self) -> int:
        return len(self.ids)


class TextTower(Tower):
    modality = "text"
    batch_size = 32
    prepare_in_pool = False  # tokenizers encode a whole batch at once, in Rust
    sort_window = 8

    def describe(self, item: Any, index: int) -> str:
        return f"<text #{index}>"

    @property
    @abstractmethod
    def max_tokens(self) -> int:
        """The longest text the tower reads, in tokens; longer ones are cut."""

    @abstractmethod
    def tokenize(self, texts: Sequence[str], options: Options) -> list[TextTokens]:
        """Every text of `texts` (all strings) as model input."""

    def check_options(self, options: Options) -> None:
        """Text towers take `prompt_name` and `prompt`; this one has no prompts (the
        sentence-transformers tower overrides this), so only empty ones pass."""
        if name := options.get("prompt_name"):
            raise ValueError(f"no prompt named {name!r} (this model has none)")
        if options.get("prompt"):
            raise ValueError("this model takes no prompt")
        super().check_options({k: v for k, v in options.items() if k not in PROMPT_OPTIONS})

    def prepare(self, item: Any, name: str, options: Options) -> TextTokens:
        result = self.prepare_batch([item], [name], options)[0]
        if isinstance(result, InputError):
            raise result
        return result

    def prepare_batch(
        self, items: Sequence[Any], names: Sequence[str], options: Options
    ) -> list[Any]:
        out: list[Any] = [None] * len(items)
        rows = []
        for row, (item, name) in enumerate(zip(items, names, strict=True)):
            if isinstance(item, str):
                rows.append(row)
            else:
                out[row] = InputError(name, f"is {type(item).__name__}, not a string")
        for row, tokens in zip(rows, self.tokenize([items[r] for r in rows], options), strict=True):
            out[row] = tokens
        return out

    def length(self, prepared: TextTokens) -> int:
        return prepared.tokens


def pad_rows(rows: Sequence[np.ndarray], width: int, value: int) -> np.ndarray:
    """int64 [N, width]: each row left-aligned, the rest `value`."""
    out = np.full((len(rows), width), value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


class ClipTextTower(TextTower):
    """A causal text tower read at its first end-of-text token. Texts are padded only to
    the longest in their batch: the causal mask keeps that token blind to what follows.
    Pre-exported (Immich) graphs take ids padded to the context length instead."""

    def __init__(
        self,
        compiled: TowerSession,
        dim: int,
        tokenizer: ClipTokenizer,
        *,
        fixed_length: bool = False,
    ) -> None:
        super().__init__(compiled, dim)
        self.tokenizer = tokenizer
        self.fixed_length = fixed_length

    @property
    def max_tokens(self) -> int:
        return self.tokenizer.context_length

    def tokenize(self, texts: Sequence[str], options: Options) -> list[TextTokens]:
        batch = self.tokenizer.encode(texts)
        return [
            TextTokens(
                batch.input_ids[i, : batch.lengths[i]],
                bool(batch.truncated[i]),
                eot=int(batch.eot_index[i]),
            )
            for i in range(len(texts))
        ]

    def run(self, batch: Sequence[TextTokens]) -> np.ndarray:
        if self.fixed_length:
            return self._run_fixed_length(batch)
        width = max(t.tokens for t in batch)
        ids = pad_rows([t.ids for t in batch], width, self.tokenizer.pad_id)  # [N, T]
        eot = np.array([t.eot for t in batch], dtype=np.int64)  # [N]
        return self.session.run(None, {"input_ids": ids, "eot_index": eot})[0]

    def _run_fixed_length(self, batch: Sequence[TextTokens]) -> np.ndarray:
        graph_input = self.session.get_inputs()[0]
        ids = pad_rows([t.ids for t in batch], self.max_tokens, self.tokenizer.pad_id)
        dtype = np.int32 if "int32" in graph_input.type else np.int64
        if graph_input.shape[0] == 1:  # newer Immich exports take one text per run
            self.run_rows = 1
        return self.run_chunked({graph_input.name: ids.astype(dtype)})
