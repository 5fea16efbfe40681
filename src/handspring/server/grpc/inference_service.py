"""`inference.GRPCInferenceService`: the Open Inference Protocol's gRPC face. Messages are
decoded into `engine.open_inference`'s terms and its answers encoded back; the protocol's
rules live there, shared with REST.

Output encoding follows KServe: when the request's inputs came in `raw_input_contents`
(as Triton's clients send them), the embedding comes back in `raw_output_contents`
(little-endian float32, row-major); when they came as typed `contents`, it comes back as
`contents.fp32_contents`.
"""

from __future__ import annotations

from typing import Any

from grpc import aio

from handspring.server.engine import open_inference as oip
from handspring.server.errors import RequestError
from handspring.server.grpc.generated import grpc_predict_v2_pb2 as pb
from handspring.server.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from handspring.server.state import ServerState


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        ready, _ = self.state.pool.ready()
        return pb.ServerReadyResponse(ready=ready)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(
            ready=oip.model_ready(self.state, request.name, request.version)
        )

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=oip.SERVER_NAME, version=oip.SERVER_VERSION, extensions=oip.EXTENSIONS
        )

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        meta = await oip.model_metadata(self.state, request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta.name,
            versions=meta.versions,
            platform=meta.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs],
        )

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: aio.ServicerContext
    ) -> pb.ModelInferResponse:
        oip.check_outputs([output.name for output in request.outputs])
        outcome = await oip.infer(
            self.state,
            request.model_name,
            request.model_version,
            input_tensors(request),
            parameters_of(request.parameters),
        )
        answer = pb.ModelInferResponse(
            model_name=outcome.model, model_version=outcome.version, id=request.id
        )
        vectors = outcome.vectors
        output = answer.outputs.add(
            name=oip.OUTPUT, datatype=oip.OUTPUT_DATATYPE, shape=vectors.shape
        )
        if request.raw_input_contents:
            answer.raw_output_contents.append(vectors.astype("<f4", copy=False).tobytes())
        else:
            output.contents.fp32_contents.extend(vectors.ravel().tolist())
        return answer


def input_tensors(request: pb.ModelInferRequest) -> list[oip.InputTensor]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise RequestError(
            400,
            f"raw_input_contents holds {len(raw)} entries for {len(request.inputs)} inputs: "
            "give one per input, in the order of the inputs",
        )
    tensors = []
    for i, tensor in enumerate(request.inputs):
        what = f"input {tensor.name!r}"
        elements: list[bytes] = []
        if raw:
            if tensor.HasField("contents"):
                raise RequestError(
                    400, f"{what}: has contents, and the request raw_input_contents: give one"
                )
            if tensor.datatype == oip.INPUT_DATATYPE:  # others are refused by their type
                elements = oip.split_bytes_tensor(raw[i], what)
        else:
            elements = list(tensor.contents.bytes_contents)
        tensors.append(oip.InputTensor(tensor.name, tensor.datatype, tuple(tensor.shape), elements))
    return tensors


def parameters_of(parameters: Any) -> dict[str, object]:
    """A map<string, InferParameter> as plain values."""
    values: dict[str, object] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        values[key] = getattr(parameter, choice) if choice else None
    return values
