"""Hugging Face text-embeddings-inference: `POST /embed`, `GET /info`, `GET /health`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from handspring import __version__
from handspring.server.body_fields import Dimensions, NonEmptyStrings, NotEmpty
from handspring.server.errors import ERROR_RESPONSES
from handspring.server.state import ServerState

router = APIRouter(tags=["TEI"], responses=ERROR_RESPONSES)


class EmbedRequest(BaseModel):
    inputs: Annotated[str | NonEmptyStrings, NotEmpty]  # TEI refuses an empty batch too
    truncate: bool | None = None  # None: the server's setting
    normalize: bool = True
    dimensions: Dimensions | None = None
    prompt_name: str | None = None


@router.post("/embed")
async def embed(body: EmbedRequest, request: Request) -> list[list[float]]:
    state = ServerState.of(request)
    spec = state.pool.find(None, "text")
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    result = await state.service.embed_texts(
        spec,
        texts,
        param="inputs",
        normalize=body.normalize,
        dimensions=body.dimensions,
        truncate=body.truncate,
        prompt_name=body.prompt_name,
    )
    return result.vectors.tolist()


@router.get("/info")
async def info(request: Request) -> dict:
    state = ServerState.of(request)
    spec = state.pool.find(None, "text")
    return {
        "model_id": spec.source,
        "model_sha": None,
        "model_dtype": "float32" if spec.precision == "fp32" else "int8",
        "model_type": {"embedding": {"pooling": "model"}},
        "max_concurrent_requests": state.config.max_queue,
        "max_input_length": await state.max_tokens(spec),
        "max_batch_tokens": None,
        "max_batch_requests": state.config.max_batch,
        "max_client_batch_size": state.config.max_items,
        "auto_truncate": state.config.truncate,
        "tokenization_workers": 1,
        "version": __version__,
    }


@router.get("/health", response_class=Response)
async def health(request: Request) -> Response:
    ok, _ = ServerState.of(request).pool.ready()
    return Response(status_code=200 if ok else 503)
