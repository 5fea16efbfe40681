"""Weaviate's inference containers: multi2vec-clip (`/vectorize`, `/meta`, the
`.well-known` probes) and text2vec-transformers (`/vectors`).

Vectors are the model's own, unnormalised, as those containers return them.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from handspring.server.errors import ERROR_RESPONSES
from handspring.server.image_inputs import parse_image
from handspring.server.state import ServerState

# Weaviate's containers answer bad input with 500 {"error"}, and so does this server.
router = APIRouter(
    tags=["Weaviate"],
    responses={**ERROR_RESPONSES, 500: {"description": "Invalid input, as Weaviate expects it"}},
)


@router.get("/.well-known/live", status_code=204, response_class=Response)
async def live() -> Response:
    return Response(status_code=204)


@router.get("/.well-known/ready", status_code=204, response_class=Response)
async def ready(request: Request) -> Response:
    ok, _ = ServerState.of(request).pool.ready()
    return Response(status_code=204 if ok else 503)


@router.get("/meta")
async def meta(request: Request) -> dict:
    state = ServerState.of(request)
    return {"models": state.pool.status(), "version": state.version}


class VectorizeRequest(BaseModel):
    texts: list[str] = Field(default_factory=list)
    images: list[str] = Field(default_factory=list)


@router.post("/vectorize")
async def vectorize(body: VectorizeRequest, request: Request) -> dict:
    state = ServerState.of(request)
    spec = state.pool.find(None, "image")
    text_vectors: list[list[float]] = []
    image_vectors: list[list[float]] = []
    if body.texts:
        texts = await state.service.embed_texts(spec, body.texts, param="texts", normalize=False)
        text_vectors = texts.vectors.tolist()
    if body.images:
        refs = [
            parse_image(x, f"images[{i}]", urls_allowed=state.config.fetch_urls)
            for i, x in enumerate(body.images)
        ]
        images = await state.service.embed_images(spec, refs, param="images", normalize=False)
        image_vectors = images.vectors.tolist()
    return {"textVectors": text_vectors, "imageVectors": image_vectors}


class VectorsConfig(BaseModel):
    pooling_strategy: str | None = None  # the model's own pooling is used; see the README
    task_type: str | None = None  # a prompt name, for models that have prompts
    dimensions: int | None = Field(default=None, ge=1)


class VectorsRequest(BaseModel):
    text: str | None = None
    texts: list[str] | None = None
    config: VectorsConfig = Field(default_factory=VectorsConfig)


@router.post("/vectors")
@router.post("/vectors/", include_in_schema=False)
async def vectors(body: VectorsRequest, request: Request) -> dict:
    state = ServerState.of(request)
    spec = state.pool.find(None, "text")
    batch = body.texts is not None
    texts = body.texts if batch else [body.text if body.text is not None else ""]
    prompt = await state.prompt_if_known(spec, body.config.task_type)
    result = await state.service.embed_texts(
        spec,
        texts or [],
        param="texts" if batch else "text",
        normalize=None,
        dimensions=body.config.dimensions,
        prompt_name=prompt,
    )
    dim = int(result.vectors.shape[1])
    if batch:
        return {"vectors": result.vectors.tolist(), "dims": dim}
    return {"text": body.text or "", "vector": result.vectors[0].tolist(), "dim": dim}
