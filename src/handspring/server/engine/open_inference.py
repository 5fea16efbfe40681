"""The Open Inference Protocol (KServe v2, Triton) over the shared engine, the same for REST
(`routes.oip`) and gRPC (`grpc.inference_service`); each only encodes and decodes.

Every served model is a model of the protocol. Its inputs are the modalities it embeds,
named as the model names them (`text`, `image`, `audio`...), each BYTES of shape [N] or
[N, 1]: a UTF-8 text, or an encoded file (an image, a sound...). Its one output,
`embedding`, is FP32 [N, dim]. A request may send several inputs: their rows come out in
the order of its inputs. Towers that score or weigh texts rather than embed them (cross-
encoders, SPLADE) are not inputs here.

Request parameters: `normalize` (bool, default true) and `dimensions` (int, a Matryoshka
cut), as the server's other routes take them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from handspring import __version__
from handspring.server.config import ModelSpec
from handspring.server.errors import RequestError
from handspring.server.inputs.item_inputs import ItemRef, parse_item_or_error
from handspring.server.state import ServerState
from handspring.towers.cross_encoder import MODALITY as PAIRS
from handspring.towers.splade import MODALITY as SPARSE

SERVER_NAME = "handspring"
SERVER_VERSION = __version__
EXTENSIONS: tuple[str, ...] = ()
PLATFORM = "handspring_onnxruntime"
# One version per model: the one served. Clients that name none get it.
VERSION = "1"
OUTPUT = "embedding"
INPUT_DATATYPE = "BYTES"
OUTPUT_DATATYPE = "FP32"
# Towers whose rows are scores or vocabulary-wide term weights, not points of one space.
NOT_EMBEDDINGS = frozenset({PAIRS, SPARSE})

Parameters = Mapping[str, object]


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1: any size


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]


@dataclass(frozen=True)
class InputTensor:
    """One input as a request carries it, flattened: gRPC gives bytes, REST's JSON strings
    (a text, or an image as base64) and its binary extension bytes."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    elements: Sequence[bytes | str]


@dataclass(frozen=True)
class InferOutcome:
    model: str
    version: str
    vectors: np.ndarray  # float32 [N, D], rows in the order of the request's inputs


def embedding_inputs(modalities: Sequence[str]) -> tuple[str, ...]:
    return tuple(m for m in modalities if m not in NOT_EMBEDDINGS)


def served(state: ServerState, name: str, version: str = "") -> ModelSpec:
    """The served model `name` (by name, source or alias) at `version` ("" for the one
    served), or 404."""
    spec = state.pool.named(name) if name else None
    if spec is None:
        known = ", ".join(state.pool.specs)
        raise RequestError(404, f"model {name!r} is not served here (served: {known})")
    if version not in ("", VERSION):
        raise RequestError(
            404, f"model {spec.name!r} has no version {version!r} (versions: {VERSION})"
        )
    return spec


def model_ready(state: ServerState, name: str, version: str = "") -> bool:
    """Loaded, or loadable on first use (the pool loads lazily) while the server is ready."""
    spec = served(state, name, version)
    return state.pool.loaded(spec.name) is not None or state.pool.ready()[0]


async def model_metadata(state: ServerState, name: str, version: str = "") -> ModelMetadata:
    """What the model takes and gives; loads it, since its width is its graph's."""
    spec = served(state, name, version)
    async with state.pool.lease(spec) as loaded:
        inputs = embedding_inputs(loaded.modalities)
        dim = int(loaded.model.dim)
    return ModelMetadata(
        name=spec.name,
        versions=(VERSION,),
        platform=PLATFORM,
        inputs=tuple(TensorMetadata(m, INPUT_DATATYPE, (-1,)) for m in inputs),
        outputs=(TensorMetadata(OUTPUT, OUTPUT_DATATYPE, (-1, dim)),),
    )


def check_outputs(requested: Sequence[str]) -> None:
    for name in requested:
        if name != OUTPUT:
            raise RequestError(400, f"output {name!r} does not exist (outputs: {OUTPUT})")


