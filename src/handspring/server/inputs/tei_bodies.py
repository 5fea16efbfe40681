"""Hugging Face TEI's request and answer bodies (router/src/http/types.rs), as pydantic
models: what TEI accepts, plus an optional `model` naming which served model answers.

Lists TEI refuses empty say so (`minItems`), and an empty one is answered 400 as TEI
answers it (see errors.validation_status).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from handspring.server.inputs.body_fields import Dimensions, JsonBool, NonEmptyStrings, NotEmpty

# TEI's ids are u32 and its schema says int32: anything larger is no vocabulary's.
TokenId = Annotated[int, Field(strict=True, ge=0, le=2**31 - 1)]
TokenIdList = Annotated[list[TokenId], Field(min_length=1)]
# A text or token ids (TEI's InputType); `inputs` is one, or a list of them (TEI's Input).
InputItem = str | list[TokenId]
Inputs = Annotated[
    str | TokenIdList | Annotated[list[InputItem], Field(min_length=1)],
    NotEmpty,
]
TruncationDirection = Literal["Left", "Right", "left", "right"]
ModelName = Annotated[
    str | None,
    Field(description="Which served model answers (Handspring; TEI serves one model)."),
]


class _Truncating(BaseModel):
    truncate: JsonBool | None = None  # None: the server's --truncate
    truncation_direction: TruncationDirection = "Right"


class EmbedRequest(_Truncating):
    inputs: Inputs
    normalize: JsonBool = True
    dimensions: Dimensions | None = None
    prompt_name: str | None = None
    model: ModelName = None


class EmbedAllRequest(_Truncating):
    inputs: Inputs
    prompt_name: str | None = None
    model: ModelName = None


class EmbedSparseRequest(EmbedAllRequest):
    pass


class SparseValue(BaseModel):
    index: int
    value: float


class RerankRequest(_Truncating):
    query: str
    texts: NonEmptyStrings
    raw_scores: JsonBool = False
    return_text: JsonBool = False
    model: ModelName = None


class Rank(BaseModel):
    index: int
    score: float
    text: str | None = None  # left out unless return_text


# A text, or a pair ([text] is a text too, as TEI reads it); `inputs` is one, or a batch.
PredictItem = Annotated[list[str], Field(min_length=1, max_length=2)]
PredictInputs = Annotated[
    str | PredictItem | Annotated[list[PredictItem], Field(min_length=1)], NotEmpty
]


class PredictRequest(_Truncating):
    inputs: PredictInputs
    raw_scores: JsonBool = False
    model: ModelName = None


class Prediction(BaseModel):
    score: float
    label: str


class SimilarityInput(BaseModel):
    source_sentence: str
    sentences: NonEmptyStrings


class SimilarityParameters(_Truncating):
    prompt_name: str | None = None


class SimilarityRequest(BaseModel):
    inputs: SimilarityInput
    parameters: SimilarityParameters | None = None
    model: ModelName = None


class TokenizeRequest(BaseModel):
    inputs: Annotated[str | NonEmptyStrings, NotEmpty]
    add_special_tokens: JsonBool = True
    prompt_name: str | None = None
    model: ModelName = None


class SimpleToken(BaseModel):
    id: int
    text: str
    special: JsonBool
    start: int | None
    stop: int | None


class DecodeRequest(BaseModel):
    ids: Annotated[TokenIdList | Annotated[list[list[TokenId]], Field(min_length=1)], NotEmpty]
    skip_special_tokens: JsonBool = True
    model: ModelName = None


class TeiError(BaseModel):
    error: str
    error_type: Literal["Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"]


class ClassifierModel(BaseModel):
    id2label: dict[str, str]
    label2id: dict[str, int]


class EmbeddingModel(BaseModel):
    pooling: str


class Info(BaseModel):
    model_id: str
    model_sha: str | None = None
    model_dtype: str
    model_type: dict[
        Literal["embedding", "classifier", "reranker"], EmbeddingModel | ClassifierModel
    ]
    served_model_name: str
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None = None
    max_client_batch_size: int
    auto_truncate: JsonBool
    tokenization_workers: int
    version: str
    sha: str | None = None
    docker_label: str | None = None


def direction_of(value: str) -> str:
    """TEI's Left/Right (either case) as the tokenizer's "left"/"right"."""
    return value.lower()
