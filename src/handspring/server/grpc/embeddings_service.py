"""`embeddings_proto.Embeddings.GetEmbeddings(TensorProto) returns (TensorProto)`: the seed
project's service (handspring-grpc), for its users, answering bad input with a status
rather than a panic.

As there: the request is a batch of preprocessed pixels, F32 [N, 3, S, S] (resized,
cropped and normalised as the model expects), each value one 4-byte `content` element in
`byte_order`; all values in a single element are taken too. The answer is the image
tower's embeddings, F32 [N, D], one little-endian element per value, not normalised (the
seed's model returned its projection as it was). The model is the one named by the call's
`model` metadata, else the server's default image model. The pixels join the same batches
as every other image request of that model.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
from grpc import aio

from handspring.server.engine.batcher import Overloaded
from handspring.server.errors import RequestError
from handspring.server.grpc.generated import embeddings_pb2_grpc
from handspring.server.grpc.generated import tensor_pb2 as pb
from handspring.server.state import ServerState

F32_BYTES = 4
_BYTE_ORDERS = {pb.LE: "<f4", pb.BE: ">f4"}


class EmbeddingsService(embeddings_pb2_grpc.EmbeddingsServicer):
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def GetEmbeddings(
        self, request: pb.TensorProto, context: aio.ServicerContext
    ) -> pb.TensorProto:
        requested = dict(context.invocation_metadata() or ()).get("model")
        spec = self.state.pool.find(str(requested) if requested else None, "image")
        pixels = pixels_of(request, self.state.config.max_items)
        config = self.state.config
        async with asyncio.timeout(config.request_timeout_s), self.state.pool.lease(spec) as loaded:
            if "image" not in loaded.modalities:
                raise RequestError(
                    400,
                    f"model {spec.name!r} does not embed images "
                    f"(it embeds: {', '.join(loaded.modalities)})",
                )
            tower = loaded.model.towers["image"]
            _check_shape(pixels.shape, _pixel_shape(tower), spec.name)
            batcher = self.state.pool.batcher(loaded, "image", None, tower.run)
            try:
                vectors = await batcher.submit(list(pixels))
            except Overloaded as exc:
                raise RequestError(429, f"overloaded: {exc}; retry later") from None
        flat = np.ascontiguousarray(vectors, dtype="<f4").reshape(-1)
        content = [flat[i : i + 1].tobytes() for i in range(flat.size)]
        return pb.TensorProto(content=content, shape=vectors.shape, dtype=pb.F32, byte_order=pb.LE)


def pixels_of(request: pb.TensorProto, max_items: int) -> np.ndarray:
    """The request's values as float32 of its shape, or a 400 naming what is wrong."""
    if request.dtype != pb.F32:
        raise RequestError(400, f"dtype {request.dtype} is not accepted: send F32 (0)")
    if request.byte_order not in _BYTE_ORDERS:
        raise RequestError(400, f"byte_order {request.byte_order} is not LE (0) or BE (1)")
    shape = tuple(request.shape)
    if len(shape) != 4:
        raise RequestError(400, f"shape {list(shape)} is not [N, 3, S, S] (a batch of pixels)")
    if shape[0] == 0:
        raise RequestError(400, f"the batch is empty (shape {list(shape)})")
    if shape[0] > max_items:
        raise RequestError(413, f"{shape[0]} images is over the limit of {max_items} per request")
    count = math.prod(shape)
    content = request.content
    if len(content) == 1:
        data = content[0]
    elif len(content) == count and all(len(value) == F32_BYTES for value in content):
        data = b"".join(content)
    else:
        raise RequestError(
            400,
            f"content holds {len(content)} elements; shape {list(shape)} needs {count} of "
            f"{F32_BYTES} bytes each (or one element of {count * F32_BYTES} bytes)",
        )
    if len(data) != count * F32_BYTES:
        raise RequestError(
            400,
            f"content holds {len(data)} bytes; shape {list(shape)} needs "
            f"{count * F32_BYTES} ({count} F32 values)",
        )
    pixels = np.frombuffer(data, dtype=_BYTE_ORDERS[request.byte_order]).astype(np.float32)
    if not np.isfinite(pixels).all():
        raise RequestError(400, "the pixels hold NaN or infinite values")
    return pixels.reshape(shape)


def _pixel_shape(tower: object) -> tuple[int, ...] | None:
    """[3, S, S] when the tower's graph takes one batch of pixels; None otherwise (towers
    that take patches and masks, as NaFlex's)."""
    session = getattr(tower, "session", None)
    inputs = session.get_inputs() if session is not None else []
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        return None
    dims = tuple(inputs[0].shape[1:])
    return dims if all(isinstance(d, int) for d in dims) else None


def _check_shape(shape: tuple[int, ...], wanted: tuple[int, ...] | None, model: str) -> None:
    if wanted is None:
        raise RequestError(
            400,
            f"model {model!r} does not take pixel tensors: send encoded images to "
            "inference.GRPCInferenceService/ModelInfer",
        )
    if shape[1:] != wanted:
        raise RequestError(
            400,
            f"shape {list(shape)}: model {model!r} takes pixels [N, {', '.join(map(str, wanted))}]",
        )
