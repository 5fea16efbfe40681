"""infinity's `POST /v1/rerank` (Cohere's rerank protocol), which infinity's clients and
the OpenAI-style SDKs that wrap it call: `{query, documents, top_n?, return_documents?,
raw_scores?, model?}` -> `{"object": "rerank", "results": [{relevance_score, index,
document}], "model", "usage", "id", "created"}`, results by decreasing score.

Errors are OpenAI's object, as infinity's; a model that is not a reranker is a 400 there.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from handspring.server.errors import ERROR_RESPONSES
from handspring.server.inputs.body_fields import JsonBool, NonEmptyStrings
from handspring.server.routes.tei_scores import by_score, rerank_scores
from handspring.server.state import ServerState

router = APIRouter(tags=["infinity"], responses=ERROR_RESPONSES)

# What infinity's clients send when they name no model.
UNNAMED = "default/not-specified"


class RerankInput(BaseModel):
    query: str
    documents: NonEmptyStrings
    return_documents: JsonBool = False
    raw_scores: JsonBool = False
    model: str = UNNAMED
    top_n: Annotated[int, Field(strict=True, gt=0)] | None = None


class RerankResult(BaseModel):
    relevance_score: float
    index: int
    document: str | None = None


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RerankAnswer(BaseModel):
    object: Literal["rerank"] = "rerank"
    results: list[RerankResult]
    model: str
    usage: Usage
    id: str
    created: int


@router.post("/v1/rerank", response_model=RerankAnswer)
async def rerank(body: RerankInput, request: Request) -> RerankAnswer:
    state = ServerState.of(request)
    requested = None if body.model == UNNAMED else body.model
    ran, scores = await rerank_scores(
        state,
        requested,
        body.query,
        body.documents,
        param="documents",
        raw=body.raw_scores,
        wrong_kind_status=400,
    )
    order = by_score(scores)[: body.top_n]
    tokens = sum(t.tokens for t in ran.tokens)
    return RerankAnswer(
        results=[
            RerankResult(
                relevance_score=float(scores[i]),
                index=i,
                document=body.documents[i] if body.return_documents else None,
            )
            for i in order
        ],
        model=ran.model,
        usage=Usage(prompt_tokens=tokens, total_tokens=tokens),
        id=f"infinity-{uuid.uuid4()}",
        created=int(time.time()),
    )
