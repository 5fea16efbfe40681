"""Weaviate's inference containers: multi2vec-clip and multi2vec-bind (`/vectorize`,
`/meta`, the `.well-known` probes) and text2vec-transformers (`/vectors`).

Vectors are the model's own, unnormalised, as those containers return them.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from handspring.server.errors import ERROR_RESPONSES, RequestError
from handspring.server.inputs.body_fields import Dimensions
from handspring.server.inputs.item_inputs import parse_item
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
    """multi2vec-clip's body; multi2vec-bind adds a list per ImageBind modality. Every item
    but texts is base64 of a file: images, sounds; depth and thermal as `.npy` arrays or image
    files, IMU as `.npy` or CSV (converted as multi2vec-bind's container does)."""

    texts: list[str] = Field(default_factory=list)
    images: list[str] = Field(default_factory=list)
    audio: list[str] = Field(default_factory=list)
    depth: list[str] = Field(default_factory=list)
    thermal: list[str] = Field(default_factory=list)
    imu: list[str] = Field(default_factory=list)
    video: list[str] = Field(default_factory=list)


# Body field -> (modality, answer field).
_VECTORIZE = {
    "images": ("image", "imageVectors"),
    "audio": ("audio", "audioVectors"),
    "depth": ("depth", "depthVectors"),
    "thermal": ("thermal", "thermalVectors"),
    "imu": ("imu", "imuVectors"),
}


@router.post("/vectorize")
async def vectorize(body: VectorizeRequest, request: Request) -> dict:
    state = ServerState.of(request)
    if body.video:
        raise RequestError(422, "video: not supported by this server", param="video")
    # One model for every list, so all the vectors share its space; texts go to that
    # model's text tower, as multi2vec-clip and multi2vec-bind do.
    given = [modality for param, (modality, _) in _VECTORIZE.items() if getattr(body, param)]
    spec = state.pool.find_for(None, given or ["image"])
    answer: dict[str, list[list[float]]] = {"textVectors": [], "imageVectors": []}
    if body.texts:
        # Weaviate sends an object's empty text property as "", and multi2vec-clip's
        # container embeds it: refusing it would fail the object's import.
        texts = await state.service.embed_texts(
            spec, body.texts, param="texts", normalize=False, empty_text_ok=True
        )
        answer["textVectors"] = texts.vectors.tolist()
    for param, (modality, field) in _VECTORIZE.items():
        values: list[str] = getattr(body, param)
        if not values:
            continue
        refs = [
            parse_item(x, f"{param}[{i}]", urls_allowed=state.config.fetch_urls, modality=modality)
            for i, x in enumerate(values)
        ]
        result = await state.service.embed_items(spec, modality, refs, param=param, normalize=False)
        answer[field] = result.vectors.tolist()
    return answer


class VectorsConfig(BaseModel):
    pooling_strategy: str | None = None  # the model's own pooling is used; see the README
    task_type: str | None = None  # a prompt name, for models that have prompts
    dimensions: Dimensions | None = None


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
    if body.texts is not None:
        texts, param = body.texts, "texts"
    elif body.text is not None:
        texts, param = [body.text], "text"
    else:  # text2vec-transformers' `text` is required
        raise RequestError(422, "text: Field required (or texts, for a batch)", param="text")
    prompt = await state.prompt_if_known(spec, body.config.task_type)
    result = await state.service.embed_texts(
        spec,
        texts,
        param=param,
        normalize=None,
        dimensions=body.config.dimensions,
        prompt_name=prompt,
        empty_ok=batch,  # as /vectorize: an empty list gets an empty list
    )
    dim = int(result.vectors.shape[1])
    if batch:
        return {"vectors": result.vectors.tolist(), "dims": dim}
    return {"text": body.text, "vector": result.vectors[0].tolist(), "dim": dim}
