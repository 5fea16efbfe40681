"""Hugging Face text-embeddings-inference: `POST /embed`, `/embed_all`, `/embed_sparse`,
`GET /info`, `GET /health` (reranking and classification: tei_scores; tokens: tei_tokens).

Inputs are texts or token ids, cut from the right or the left; answers are always nested
one level per input, as TEI's. Each route uses the model the body's `model` names, else
the server's default of the kind it needs (an embedding, a SPLADE model).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from handspring import __version__
from handspring.embedder import postprocess
from handspring.server.config import ModelSpec
from handspring.server.engine.encoder_runs import kind_tower, model_for, run_texts
from handspring.server.errors import ERROR_RESPONSES, Contract, RequestError, error_body
from handspring.server.inputs.tei_bodies import (
    EmbedAllRequest,
    EmbedRequest,
    EmbedSparseRequest,
    Info,
    Inputs,
    SparseValue,
    TeiError,
    direction_of,
)
from handspring.server.state import ServerState
from handspring.towers.splade import sparse_entries

TEI_RESPONSES: dict[int | str, dict[str, object]] = ERROR_RESPONSES | {
    400: {"description": "No inputs, or an empty one", "model": TeiError},
    424: {"description": "The model is not of the kind this route needs", "model": TeiError},
}
router = APIRouter(tags=["TEI"], responses=TEI_RESPONSES)


def input_list(inputs: Inputs) -> list[str | list[int]]:
    """TEI's Input: one text or token-id list, or a list of them."""
    if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
        return [inputs]  # type: ignore[list-item]
    return list(inputs)  # type: ignore[arg-type]


@router.post("/embed", response_model=list[list[float]])
async def embed(body: EmbedRequest, request: Request) -> Response:
    state = ServerState.of(request)
    spec = model_for(state, body.model, "text")
    ran = await run_texts(
        state,
        spec,
        "text",
        input_list(body.inputs),
        param="inputs",
        truncate=body.truncate,
        direction=direction_of(body.truncation_direction),
        prompt_name=body.prompt_name,
    )
    dimensions = _dimensions(ran.tower.dim, body.dimensions)
    return JSONResponse(postprocess(ran.rows, body.normalize, dimensions).tolist())


@router.post("/embed_all", response_model=list[list[list[float]]])
async def embed_all(body: EmbedAllRequest, request: Request) -> Response:
    """Each input's last hidden state, one vector per token (special tokens included)."""
    state = ServerState.of(request)
    spec = model_for(state, body.model, "text")
    ran = await run_texts(
        state,
        spec,
        "text",
        input_list(body.inputs),
        param="inputs",
        truncate=body.truncate,
        direction=direction_of(body.truncation_direction),
        prompt_name=body.prompt_name,
        method="run_tokens",
    )
    return JSONResponse([rows.tolist() for rows in ran.rows])


@router.post("/embed_sparse", response_model=list[list[SparseValue]])
async def embed_sparse(body: EmbedSparseRequest, request: Request) -> Response:
    """SPLADE term weights: each input's nonzero entries, by vocabulary index."""
    state = ServerState.of(request)
    spec = model_for(state, body.model, "sparse")
    ran = await run_texts(
        state,
        spec,
        "sparse",
        input_list(body.inputs),
        param="inputs",
        truncate=body.truncate,
        direction=direction_of(body.truncation_direction),
        prompt_name=body.prompt_name,
    )
    answer = []
    for row in ran.rows:
        indices, values = sparse_entries(row)
        answer.append(
            [{"index": int(i), "value": float(v)} for i, v in zip(indices, values, strict=True)]
        )
    return JSONResponse(answer)


def _dimensions(dim: int, dimensions: int | None) -> int | None:
    if dimensions is None or dimensions == dim:
        return None
    if not 0 < dimensions < dim:
        raise RequestError(
            422, f"dimensions must be between 1 and {dim}, got {dimensions}", param="dimensions"
        )
    return dimensions


# ------------------------------------------------------------------ /info, /health

# The tower kinds /info describes, in the order a model is picked when none is named.
_INFO_KINDS = ("text", "text-pair", "sparse")


@router.get("/info", response_model=Info)
async def info(request: Request, model: str | None = None) -> dict:
    """The default model (an embedding model first, else a cross-encoder, else a SPLADE
    model), or the one `?model=` names, in TEI's Info shape."""
    state = ServerState.of(request)
    spec = any_kind_model(state, model)
    async with state.pool.lease(spec) as loaded:
        kind = next((k for k in _INFO_KINDS if k in loaded.model.towers), None)
        if kind is None:
            raise RequestError(
                424, f"model {spec.name!r} has no text tower to describe", param="model"
            )
        tower = kind_tower(loaded, kind)
        max_tokens = int(tower.max_tokens)
        model_type = _model_type(kind, tower)
        # What the graph runs at: a cross-encoder or SPLADE model without an int8 gate
        # runs fp32 whatever was asked.
        precision = getattr(tower, "precision_name", None) or spec.precision
    return {
        "model_id": spec.source,
        "model_sha": None,
        "model_dtype": "float32" if precision == "fp32" else "int8",
        "model_type": model_type,
        "served_model_name": spec.name,
        "max_concurrent_requests": state.config.max_queue,
        "max_input_length": max_tokens,
        # The most tokens one engine run holds: a full batch of the longest inputs.
        "max_batch_tokens": state.config.max_batch * max_tokens,
        "max_batch_requests": state.config.max_batch,
        "max_client_batch_size": state.config.max_items,
        "auto_truncate": state.config.truncate,
        "tokenization_workers": 1,
        "version": __version__,
    }


def any_kind_model(state: ServerState, requested: str | None) -> ModelSpec:
    """The named model, else the default embedding model, else cross-encoder, else SPLADE
    model (routes that any BERT-family model answers: /info, /tokenize, /decode)."""
    if requested:
        return state.pool.find(requested, "text")
    for kind in _INFO_KINDS:
        try:
            return state.pool.find(None, kind)
        except RequestError:
            continue
    return next(iter(state.pool.specs.values()))


def _model_type(kind: str, tower: object) -> dict:
    if kind == "text-pair":
        labels = list(getattr(tower, "labels", ()))
        classifier = {
            "id2label": {str(i): label for i, label in enumerate(labels)},
            "label2id": {label: i for i, label in enumerate(labels)},
        }
        return {"reranker" if len(labels) == 1 else "classifier": classifier}
    if kind == "sparse":
        return {"embedding": {"pooling": "splade"}}
    return {"embedding": {"pooling": getattr(tower, "pooling_name", "model")}}


@router.get("/health", response_class=Response)
async def health(request: Request) -> Response:
    ok, why = ServerState.of(request).pool.ready()
    if ok:
        return Response(status_code=200)
    body = error_body(Contract.TEI, 503, f"unhealthy: {why}", None)
    return JSONResponse(body, status_code=503)
