"""The Open Inference Protocol over REST (KServe v2 / Triton): `/v2`, `/v2/health/*`,
`/v2/models/{name}[/versions/{version}][/ready|/infer]`. The protocol's rules are in
`engine.open_inference`, shared with gRPC.

Inputs are BYTES: in JSON, `data` holds strings (flat, or nested row-major), texts as they
are and files (images, sounds) as base64 or data URLs. Triton's binary tensor extension is
read too (`Inference-Header-Content-Length`, inputs with `binary_data_size`), which is how
Triton's HTTP client sends BYTES by default. The embedding comes back as JSON `data`, or as
binary after the JSON when the request asks (`binary_data_output` in its parameters, or
`binary_data` on the output). Errors are `{"error": message}`, 400 for a bad request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException

from handspring.server.engine import open_inference as oip
from handspring.server.errors import RequestError, not_json, validation_problem
from handspring.server.inputs.body_fields import NotEmpty
from handspring.server.state import ServerState

HEADER_LENGTH = "inference-header-content-length"
BINARY_SIZE = "binary_data_size"


def kserve_error(status: int, message: str) -> JSONResponse:
    # KServe answers every request it cannot take with 400; the other statuses keep
    # their meaning (401 key, 404 model, 413 size, 429 load, 503 not ready).
    return JSONResponse({"error": message}, 400 if status == 422 else status)


class KServeRoute(APIRoute):
    """Errors in KServe's shape, `{"error": message}`, whatever raised them in a handler."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answered(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestError as exc:
                return kserve_error(exc.status, exc.message)
            except RequestValidationError as exc:
                return kserve_error(400, validation_problem(exc.errors())[0])
            except HTTPException as exc:  # a body over the limit, found while it is read
                return kserve_error(exc.status_code, str(exc.detail))
            except TimeoutError:
                limit = ServerState.of(request).config.request_timeout_s
                return kserve_error(504, f"the request took over {limit:g} s")

        return answered


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": 'Bad request: `{"error": message}` names the input and the reason'},
    401: {"description": "Missing or wrong API key"},
    404: {"description": "Unknown model or version"},
    413: {"description": "Body or batch over the limit"},
    429: {"description": "Overloaded: retry later"},
    503: {"description": "Not ready, a model could not be loaded, or shutting down"},
    504: {"description": "The request took longer than the server's timeout"},
}

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol"], route_class=KServeRoute)


# ----------------------------------------------------------------- bodies


class ServerMetadataResponse(BaseModel):
    name: str
    version: str
    extensions: list[str]


class LiveResponse(BaseModel):
    live: bool


class ReadyResponse(BaseModel):
    ready: bool


