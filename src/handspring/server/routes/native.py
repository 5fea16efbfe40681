"""Handspring's own routes: texts; images, sounds and arrays by JSON or multipart upload;
and one route for any modality a model has. A bad item here does not fail the request:
its row is null and `errors` says why."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile
from pydantic import BaseModel, Field

from handspring.server.engine.service import ItemResult
from handspring.server.errors import ERROR_RESPONSES, RequestError
from handspring.server.inputs.body_fields import Dimensions, JsonBool, NonEmptyStrings
from handspring.server.inputs.item_inputs import ItemRef, parse_item_or_error
from handspring.server.state import ServerState

router = APIRouter(prefix="/api", tags=["Handspring"], responses=ERROR_RESPONSES)


class TextsRequest(BaseModel):
    texts: NonEmptyStrings
    model: str | None = None
    normalize: JsonBool = True
    dimensions: Dimensions | None = None
    truncate: JsonBool | None = None
    prompt_name: str | None = None


class ImagesRequest(BaseModel):
    images: NonEmptyStrings = Field(description="base64, data URLs, or http(s) URLs when enabled")
    model: str | None = None
    normalize: JsonBool = True
    dimensions: Dimensions | None = None


class ItemsRequest(BaseModel):
    modality: str = Field(description="text, image, audio, depth, thermal, imu: what the model has")
    inputs: NonEmptyStrings = Field(
        description="texts; or base64 / data URLs (http(s) URLs when enabled) of image or "
        "sound files; for depth and thermal, of .npy arrays or image files; for IMU, of .npy "
        "arrays or CSV"
    )
    model: str | None = None
    normalize: JsonBool = True
    dimensions: Dimensions | None = None


@router.post("/embed")
async def embed_any(body: ItemsRequest, request: Request) -> dict:
    if body.modality == "text":
        texts = TextsRequest(
            texts=body.inputs,
            model=body.model,
            normalize=body.normalize,
            dimensions=body.dimensions,
        )
        return await _embed_texts(request, texts, "inputs")  # errors name the field sent
    return await _embed_items(request, body.modality, body.inputs, "inputs", body)


@router.post("/embed/texts")
async def embed_texts(body: TextsRequest, request: Request) -> dict:
    return await _embed_texts(request, body, "texts")


async def _embed_texts(request: Request, body: TextsRequest, param: str) -> dict:
    state = ServerState.of(request)
    spec = state.pool.find(body.model, "text")
    result = await state.service.embed_texts(
        spec,
        body.texts,
        param=param,
        normalize=body.normalize,
        dimensions=body.dimensions,
        truncate=body.truncate,
        prompt_name=body.prompt_name,
        empty_text_ok=True,  # as the library (and gRPC) embed "": the tokenizer's specials
    )
    return {
        "model": result.model,
        "dim": int(result.vectors.shape[1]),
        "embeddings": result.vectors.tolist(),
        "tokens": result.tokens.tolist(),
    }


class AudioRequest(BaseModel):
    audio: NonEmptyStrings = Field(
        description="WAV, FLAC, OGG or MP3 files as base64 or data URLs (http(s) URLs when enabled)"
    )
    model: str | None = None
    normalize: JsonBool = True
    dimensions: Dimensions | None = None


@router.post("/embed/images")
async def embed_images(body: ImagesRequest, request: Request) -> dict:
    return await _embed_items(request, "image", body.images, "images", body)


@router.post("/embed/audio")
async def embed_audio(body: AudioRequest, request: Request) -> dict:
    return await _embed_items(request, "audio", body.audio, "audio", body)


async def _embed_items(
    request: Request,
    modality: str,
    inputs: list[str],
    param: str,
    body: ImagesRequest | AudioRequest | ItemsRequest,
) -> dict:
    state = ServerState.of(request)
    # One unreadable string costs its own row only, like an undecodable file.
    refs = [
        parse_item_or_error(
            x, f"{param}[{i}]", urls_allowed=state.config.fetch_urls, modality=modality
        )
        for i, x in enumerate(inputs)
    ]
    spec = state.pool.find(body.model, modality)
    result = await state.service.embed_items(
        spec,
        modality,
        refs,
        param=param,
        normalize=body.normalize,
        dimensions=body.dimensions,
        partial=True,
    )
    return _items_answer(result, refs)


@router.post("/embed/images/upload")
async def upload_images(
    request: Request,
    files: Annotated[list[UploadFile], File(description="image (or other) files")],
    model: Annotated[str | None, Form()] = None,
    normalize: Annotated[bool, Form()] = True,
    modality: Annotated[str, Form(description="what the files are: image, audio...")] = "image",
) -> dict:
    state = ServerState.of(request)
    spec = state.pool.find(model, modality)
    limit = state.config.max_items
    if len(files) > limit:
        raise RequestError(413, f"files: {len(files)} is over the limit of {limit}", param="files")
    refs = [
        ItemRef(f"files[{i}] {f.filename!r}" if f.filename else f"files[{i}]", data=await f.read())
        for i, f in enumerate(files)
    ]
    result = await state.service.embed_items(
        spec, modality, refs, param="files", normalize=normalize, partial=True
    )
    return _items_answer(result, refs)


def _items_answer(result: ItemResult, refs: list[ItemRef]) -> dict:
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
