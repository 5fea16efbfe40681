"""The original photo-search embedding server: `POST /v1/embed` (a form-encoded
`query`) and `GET /_health`. Its vectors are normalised, for cosine search."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse

from handspring.server.errors import ERROR_RESPONSES, RequestError
from handspring.server.state import ServerState

router = APIRouter(tags=["Photo search"], responses=ERROR_RESPONSES)


@router.post("/v1/embed")
async def embed(request: Request, query: Annotated[str, Form()] = "") -> dict:
    state = ServerState.of(request)
    if not query.strip():
        raise RequestError(400, "query is empty", param="query")
    spec = state.pool.find(None, "text")
    result = await state.service.embed_texts(spec, [query], param="query", truncate=False)
    return {"v": result.vectors[0].tolist()}


@router.get("/_health")
async def health(request: Request) -> JSONResponse:
    ok, why = ServerState.of(request).pool.ready()
    if ok:
        return JSONResponse({"status": "healthy"})
    return JSONResponse({"status": "unhealthy", "message": why}, status_code=503)
