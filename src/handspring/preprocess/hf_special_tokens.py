"""The tokenizer configuration files of a transformers checkpoint, and how
transformers 5 turns them into special tokens: which ones exist, which wins
when files disagree, and their `normalized` / `special` flags (which decide
whether, say, "<|ENDOFTEXT|>" written in a text becomes the end-of-text id).

Precedence, as transformers resolves it: `added_tokens_decoder` in
tokenizer_config.json over tokenizer.json's `added_tokens` over
special_tokens_map.json; a plain-string token is `normalized=False`; among
tokens with the same text the last one wins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import AddedToken

from handspring.errors import TokenizerError

TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"

HF_DEFAULTS = {
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
}
# Order in which transformers adds named special tokens; for duplicates the last wins.
HF_NAMED_TOKENS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)

# transformers' "no limit" sentinel is 1e30; anything this large is not a real limit.
NO_LIMIT = 1_000_000


@dataclass(frozen=True)
class TokenizerConfig:
    """What tokenizer_config.json and special_tokens_map.json say (empty when absent)."""

    config: dict[str, Any]
    special_map: dict[str, Any]

    def model_max_length(self) -> int | None:
        value = self.config.get("model_max_length")
        if isinstance(value, int | float) and 0 < value < NO_LIMIT:
            return int(value)
        return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{path.parent}: {path.name} is not readable JSON ({e})") from e


def read_tokenizer_config(folder: Path) -> TokenizerConfig:
    parts = []
    for name in (TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP):
        path = folder / name
        data = _read_json(path) if path.is_file() else {}
        if not isinstance(data, dict):
            raise TokenizerError(f"{folder}: {name} is not a JSON object")
        parts.append(data)
    return TokenizerConfig(config=parts[0], special_map=parts[1])


def _as_token(value: Any) -> str | AddedToken | None:
    """A config value: a string, or an AddedToken serialized as a dict."""
    if isinstance(value, dict) and "content" in value:
        fields = {k: v for k, v in value.items() if k != "__type"}
        return AddedToken(**fields)
    if isinstance(value, str):
        return value
    return None


def _config_added_tokens(config: TokenizerConfig) -> dict[int, AddedToken] | None:
    decoder = config.config.get("added_tokens_decoder")
    if not isinstance(decoder, dict):
        return None
    tokens = {int(i): _as_token(v) for i, v in decoder.items()}
    return {i: t for i, t in tokens.items() if isinstance(t, AddedToken)}


def named_tokens(config: TokenizerConfig, json_added: dict[int, AddedToken]) -> dict[str, Any]:
    """bos/eos/unk/pad/...: CLIP defaults, then tokenizer_config.json, then
    special_tokens_map.json (only when the config has no added_tokens_decoder), each
    replaced by the added token of the same text when there is one."""
    named: dict[str, Any] = dict(HF_DEFAULTS)
    for key in HF_NAMED_TOKENS:
        if (value := _as_token(config.config.get(key))) is not None:
            named[key] = value
    added = _config_added_tokens(config)
    if added is None:
        for key in HF_NAMED_TOKENS:
            value = _as_token(config.special_map.get(key))
            if isinstance(value, AddedToken):
                value.special = True
            if value is not None:
                named[key] = value
        added = json_added
    by_text = {str(t): t for t in added.values()}
    return {key: by_text.get(str(value), value) for key, value in named.items()}


def hf_added_tokens(
    named: dict[str, Any], json_added: dict[int, AddedToken], config: TokenizerConfig
) -> list[AddedToken]:
    """The added tokens transformers 5 registers, in its order (for equal text the last wins).

    Their flags matter: a `normalized` token is also found after lowercasing.
    """
    added = _config_added_tokens(config)
    if added is None:
        added = json_added
    tokens: list[Any] = [t for _, t in sorted(added.items())]
    seen = {str(t) for t in tokens}
    for key in HF_NAMED_TOKENS:
        value = named.get(key)
        if value is not None and str(value) not in seen and value not in tokens:
            tokens.append(value)
    named_texts = {str(v) for v in named.values() if v is not None}
    return [_special_added_token(t, named_texts) for t in tokens]


def _special_added_token(token: str | AddedToken, named_texts: set[str]) -> AddedToken:
    if isinstance(token, str):
        return AddedToken(token, special=True)
    if not token.special and str(token) in named_texts:
        token.special = True
    return token


# ---------------------------------------------------------------------------
# Pipelines
