"""`POST /predict`, which two contracts share: Immich's machine-learning service (a
multipart or urlencoded form: `entries`, `image` or `text`) and TEI's sequence
classification (a JSON body). The content type tells them apart.

Errors are rendered here in the caller's contract, since the app's handlers know the path
only (which is Immich's). A refusal before the body is read (key, size, load) comes in
Immich's shape on this path.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from handspring.server.errors import (
    Contract,
    RequestError,
    error_body,
    not_json,
    validation_problem,
)
from handspring.server.inputs.body_fields import NO_INPUTS
from handspring.server.inputs.tei_bodies import PredictRequest, TeiError
from handspring.server.routes import immich
from handspring.server.routes.tei import TEI_RESPONSES
from handspring.server.routes.tei_scores import predict as tei_predict
from handspring.server.state import ServerState

_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")  # Immich's
_IMMICH_FORM = {
    "type": "object",
    "required": ["entries"],
    "properties": {
        "entries": {
            "type": "string",
            "description": 'e.g. {"clip": {"visual": {"modelName": "ViT-B-32__openai"}}}',
        },
        "image": {"type": "string", "format": "binary"},
        "text": {"type": "string"},
    },
}


class ImmichError(BaseModel):
    """FastAPI's HTTPException body, which is what Immich's service answers."""

    detail: str


def _inlined(schema: Any, defs: dict[str, Any]) -> Any:
    """`schema` with its `$defs` references replaced by what they name."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inlined(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
        return {k: _inlined(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inlined(v, defs) for v in schema]
    return schema


def _request_body() -> dict[str, Any]:
    tei = PredictRequest.model_json_schema()
    return {
        "required": True,
        "content": {
            "application/json": {"schema": _inlined(tei, tei.get("$defs", {}))},
            "multipart/form-data": {"schema": _IMMICH_FORM},
        },
    }


router = APIRouter(tags=["TEI", "Immich ML"])


@router.post(
    "/predict",
    openapi_extra={"requestBody": _request_body()},
    responses={
        **TEI_RESPONSES,
        400: {
            "description": "TEI (JSON body): no inputs, or an empty one. Immich (form): a "
            "form that does not parse, or neither image nor text",
            "model": TeiError | ImmichError,
        },
        200: {
            "description": "TEI (JSON body): labels by decreasing score, a list per input "
            'of a batch. Immich (form): {"clip": "[...]"} and, for images, their size.'
        },
    },
)
async def predict(request: Request) -> Response:
    if await _is_form(request):
        return await _immich(request)
    try:
        body = PredictRequest.model_validate(_json_body(await request.body()))
        return JSONResponse(await tei_predict(body, ServerState.of(request)))
    except ValidationError as exc:
        message, _ = validation_problem(exc.errors(include_url=False))
        empty = all(e["msg"] == NO_INPUTS for e in exc.errors())
        return _tei_error(400 if empty else 422, message)
    except RequestError as exc:
        return _tei_error(exc.status, exc.message)
    except TimeoutError:
        limit = ServerState.of(request).config.request_timeout_s
        return _tei_error(504, f"the request took over {limit:g} s")


def _json_body(raw: bytes) -> Any:
    """The body parsed as FastAPI parses the other routes' (so errors read the same)."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestError(422, not_json(exc.msg, exc.pos)) from None
    except UnicodeDecodeError as exc:
        raise RequestError(422, not_json(f"not UTF-8 ({exc.reason})", exc.start)) from None


async def _is_form(request: Request) -> bool:
    """Immich's multipart form, or a urlencoded one; but a JSON body sent as urlencoded
    (`curl -d '{...}'` without a content type) is TEI's. Media types ignore case."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == _FORMS[0]:
        return True
    return media_type == _FORMS[1] and not (await request.body()).lstrip().startswith(b"{")


def _tei_error(status: int, message: str) -> JSONResponse:
    return JSONResponse(error_body(Contract.TEI, status, message, None), status_code=status)


async def _immich(request: Request) -> Response:
    """Immich's form, read as its route's parameters would be. A form that does not parse
    (no boundary, a broken part) is Starlette's 400, which the app gives in Immich's shape
    on this path, as FastAPI does in Immich's service."""
    async with request.form() as form:  # closes the uploaded parts' spool files
        entries, image, text = (_given(form.get(name)) for name in ("entries", "image", "text"))
        if entries is None:
            raise RequestError(422, "entries: Field required", param="entries")
        if not isinstance(entries, str):
            raise RequestError(
                422, "entries: expected a form field (a JSON string), not a file", param="entries"
            )
        if text is not None and not isinstance(text, str):
            raise RequestError(422, "text: expected a form field, not a file", param="text")
        if isinstance(image, str):
            raise RequestError(422, "image: expected a file part", param="image")
        data = await image.read() if isinstance(image, UploadFile) else None
    return await immich.predict(request, entries, data, text)


def _given(value: UploadFile | str | None) -> UploadFile | str | None:
    """None for what FastAPI reads as a missing form field: an empty value, or an empty
    file part with no file name (a form's unfilled file input). So an empty `text` is
    Immich's 400 "Either image or text must be provided", as Immich's service answers."""
    if value == "" or (isinstance(value, UploadFile) and value.filename == "" and value.size == 0):
        return None
    return value
