"""Handspring's own routes: texts, and images by JSON or multipart upload. A bad image
here does not fail the request: its row is null and `errors` says why."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile
from pydantic import BaseModel, Field

from handspring.server.errors import ERROR_RESPONSES, RequestError
from handspring.server.image_inputs import ImageRef, parse_image
from handspring.server.service import ImageResult
from handspring.server.state import ServerState

router = APIRouter(prefix="/api", tags=["Handspring"], responses=ERROR_RESPONSES)


class TextsRequest(BaseModel):
    texts: list[str]
    model: str | None = None
    normalize: bool = True
    dimensions: int | None = Field(default=None, ge=1)
    truncate: bool | None = None
    prompt_name: str | None = None


class ImagesRequest(BaseModel):
    images: list[str] = Field(description="base64, data URLs, or http(s) URLs when enabled")
    model: str | None = None
    normalize: bool = True
    dimensions: int | None = Field(default=None, ge=1)


@router.post("/embed/texts")
async def embed_texts(body: TextsRequest, request: Request) -> dict:
    state = ServerState.of(request)
    spec = state.pool.find(body.model, "text")
    result = await state.service.embed_texts(
        spec,
        body.texts,
        param="texts",
        normalize=body.normalize,
        dimensions=body.dimensions,
        truncate=body.truncate,
        prompt_name=body.prompt_name,
    )
    return {
        "model": result.model,
        "dim": int(result.vectors.shape[1]),
        "embeddings": result.vectors.tolist(),
        "tokens": result.tokens.tolist(),
    }


@router.post("/embed/images")
async def embed_images(body: ImagesRequest, request: Request) -> dict:
    state = ServerState.of(request)
    refs = [
        parse_image(x, f"images[{i}]", urls_allowed=state.config.fetch_urls)
        for i, x in enumerate(body.images)
    ]
    spec = state.pool.find(body.model, "image")
    result = await state.service.embed_images(
        spec,
        refs,
        param="images",
        normalize=body.normalize,
        dimensions=body.dimensions,
        partial=True,
    )
    return _images_answer(result, refs)


@router.post("/embed/images/upload")
async def upload_images(
    request: Request,
    files: Annotated[list[UploadFile], File(description="image files")],
    model: Annotated[str | None, Form()] = None,
    normalize: Annotated[bool, Form()] = True,
) -> dict:
    state = ServerState.of(request)
    spec = state.pool.find(model, "image")
    limit = state.config.max_items
    if len(files) > limit:
        raise RequestError(413, f"files: {len(files)} is over the limit of {limit}", param="files")
    refs = [
        ImageRef(f"files[{i}] {f.filename!r}" if f.filename else f"files[{i}]", data=await f.read())
        for i, f in enumerate(files)
    ]
    result = await state.service.embed_images(
        spec, refs, param="files", normalize=normalize, partial=True
    )
    return _images_answer(result, refs)


def _images_answer(result: ImageResult, refs: list[ImageRef]) -> dict:
    rows = [None if np.isnan(v).any() else v.tolist() for v in result.vectors]
    return {
        "model": result.model,
        "dim": int(result.vectors.shape[1]),
        "embeddings": rows,
        "errors": [
            {"index": i, "item": refs[i].item, "reason": reason}
            for i, reason in sorted(result.errors.items())
        ],
    }


@router.get("/models")
async def models(request: Request) -> dict:
    return {"models": ServerState.of(request).pool.status()}
