"""Text towers on a BERT-family encoder read through a Hugging Face tokenizer.json: texts,
text pairs (cross-encoders) and token-id lists, cut at the model's length from the right or,
when asked (TEI's `truncation_direction`), from the left.

A pair is cut as transformers and TEI cut one (`longest_first`: tokens come off the longer
side first). Token ids are the model's input as given, special tokens included, as TEI
takes them; an id outside the vocabulary is refused, since the graph would fail on it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from handspring.errors import InputError, TokenizerError
from handspring.models.bert import INPUT_NAMES, EncoderConfig
from handspring.runtime.session import TowerSession
from handspring.towers.base import Options
from handspring.towers.text import PROMPT_OPTIONS, TextTokens, TextTower, pad_rows

DIRECTION_OPTION = "truncation_direction"
DIRECTIONS = ("right", "left")

# A text, a (text, text) pair, or token ids.
TextInput = str | tuple[str, str] | Sequence[int]


def hf_encoder_tokenizer(folder: Path, cfg: EncoderConfig, max_seq_length: int | None) -> Tokenizer:
    """`folder`'s tokenizer.json as it is, cut at `max_seq_length` (and at what the encoder's
    position table holds), padded to the longest text of a batch."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise TokenizerError(f"{folder}: no tokenizer.json")
    tokenizer = Tokenizer.from_file(str(path))
    # RoBERTa positions start after padding_idx, so two positions are not usable.
    usable = cfg.max_position_embeddings - (
        cfg.position_padding_idx + 1 if cfg.roberta_positions else 0
    )
    tokenizer.enable_truncation(max_length=min(max_seq_length or usable, usable))
    padding = tokenizer.padding or {}
    pad_id = padding.get("pad_id", cfg.pad_token_id)
    pad_token = padding.get("pad_token") or tokenizer.id_to_token(pad_id) or "[PAD]"
    tokenizer.no_padding()
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)  # to the longest in the batch
    return tokenizer