class ModelReadyResponse(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadataResponse(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: Annotated[list[RequestInput], Field(min_length=1), NotEmpty]
    # Empty or absent: every output (there is one).
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[float] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


# ----------------------------------------------------------------- server


@router.get("", response_model=ServerMetadataResponse, responses=ERRORS)
async def server_metadata() -> dict:
    return {
        "name": oip.SERVER_NAME,
        "version": oip.SERVER_VERSION,
        "extensions": list(oip.EXTENSIONS),
    }


@router.get("/health/live", response_model=LiveResponse, responses=ERRORS)
async def live() -> dict:
    return {"live": True}


@router.get("/health/ready", response_model=ReadyResponse, responses=ERRORS)
async def ready(request: Request) -> dict:
    ok, why = ServerState.of(request).pool.ready()
    if not ok:
        raise RequestError(503, f"not ready: {why}")
    return {"ready": True}


# ------------------------------------------------------------------ model


@router.get("/models/{name}", response_model=ModelMetadataResponse, responses=ERRORS)
@router.get(
    "/models/{name}/versions/{version}",
    response_model=ModelMetadataResponse,
    responses=ERRORS,
)
async def model_metadata(request: Request, name: str, version: str = "") -> dict:
    meta = await oip.model_metadata(ServerState.of(request), name, version)
    return {
        "name": meta.name,
        "versions": list(meta.versions),
        "platform": meta.platform,
        "inputs": [_tensor(t) for t in meta.inputs],
        "outputs": [_tensor(t) for t in meta.outputs],
    }


def _tensor(tensor: oip.TensorMetadata) -> dict:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}


@router.get("/models/{name}/ready", response_model=ModelReadyResponse, responses=ERRORS)
@router.get(
    "/models/{name}/versions/{version}/ready",
    response_model=ModelReadyResponse,
    responses=ERRORS,
)
async def model_ready(request: Request, name: str, version: str = "") -> dict:
    state = ServerState.of(request)
    if not oip.model_ready(state, name, version):
        raise RequestError(503, f"model {name!r} is not ready: {state.pool.ready()[1]}")
    return {"name": name, "ready": True}


def _inline(schema: dict) -> dict:
    """A pydantic schema with its `$defs` written in place, for an operation's body."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    return walk(schema)


# The body is read by hand (JSON, or JSON then binary tensors): its schema is declared here.
INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _inline(InferenceRequest.model_json_schema())}},
    }
}


@router.post(
    "/models/{name}/infer",
    response_model=InferenceResponse,
    responses=ERRORS,
    openapi_extra=INFER_BODY,
)
@router.post(
    "/models/{name}/versions/{version}/infer",
    response_model=InferenceResponse,
    responses=ERRORS,
    openapi_extra=INFER_BODY,
)
async def infer(request: Request, name: str, version: str = "") -> Response:
    state = ServerState.of(request)
    oip.served(state, name, version)  # an unknown model is named before the body is read
    body, binary = _split_body(await request.body(), request.headers.get(HEADER_LENGTH))
    requested = [o.name for o in body.outputs or ()]
    oip.check_outputs(requested)
    outcome = await oip.infer(
        state, name, version, _input_tensors(body, binary), body.parameters or {}
    )
    vectors = outcome.vectors
    output: dict[str, Any] = {
        "name": oip.OUTPUT,
        "datatype": oip.OUTPUT_DATATYPE,
        "shape": list(vectors.shape),
    }
    answer: dict[str, Any] = {
        "model_name": outcome.model,
        "model_version": outcome.version,
        "outputs": [output],
    }
    if body.id is not None:
        answer["id"] = body.id
    if not _binary_output(body):
        output["data"] = vectors.ravel().tolist()
        return JSONResponse(answer)
    raw = vectors.astype("<f4", copy=False).tobytes()
    output["parameters"] = {BINARY_SIZE: len(raw)}
    header = json.dumps(answer, separators=(",", ":")).encode()
    return Response(
        header + raw,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


def _split_body(raw: bytes, header_length: str | None) -> tuple[InferenceRequest, bytes]:
    """The JSON request, and the binary tensors after it (Triton's binary extension)."""
    binary = b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(raw):
            raise RequestError(
                400,
                f"Inference-Header-Content-Length {header_length!r} is not a length within "
                f"the body's {len(raw)} bytes",
            )
        raw, binary = raw[: int(header_length)], raw[int(header_length) :]
    try:
        return InferenceRequest.model_validate(json.loads(raw)), binary
    except json.JSONDecodeError as exc:
        raise RequestError(400, not_json(exc.msg, exc.pos)) from None
    except UnicodeDecodeError as exc:
        raise RequestError(400, not_json(f"not UTF-8 ({exc.reason})", exc.start)) from None
    except ValidationError as exc:
        raise RequestError(400, validation_problem(exc.errors())[0]) from None


def _input_tensors(body: InferenceRequest, binary: bytes) -> list[oip.InputTensor]:
    tensors = []
    offset = 0
    for tensor in body.inputs:
        what = f"input {tensor.name!r}"
        size = (tensor.parameters or {}).get(BINARY_SIZE)
        elements: list[bytes | str]
        if size is not None:
            if tensor.data is not None:
                raise RequestError(400, f"{what}: has both data and {BINARY_SIZE}: give one")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise RequestError(400, f"{what}: {BINARY_SIZE} must be a byte count")
            if offset + size > len(binary):
                raise RequestError(
                    400,
                    f"{what}: {BINARY_SIZE} {size}, but {len(binary) - offset} binary bytes "
                    "remain after the JSON",
                )
            chunk = binary[offset : offset + size]
            offset += size
            bytes_type = tensor.datatype == oip.INPUT_DATATYPE
            elements = list(oip.split_bytes_tensor(chunk, what)) if bytes_type else []
        elif tensor.datatype == oip.INPUT_DATATYPE:  # other types are refused by their type
            elements = _flat(tensor.data or [], what)
        else:
            elements = []
        tensors.append(oip.InputTensor(tensor.name, tensor.datatype, tuple(tensor.shape), elements))
    if offset != len(binary):
        raise RequestError(
            400, f"{len(binary) - offset} binary bytes after the JSON belong to no input"
        )
    return tensors


def _flat(data: list[Any], what: str) -> list[bytes | str]:
    """`data` in row-major order: BYTES elements are JSON strings, nested or not."""
    flat: list[bytes | str] = []
    stack = [iter(data)]
    while stack:
        value = next(stack[-1], _END)
        if value is _END:
            stack.pop()
        elif isinstance(value, list):
            stack.append(iter(value))
        elif isinstance(value, str):
            flat.append(value)
        else:
            raise RequestError(
                400,
                f"{what}: element {len(flat)} is {type(value).__name__}, not a string "
                "(BYTES data are strings: texts, or files as base64)",
            )
    return flat


_END = object()


def _binary_output(body: InferenceRequest) -> bool:
    """Binary when the request asks: an output's `binary_data` overrides the request's
    `binary_data_output` (Triton's and KServe's rule)."""
    wanted = bool((body.parameters or {}).get("binary_data_output", False))
    for output in body.outputs or ():
        if output.name == oip.OUTPUT and "binary_data" in (output.parameters or {}):
            wanted = bool((output.parameters or {})["binary_data"])
    return wanted
