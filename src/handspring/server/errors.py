"""Request errors, and the body each outside contract gives them.

Handlers raise `RequestError`; the app renders it in the shape of the contract the
path belongs to, so an OpenAI client sees `{"error": {...}}`, TEI `{"error",
"error_type"}`, Weaviate `{"error"}` and the original photo-search server
`{"message"}`, Immich's ML service `{"detail"}`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

from starlette.responses import JSONResponse

from handspring.server.inputs.body_fields import NO_INPUTS


class Contract(Enum):
    OPENAI = "openai"
    WEAVIATE = "weaviate"
    TEI = "tei"
    PHOTO_SEARCH = "photo-search"
    IMMICH = "immich"
    OPEN_INFERENCE = "open-inference"
    NATIVE = "native"


class RequestError(Exception):
    """An answer other than success: the status, a message naming the item and the
    reason, and the offending field when there is one."""

    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


# Documented on every embedding route, in the OpenAPI spec.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"description": "Bad request (the photo-search contract's validation status)"},
    401: {"description": "Missing or wrong API key"},
    404: {"description": "Unknown model"},
    413: {"description": "Body or batch over the limit"},
    422: {"description": "Invalid input; the message names the item and the reason"},
    429: {"description": "Queue full: retry later"},
    503: {"description": "A model could not be loaded, or the server is shutting down"},
    504: {"description": "The request took longer than the server's timeout"},
}

_WEAVIATE_PATHS = ("/vectorize", "/meta", "/vectors", "/.well-known/")
_TEI_PATHS = (
    "/embed",
    "/embed_all",
    "/embed_sparse",
    "/rerank",
    "/similarity",
    "/tokenize",
    "/decode",
    "/info",
    "/health",
)
# TEI's `/predict` shares its path with Immich's: routes.predict renders its own errors.
_PHOTO_SEARCH_PATHS = ("/v1/embed", "/_health")
_IMMICH_PATHS = ("/", "/ping", "/predict")


def contract_of(path: str) -> Contract:
    if path.startswith(("/v1/embeddings", "/v1/models", "/v1/rerank")):
        return Contract.OPENAI
    if path in _PHOTO_SEARCH_PATHS:
        return Contract.PHOTO_SEARCH
    if path.startswith(_WEAVIATE_PATHS):
        return Contract.WEAVIATE
    if path in _TEI_PATHS:
        return Contract.TEI
    if path in _IMMICH_PATHS:
        return Contract.IMMICH
    if path == "/v2" or path.startswith("/v2/"):
        return Contract.OPEN_INFERENCE
    return Contract.NATIVE


_OPENAI_TYPES = {
    401: "authentication_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout_error",
}
# TEI's ErrorType per status (its 424 is a model that cannot do what the route asks).
_TEI_TYPES = {
    400: "Empty",
    401: "Unauthorized",
    413: "Validation",
    422: "Validation",
    424: "Backend",
    429: "Overloaded",
    503: "Unhealthy",
}


def error_body(
    contract: Contract, status: int, message: str, param: str | None, code: str | None = None
) -> object:
    """`code`: OpenAI's machine-readable code, when the status alone does not say it (a 404
    is a model not found unless the route itself is unknown)."""
    if contract in (Contract.OPENAI, Contract.NATIVE):
        kind = _OPENAI_TYPES.get(
            status, "invalid_request_error" if status < 500 else "server_error"
        )
        code = code or {404: "model_not_found", 413: "too_large", 429: "overloaded"}.get(status)
        return {"error": {"message": message, "type": kind, "param": param, "code": code}}
    if contract is Contract.TEI:
        return {"error": message, "error_type": _TEI_TYPES.get(status, "Backend")}
    if contract is Contract.PHOTO_SEARCH:
        return {"message": message}
    if contract is Contract.IMMICH:  # FastAPI's HTTPException body, which Immich's is
        return {"detail": message}
    if status == 401:  # Weaviate's containers (and its auth suite) say exactly this
        return {"error": "Unauthorized"}
    return {"error": message}


def not_json(reason: str, position: int | None = None) -> str:
    """The message for a body that does not parse as JSON: there is no field to name."""
    where = f" at position {position}" if position is not None else ""
    return f"the request body is not JSON: {reason}{where}"


def validation_problem(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    """A request body's validation errors as one message (the first five, each naming its
    field), and the first field."""
    if errors and errors[0].get("type") == "json_invalid":
        # FastAPI's loc is ("body", offset); pydantic's JSON parser has none, and puts the
        # line and column in its reason instead.
        error = errors[0]
        offset = error["loc"][-1] if error["loc"] else None
        reason = (error.get("ctx") or {}).get("error") or error["msg"]
        return not_json(str(reason), offset if isinstance(offset, int) else None), None
    problems = []
    for error in errors[:5]:
        where = ".".join(str(p) for p in error["loc"] if p != "body") or "body"
        problems.append(f"{where}: {error['msg']}")
    first = errors[0]["loc"] if errors else ()
    return "; ".join(problems), (str(first[1]) if len(first) > 1 else None)


def validation_status(path: str, errors: Sequence[Mapping[str, Any]]) -> int:
    """422, but TEI answers a body whose only fault is an empty list with 400 ("Empty")."""
    empty = errors and all(e.get("msg") == NO_INPUTS for e in errors)
    return 400 if empty and contract_of(path) is Contract.TEI else 422


def error_response(
    path: str,
    status: int,
    message: str,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
    code: str | None = None,
) -> JSONResponse:
    """The error in `path`'s contract shape; `headers` are kept (a 405's `Allow`...)."""
    contract = contract_of(path)
    # The original photo-search server answered every bad query with 400, and Weaviate's
    # containers answer bad input with 500; limits keep their own statuses everywhere.
    if contract in (Contract.PHOTO_SEARCH, Contract.OPEN_INFERENCE) and status == 422:
        status = 400
    if contract is Contract.WEAVIATE and status in (400, 404, 422):
        status = 500
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    body = error_body(contract, status, message, param, code)
    return JSONResponse(body, status, headers=headers)