@dataclass(frozen=True)
class TokenSpan:
    """One token as TEI's `/tokenize` shows it. Offsets are UTF-8 byte offsets into the
    text the model read (prompt included), as TEI's are; special tokens have none."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


def is_token_ids(item: object) -> bool:
    return (
        isinstance(item, list | tuple | np.ndarray)
        and len(item) > 0
        and all(isinstance(i, int | np.integer) and not isinstance(i, bool) for i in item)
    )


def is_text_pair(item: object) -> bool:
    return (
        isinstance(item, list | tuple) and len(item) == 2 and all(isinstance(s, str) for s in item)
    )


class EncoderTextTower(TextTower):
    """What the sentence, cross-encoder and SPLADE towers share: the tokenizer (cut from
    either side), prompts, token-id inputs, and the encoder's input arrays."""

    # Cross-encoders read (text, text) pairs; the others single texts.
    takes_pairs: bool = False
    # The precision the graph was built at, where the loader says ("fp32", "int8w8"...).
    precision_name: str | None = None

    def __init__(
        self,
        compiled: TowerSession,
        dim: int,
        config: EncoderConfig,
        tokenizer: Tokenizer,
        *,
        lower_case: bool = False,
        prompts: Mapping[str, str] | None = None,
        default_prompt_name: str | None = None,
    ) -> None:
        super().__init__(compiled, dim)
        self.config = config
        self.tokenizer = tokenizer  # cuts from the right
        self.lower_case = lower_case
        self._prompts = dict(prompts or {})
        self.default_prompt_name = default_prompt_name
        self.pad_id = int((tokenizer.padding or {}).get("pad_id", config.pad_token_id))
        self._cutting: dict[str | None, Tokenizer] = {"right": tokenizer}
        self._cutting_lock = threading.Lock()

    @property
    def prompts(self) -> Mapping[str, str]:  # type: ignore[override]
        return self._prompts

    @property
    def max_tokens(self) -> int:
        return int(self.tokenizer.truncation["max_length"])  # type: ignore[index]

    def cutting(self, direction: str | None) -> Tokenizer:
        """The tokenizer that cuts from `direction` ("right" or "left"), or never (None);
        each made once, from the loaded one."""
        with self._cutting_lock:
            tokenizer = self._cutting.get(direction)
            if tokenizer is None:
                tokenizer = Tokenizer.from_str(self.tokenizer.to_str())
                if direction is None:
                    tokenizer.no_truncation()
                    tokenizer.no_padding()
                else:
                    tokenizer.enable_truncation(self.max_tokens, direction=direction)
                self._cutting[direction] = tokenizer
        return tokenizer

    # ---------------------------------------------------------------- options

    def check_options(self, options: Options) -> None:
        unknown = [k for k in options if k not in (*PROMPT_OPTIONS, DIRECTION_OPTION)]
        if unknown:
            raise ValueError(f"text inputs take no option {unknown[0]!r}")
        self.direction(options)
        self.prompt(options)

    @staticmethod
    def direction(options: Options) -> str:
        direction = str(options.get(DIRECTION_OPTION) or "right").lower()
        if direction not in DIRECTIONS:
            raise ValueError(f"truncation_direction must be 'right' or 'left', not {direction!r}")
        return direction

    def prompt(self, options: Options) -> str:
        """The prompt text `options` ask for: `prompt`, else `prompt_name`, else the default."""
        if (prompt := options.get("prompt")) is not None:
            return str(prompt)
        name = options.get("prompt_name") or self.default_prompt_name
        if name is None:
            return ""
        if name not in self._prompts:
            known = ", ".join(sorted(self._prompts)) or "none"
            raise ValueError(f"no prompt named {name!r} (known: {known})")
        return self._prompts[name]

    # --------------------------------------------------------------- tokenizing

    def tokenize(self, texts: Sequence[str], options: Options) -> list[TextTokens]:
        prefix = self.prompt(options)
        skip = self.prompt_tokens_skipped(prefix) if prefix else 0
        encodings = self._encode([prefix + t for t in texts], self.direction(options))
        return [_text_tokens(e, skip) for e in encodings]

    def prompt_tokens_skipped(self, prompt: str) -> int:
        """Leading prompt tokens pooling leaves out (sentence-transformers' include_prompt)."""
        return 0

    def tokenize_pairs(
        self, pairs: Sequence[tuple[str, str]], options: Options
    ) -> list[TextTokens]:
        if not self.takes_pairs:
            raise ValueError("this model reads single texts, not pairs")
        if self.prompt(options):
            raise ValueError("a prompt cannot be used with text pairs")
        return [_text_tokens(e) for e in self._encode(pairs, self.direction(options))]

    def from_ids(self, ids: Sequence[int], direction: str) -> TextTokens:
        """Token ids as the model's input, cut to its length from `direction`."""
        row = np.asarray(ids, dtype=np.int64)
        outside = row[(row < 0) | (row >= self.config.vocab_size)]
        if outside.size:
            raise ValueError(
                f"token id {int(outside[0])} is not in the vocabulary "
                f"(ids 0..{self.config.vocab_size - 1})"
            )
        cut = len(row) > self.max_tokens
        if cut:
            row = row[: self.max_tokens] if direction == "right" else row[-self.max_tokens :]
        return TextTokens(row, cut, type_ids=np.zeros_like(row))

    def prepare_inputs(
        self, items: Sequence[TextInput], options: Options, names: Sequence[str] | None = None
    ) -> list[TextTokens]:
        """Texts, pairs and token ids (mixed) as model input, in order. An item that cannot
        be read raises InputError under its name in `names` (default `#i`); options that
        do not apply, ValueError."""
        names = names or [f"#{i}" for i in range(len(items))]
        direction = self.direction(options)
        out: list[TextTokens | None] = [None] * len(items)
        texts = [i for i, item in enumerate(items) if isinstance(item, str)]
        pairs = [i for i, item in enumerate(items) if is_text_pair(item)]
        if texts:
            encoded = self.tokenize([items[i] for i in texts], options)  # type: ignore[misc]
            for i, tokens in zip(texts, encoded, strict=True):
                out[i] = tokens
        if pairs:
            pair_items: list[tuple[str, str]] = [tuple(items[i]) for i in pairs]  # type: ignore[misc]
            for i, tokens in zip(pairs, self.tokenize_pairs(pair_items, options), strict=True):
                out[i] = tokens
        for i, item in enumerate(items):
            if out[i] is not None:
                continue
            if not is_token_ids(item):
                raise InputError(names[i], "is not a text, a pair of texts or token ids")
            if options.get("prompt_name") or options.get("prompt"):
                raise ValueError("a prompt applies to texts, not to token ids")
            try:
                out[i] = self.from_ids(item, direction)  # type: ignore[arg-type]
            except ValueError as exc:
                raise InputError(names[i], str(exc)) from None
        return out  # type: ignore[return-value]

    def prepare_batch(
        self, items: Sequence[Any], names: Sequence[str], options: Options
    ) -> list[Any]:
        out: list[Any] = [None] * len(items)
        rows = []
        for row, (item, name) in enumerate(zip(items, names, strict=True)):
            if (
                isinstance(item, str)
                or is_token_ids(item)
                or (self.takes_pairs and is_text_pair(item))
            ):
                rows.append(row)
            else:
                wanted = "a string or a pair of strings" if self.takes_pairs else "a string"
                out[row] = InputError(name, f"is {type(item).__name__}, not {wanted}")
        try:  # texts tokenize as one batch; only token ids can be refused one by one
            prepared = self.prepare_inputs(
                [items[r] for r in rows], options, [names[r] for r in rows]
            )
            for row, tokens in zip(rows, prepared, strict=True):
                out[row] = tokens
        except InputError:
            for row in rows:  # so that a bad one sinks only itself
                try:
                    out[row] = self.prepare_inputs([items[row]], options, [names[row]])[0]
                except InputError as exc:
                    out[row] = exc
        return out

    def _encode(self, inputs: Sequence[Any], direction: str) -> list[Encoding]:
        if self.lower_case:
            inputs = [_lowered(i) for i in inputs]
        return self.cutting(direction).encode_batch(list(inputs)) if inputs else []

    # ---------------------------------------------------------- /tokenize, /decode

    def spans(self, text: str, add_special_tokens: bool, options: Options) -> list[TokenSpan]:
        """The whole text's tokens (never cut), with their place in it, as TEI's `/tokenize`."""
        full = self.prompt(options) + text
        if self.lower_case:
            full = full.lower()
        encoding = self.cutting(None).encode(full, add_special_tokens=add_special_tokens)
        data = full.encode("utf-8")
        byte_at = _byte_offsets(full)
        spans = []
        for token_id, (start, stop), special, token in zip(
            encoding.ids,
            encoding.offsets,
            encoding.special_tokens_mask,
            encoding.tokens,
            strict=True,
        ):
            if special:
                spans.append(TokenSpan(token_id, token, True, None, None))
            else:
                begin, end = byte_at[start], byte_at[stop]
                piece = data[begin:end].decode("utf-8", errors="replace")
                spans.append(TokenSpan(token_id, piece, False, begin, end))
        return spans

    def decode(self, ids: Sequence[int], skip_special_tokens: bool) -> str:
        size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        if outside := [i for i in ids if not 0 <= i < size]:
            raise ValueError(f"token id {outside[0]} is not in the vocabulary (ids 0..{size - 1})")
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # ----------------------------------------------------------------- running

    def feeds(self, batch: Sequence[TextTokens]) -> dict[str, np.ndarray]:
        """The encoder's inputs for `batch`, padded to its longest item."""
        width = max(t.tokens for t in batch)
        feeds = {
            INPUT_NAMES[0]: pad_rows([t.ids for t in batch], width, self.pad_id),
            INPUT_NAMES[1]: pad_rows([np.ones(t.tokens, np.int64) for t in batch], width, 0),
        }
        if self.config.takes_token_types:
            types = [t.type_ids if t.type_ids is not None else np.zeros(0, np.int64) for t in batch]
            feeds[INPUT_NAMES[2]] = pad_rows(types, width, 0)
        return feeds


def _text_tokens(encoding: Encoding, prompt_tokens: int = 0) -> TextTokens:
    n = sum(encoding.attention_mask)
    return TextTokens(
        np.asarray(encoding.ids[:n], dtype=np.int64),
        bool(encoding.overflowing),
        type_ids=np.asarray(encoding.type_ids[:n], dtype=np.int64),
        prompt_tokens=prompt_tokens,
    )


def _lowered(item: Any) -> Any:
    return item.lower() if isinstance(item, str) else tuple(s.lower() for s in item)


def _byte_offsets(text: str) -> list[int]:
    """The UTF-8 byte offset of each character position of `text` (and of its end)."""
    if text.isascii():
        return list(range(len(text) + 1))
    offsets = [0]
    for char in text:
        offsets.append(offsets[-1] + len(char.encode("utf-8")))
    return offsets
