"""TEI's tokenizer routes: `POST /tokenize` (each token with its id, its text and where it
sits in the input) and `POST /decode`. They use the tokenizer of the model the body names,
else of the default embedding model; it must be a BERT-family model's tokenizer.json."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

from fastapi import APIRouter, Request

from handspring.server.engine.encoder_runs import check_inputs
from handspring.server.errors import RequestError
from handspring.server.inputs.tei_bodies import DecodeRequest, SimpleToken, TokenizeRequest
from handspring.server.routes.tei import TEI_RESPONSES, any_kind_model
from handspring.server.state import ServerState
from handspring.towers.encoder_text import EncoderTextTower

router = APIRouter(tags=["TEI"], responses=TEI_RESPONSES)
T = TypeVar("T")


async def _with_tokenizer(
    state: ServerState, requested: str | None, work: Callable[[EncoderTextTower], T]
) -> T:
    spec = any_kind_model(state, requested)
    async with asyncio.timeout(state.config.request_timeout_s), state.pool.lease(spec) as loaded:
        tower = next(
            (t for t in loaded.model.towers.values() if isinstance(t, EncoderTextTower)), None
        )
        if tower is None:
            raise RequestError(
                424,
                f"model {spec.name!r} has no Hugging Face tokenizer to use (BERT-family "
                "models have one)",
                param="model",
            )
        try:
            return await asyncio.to_thread(work, tower)
        except ValueError as exc:
            raise RequestError(422, str(exc)) from None


@router.post("/tokenize", response_model=list[list[SimpleToken]])
async def tokenize(body: TokenizeRequest, request: Request) -> list[list[dict[str, Any]]]:
    state = ServerState.of(request)
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    check_inputs(state, texts, "inputs")
    options = {"prompt_name": body.prompt_name} if body.prompt_name else {}

    def work(tower: EncoderTextTower) -> list[list[dict[str, Any]]]:
        try:
            tower.check_options(options)
        except ValueError as exc:
            raise ValueError(f"prompt_name: {exc}") from None
        return [
            [asdict(s) for s in tower.spans(text, body.add_special_tokens, options)]
            for text in texts
        ]

    return await _with_tokenizer(state, body.model, work)


@router.post("/decode", response_model=list[str])
async def decode(body: DecodeRequest, request: Request) -> list[str]:
    state = ServerState.of(request)
    rows: list[list[int]] = (
        [body.ids] if isinstance(body.ids[0], int) else body.ids  # type: ignore[list-item]
    )
    check_inputs(state, rows, "ids")

    def work(tower: EncoderTextTower) -> list[str]:
        texts = []
        for i, ids in enumerate(rows):
            try:
                texts.append(tower.decode(ids, body.skip_special_tokens))
            except ValueError as exc:
                raise ValueError(f"ids[{i}]: {exc}") from None
        return texts

    return await _with_tokenizer(state, body.model, work)
