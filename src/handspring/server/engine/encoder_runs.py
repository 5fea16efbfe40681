"""TEI's text inputs through a model's batcher: texts, text pairs and token ids, with TEI's
checks (no inputs or an empty one: 400; too many: 413; too long without truncation: 422;
a model of the wrong kind: 424) and truncation from either side.

Texts go through a tower's own tokenizer, so any text tower answers `/embed`; pairs, token
ids and left truncation need a BERT-family tower (`EncoderTextTower`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from handspring.errors import InputError
from handspring.server.config import ModelSpec
from handspring.server.engine.batcher import Overloaded
from handspring.server.engine.model_pool import LoadedModel
from handspring.server.engine.service import INLINE_TOKENIZE_CHARS
from handspring.server.errors import RequestError
from handspring.server.inputs.item_inputs import refuse_file_as_text
from handspring.server.state import ServerState
from handspring.towers.base import Tower
from handspring.towers.encoder_text import EncoderTextTower, is_text_pair
from handspring.towers.text import TextTokens

# What each tower kind is called in TEI's words, for "model X is not ...".
KINDS = {
    "text": "embedding model",
    "text-pair": "cross-encoder (re-ranker or classifier)",
    "sparse": "SPLADE model",
}
FLAGS = {
    "text": "--default-text-model",
    "text-pair": "--default-rerank-model",
    "sparse": "--default-sparse-model",
}


@dataclass(frozen=True)
class TextRun:
    model: str  # the served model's name
    tower: Any  # the tower that ran (a TextTower; often an EncoderTextTower)
    tokens: list[TextTokens]  # each input as it ran
    rows: Any  # what the run gave per input: np.ndarray [N, ...] or a list


def model_for(
    state: ServerState, requested: str | None, modality: str, status: int = 424
) -> ModelSpec:
    """The named model, or the default of that kind; `status` (TEI's 424) when no served
    model is one."""
    try:
        return state.pool.find(requested, modality)
    except RequestError as exc:
        if exc.status != 422:
            raise
        raise RequestError(
            status,
            f"no {KINDS[modality]} is served here: serve one with "
            f"--model NAME=SOURCE (and {FLAGS[modality]} NAME to choose among several)",
            param="model",
        ) from None


def kind_tower(loaded: LoadedModel, modality: str, status: int = 424) -> Tower:
    tower = loaded.model.towers.get(modality)
    if tower is None:
        raise RequestError(
            status,
            f"model {loaded.spec.name!r} is not {_a(KINDS.get(modality, modality))} "
            f"(it has: {', '.join(loaded.modalities)})",
            param="model",
        )
    return tower


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def check_inputs(
    state: ServerState, inputs: Sequence[Any], param: str, names: Sequence[str] | None = None
) -> list[str]:
    """Each input's name in messages; refuses none, too many, empty or oversized ones."""
    if not inputs:
        raise RequestError(400, f"{param}: no inputs given", param=param)
    limit = state.config.max_items
    if len(inputs) > limit:
        raise RequestError(
            413,
            f"{param}: {len(inputs)} inputs is over the limit of {limit} per request",
            param=param,
        )
    names = list(names) if names is not None else [f"{param}[{i}]" for i in range(len(inputs))]
    for name, item in zip(names, inputs, strict=True):
        texts = [item] if isinstance(item, str) else list(item) if is_text_pair(item) else []
        if (texts and not any(texts)) or (not texts and not len(item)):
            raise RequestError(400, f"{name}: the input is empty", param=param)
        for text in texts:
            refuse_file_as_text(text, name, param)
        chars = sum(map(len, texts))
        if chars > state.config.max_text_chars:
            raise RequestError(
                422,
                f"{name}: {chars:,} characters is over the limit of "
                f"{state.config.max_text_chars:,}",
                param=param,
            )
    return names


async def run_texts(
    state: ServerState,
    spec: ModelSpec,
    modality: str,
    inputs: Sequence[Any],
    *,
    param: str,
    truncate: bool | None,
    direction: str = "right",
    prompt_name: str | None = None,
    method: str = "run",
    names: Sequence[str] | None = None,
    wrong_kind_status: int = 424,
) -> TextRun:
    """Prepare `inputs` for the model's `modality` tower and run them through its batcher
    (`method` names the tower's run: `run_tokens` gives per-token rows)."""
    names = check_inputs(state, inputs, param, names)
    async with asyncio.timeout(state.config.request_timeout_s), state.pool.lease(spec) as loaded:
        tower: Any = kind_tower(loaded, modality, wrong_kind_status)
        if not hasattr(tower, method) or (method == "run_tokens" and not tower.gives_tokens):
            raise RequestError(
                424, f"model {spec.name!r} gives no per-token vectors (`embed_all`)", param="model"
            )
        options = {"prompt_name": prompt_name} if prompt_name else {}
        tokens = await _prepared(tower, inputs, options, direction, names, param)
        cut = [i for i, t in enumerate(tokens) if t.truncated]
        if cut and not (state.config.truncate if truncate is None else truncate):
            raise RequestError(
                422,
                f"{names[cut[0]]}: longer than the {tower.max_tokens} tokens {spec.name} reads; "
                "shorten it or ask for truncation",
                param=param,
            )
        variant = None if method == "run" else method
        batcher = state.pool.batcher(loaded, modality, variant, getattr(tower, method))
        try:
            rows = await batcher.submit(tokens)
        except Overloaded as exc:
            raise RequestError(429, f"overloaded: {exc}; retry later") from None
    return TextRun(spec.name, tower, tokens, rows)


async def _prepared(
    tower: Any,
    inputs: Sequence[Any],
    options: dict[str, Any],
    direction: str,
    names: Sequence[str],
    param: str,
) -> list[TextTokens]:
    plain = direction == "right" and all(isinstance(i, str) for i in inputs)
    if not plain and not isinstance(tower, EncoderTextTower):
        raise RequestError(
            422,
            f"{param}: token ids, text pairs and left truncation are read by BERT-family "
            "models (sentence-transformers, cross-encoders, SPLADE) only",
            param=param,
        )
    if isinstance(tower, EncoderTextTower):
        options = options | {"truncation_direction": direction}

        def prepare() -> list[TextTokens]:
            return tower.prepare_inputs(inputs, options, names)
    else:

        def prepare() -> list[TextTokens]:
            return tower.tokenize(list(inputs), options)

    try:
        tower.check_options(options)
        if sum(len(i) for i in inputs if isinstance(i, str)) > INLINE_TOKENIZE_CHARS:
            return await asyncio.to_thread(prepare)  # keep the event loop free
        return prepare()
    except InputError as exc:  # an id outside the vocabulary
        raise RequestError(422, f"{exc.item}: {exc.reason}", param=param) from None
    except ValueError as exc:  # an unknown prompt, a prompt with token ids or pairs
        raise RequestError(422, f"prompt_name: {exc}", param="prompt_name") from None