async def infer(
    state: ServerState,
    name: str,
    version: str,
    inputs: Sequence[InputTensor],
    parameters: Parameters,
) -> InferOutcome:
    spec = served(state, name, version)
    normalize, dimensions = _options(parameters)
    if not inputs:
        raise RequestError(400, "no inputs given: send one or more, as the model's metadata lists")
    counts = [_check_input(tensor) for tensor in inputs]
    if len({t.name for t in inputs}) < len(inputs):
        raise RequestError(400, "an input is given twice: send each input once")
    limit = state.config.max_items
    if sum(counts) > limit:
        raise RequestError(413, f"{sum(counts)} items is over the limit of {limit} per request")
    async with state.pool.lease(spec) as loaded:
        accepted = embedding_inputs(loaded.modalities)
        for tensor in inputs:
            if tensor.name not in accepted:
                raise RequestError(
                    400,
                    f"input {tensor.name!r} is not an input of model {spec.name!r} "
                    f"(inputs: {', '.join(accepted) or 'none: it gives no embeddings'})",
                )
        parts = [await _embed(state, spec, t, normalize, dimensions) for t in inputs]
    return InferOutcome(spec.name, VERSION, np.concatenate(parts) if len(parts) > 1 else parts[0])


def _check_input(tensor: InputTensor) -> int:
    """The input's item count, once its type and shape are those every input has."""
    what = f"input {tensor.name!r}"
    if tensor.datatype != INPUT_DATATYPE:
        raise RequestError(
            400,
            f"{what}: datatype {tensor.datatype!r} is not accepted: send {INPUT_DATATYPE} "
            "(UTF-8 texts, or the bytes of encoded files)",
        )
    shape = tensor.shape
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or min(shape) < 0:
        raise RequestError(400, f"{what}: shape {list(shape)} is not [N] or [N, 1]")
    count = shape[0]
    if count == 0:
        raise RequestError(400, f"{what}: the batch is empty (shape {list(shape)})")
    if len(tensor.elements) != math.prod(shape):
        raise RequestError(
            400,
            f"{what}: holds {len(tensor.elements)} elements, but its shape {list(shape)} "
            f"says {math.prod(shape)}",
        )
    return count


async def _embed(
    state: ServerState,
    spec: ModelSpec,
    tensor: InputTensor,
    normalize: bool,
    dimensions: int | None,
) -> np.ndarray:
    name = tensor.name
    service = state.service
    if name == "text":
        texts = [_text(element, f"{name}[{i}]") for i, element in enumerate(tensor.elements)]
        # A BYTES element may be empty in KServe and Triton; the model decides, and a text
        # tower embeds "" (its special tokens), as the library does.
        result = await service.embed_texts(
            spec,
            texts,
            param=name,
            normalize=normalize,
            dimensions=dimensions,
            empty_text_ok=True,
        )
        return result.vectors
    refs = [
        _item(state, element, f"{name}[{i}]", name) for i, element in enumerate(tensor.elements)
    ]
    items = await service.embed_items(
        spec, name, refs, param=name, normalize=normalize, dimensions=dimensions
    )
    return items.vectors


def _text(element: bytes | str, item: str) -> str:
    if isinstance(element, str):
        return element
    try:
        return element.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"{item}: not valid UTF-8 (byte {exc.start})") from None


def _item(state: ServerState, element: bytes | str, item: str, modality: str) -> ItemRef:
    if isinstance(element, bytes):
        return ItemRef(item, data=element)
    # JSON carries files as base64 (or data URLs; URLs when the server fetches them).
    ref = parse_item_or_error(
        element, item, urls_allowed=state.config.fetch_urls, modality=modality
    )
    if ref.error is not None:
        raise ref.error
    return ref


def _options(parameters: Parameters) -> tuple[bool, int | None]:
    normalize = parameters.get("normalize", True)
    if not isinstance(normalize, bool):
        raise RequestError(400, f"parameter 'normalize' must be a boolean, got {normalize!r}")
    dimensions = parameters.get("dimensions")
    if dimensions is not None and (
        isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1
    ):
        raise RequestError(
            400, f"parameter 'dimensions' must be an integer of 1 or more, got {dimensions!r}"
        )
    return normalize, dimensions


def split_bytes_tensor(raw: bytes, what: str) -> list[bytes]:
    """A BYTES tensor's raw form (each element a little-endian uint32 length, then its
    bytes; Triton's and KServe's serialization) as its elements."""
    elements: list[bytes] = []
    view = memoryview(raw)
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise RequestError(400, f"{what}: raw BYTES content ends inside an element's length")
        size = int.from_bytes(view[offset : offset + 4], "little")
        offset += 4
        if offset + size > len(raw):
            raise RequestError(
                400,
                f"{what}: raw BYTES element {len(elements)} says {size} bytes, "
                f"{len(raw) - offset} remain",
            )
        elements.append(bytes(view[offset : offset + size]))
        offset += size
    return elements
