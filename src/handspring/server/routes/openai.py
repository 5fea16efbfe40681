"""OpenAI `POST /v1/embeddings` (and `GET /v1/models`), with images, sounds and arrays
through the same route as data URLs or base64, chosen by `modality` as infinity does."""

from __future__ import annotations

import base64
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from handspring.server.errors import ERROR_RESPONSES, RequestError
from handspring.server.inputs.body_fields import (
    Dimensions,
    NonEmptyStrings,
    NotEmpty,
    TokenIdLists,
    TokenIds,
)
from handspring.server.inputs.item_inputs import parse_item
from handspring.server.state import ServerState

router = APIRouter(tags=["OpenAI"], responses=ERROR_RESPONSES)


class EmbeddingRequest(BaseModel):
    # OpenAI refuses an empty list too.
    input: Annotated[str | NonEmptyStrings | TokenIds | TokenIdLists, NotEmpty]
    model: str | None = None
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Dimensions | None = None
    user: str | None = None
    modality: str = Field(
        default="text", description="text, image, audio, ...: any modality the model has"
    )


def encode_vector(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":  # little-endian float32, as the openai client decodes it
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> dict:
    state = ServerState.of(request)
    inputs = [body.input] if isinstance(body.input, str) else body.input
    if any(not isinstance(x, str) for x in inputs):
        raise RequestError(
            422, "input: token-id arrays are not accepted; send the text", param="input"
        )
    texts: list[str] = inputs  # type: ignore[assignment]
    modality = body.modality
    if "modality" not in body.model_fields_set and all(
        x.startswith("data:image/") for x in texts
    ):  # images sent as data URLs name themselves: never embedded as words
        modality = "image"
    spec = state.pool.find(body.model, modality)
    if modality != "text":
        refs = [
            parse_item(x, f"input[{i}]", urls_allowed=state.config.fetch_urls, modality=modality)
            for i, x in enumerate(texts)
        ]
        result = await state.service.embed_items(
            spec, modality, refs, param="input", dimensions=body.dimensions
        )
        vectors, tokens = result.vectors, 0
    else:
        text_result = await state.service.embed_texts(
            spec, texts, param="input", dimensions=body.dimensions
        )
        vectors, tokens = text_result.vectors, int(text_result.tokens.sum())
    encoding = body.encoding_format or "float"
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "embedding": encode_vector(v, encoding), "index": i}
            for i, v in enumerate(vectors)
        ],
        "model": spec.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@router.get("/v1/models")
async def models(request: Request) -> dict:
    state = ServerState.of(request)
    return {
        "object": "list",
        "data": [
            {"id": spec.name, "object": "model", "created": 0, "owned_by": "handspring"}
            for spec in state.pool.specs.values()
        ],
    }
