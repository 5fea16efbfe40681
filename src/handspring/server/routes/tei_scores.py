"""TEI's scoring routes: `POST /rerank` (a cross-encoder on the query with each text),
`/predict` (sequence classification; its route is routes.predict, which shares the path
with Immich's) and `/similarity` (cosine of embeddings, as sentence-transformers')."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from handspring.server.engine.encoder_runs import TextRun, model_for, run_texts
from handspring.server.errors import RequestError
from handspring.server.inputs.tei_bodies import (
    PredictRequest,
    Rank,
    RerankRequest,
    SimilarityParameters,
    SimilarityRequest,
    direction_of,
)
from handspring.server.routes.tei import TEI_RESPONSES
from handspring.server.state import ServerState
from handspring.towers.cross_encoder import MODALITY as PAIRS
from handspring.towers.cross_encoder import label_scores

router = APIRouter(tags=["TEI"], responses=TEI_RESPONSES)


async def rerank_scores(
    state: ServerState,
    requested: str | None,
    query: str,
    texts: list[str],
    *,
    param: str,
    raw: bool,
    truncate: bool | None = None,
    direction: str = "right",
    wrong_kind_status: int = 424,
) -> tuple[TextRun, np.ndarray]:
    """A reranker's score of (query, text) for each text, in input order. Shared with
    infinity's /v1/rerank."""
    spec = model_for(state, requested, PAIRS, wrong_kind_status)
    ran = await run_texts(
        state,
        spec,
        PAIRS,
        [(query, text) for text in texts],
        param=param,
        truncate=truncate,
        direction=direction,
        wrong_kind_status=wrong_kind_status,
    )
    if len(ran.tower.labels) != 1:
        raise RequestError(
            wrong_kind_status,
            f"model {spec.name!r} is not a re-ranker model: it has {len(ran.tower.labels)} "
            "labels (use /predict)",
            param="model",
        )
    return ran, label_scores(ran.rows, raw)[:, 0]


def by_score(scores: np.ndarray) -> list[int]:
    """Indices by decreasing score, as TEI orders them (ascending, stable, then reversed)."""
    order = sorted(range(len(scores)), key=lambda i: float(scores[i]))
    order.reverse()
    return order


@router.post("/rerank", response_model=list[Rank], response_model_exclude_none=True)
async def rerank(body: RerankRequest, request: Request) -> list[dict[str, Any]]:
    state = ServerState.of(request)
    _, scores = await rerank_scores(
        state,
        body.model,
        body.query,
        body.texts,
        param="texts",
        raw=body.raw_scores,
        truncate=body.truncate,
        direction=direction_of(body.truncation_direction),
    )
    ranks = []
    for i in by_score(scores):
        rank: dict[str, Any] = {"index": i, "score": float(scores[i])}
        if body.return_text:
            rank["text"] = body.texts[i]
        ranks.append(rank)
    return ranks


async def predict(body: PredictRequest, state: ServerState) -> list:
    """TEI's /predict: labels by decreasing score for one input, or a list per input of a
    batch. An input is a text or a pair of texts."""
    single = isinstance(body.inputs, str) or isinstance(body.inputs[0], str)
    batch = [body.inputs] if single else body.inputs
    items = [text if isinstance(text, str) else _pair_or_text(text) for text in batch]
    spec = model_for(state, body.model, PAIRS)
    ran = await run_texts(
        state,
        spec,
        PAIRS,
        items,
        param="inputs",
        truncate=body.truncate,
        direction=direction_of(body.truncation_direction),
    )
    scores = label_scores(ran.rows, body.raw_scores)
    labels = ran.tower.labels
    answers = [
        [{"score": float(row[i]), "label": labels[i]} for i in by_score(row)] for row in scores
    ]
    return answers[0] if single else answers


def _pair_or_text(item: list[str]) -> str | tuple[str, str]:
    return item[0] if len(item) == 1 else (item[0], item[1])


@router.post("/similarity", response_model=list[float])
async def similarity(body: SimilarityRequest, request: Request) -> list[float]:
    """Cosine similarity of the source sentence's embedding with each sentence's."""
    state = ServerState.of(request)
    parameters = body.parameters or SimilarityParameters()
    spec = model_for(state, body.model, "text")
    sentences = body.inputs.sentences
    names = ["inputs.source_sentence"] + [f"inputs.sentences[{i}]" for i in range(len(sentences))]
    ran = await run_texts(
        state,
        spec,
        "text",
        [body.inputs.source_sentence, *sentences],
        param="inputs",
        truncate=parameters.truncate,
        direction=direction_of(parameters.truncation_direction),
        prompt_name=parameters.prompt_name,
        names=names,
    )
    vectors = np.asarray(ran.rows, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1)
    cosines = vectors[1:] @ vectors[0] / np.maximum(norms[1:] * norms[0], np.finfo(np.float64).tiny)
    return [float(c) for c in cosines]
