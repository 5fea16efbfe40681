"""The gRPC server (`--grpc-port`): grpcio's asyncio server on the HTTP server's event loop,
so both ports feed one engine (the same batchers, limits, keys, load shedding and metrics).
The app's lifespan starts it and stops it: on shutdown, calls in flight get the graceful
timeout to finish, and new ones get UNAVAILABLE.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from grpc import aio

from handspring.server.grpc.embeddings_service import EmbeddingsService
from handspring.server.grpc.gate import CallGate
from handspring.server.grpc.generated import embeddings_pb2_grpc, grpc_predict_v2_pb2_grpc
from handspring.server.grpc.inference_service import InferenceService
from handspring.server.guards.admission import AdmissionController
from handspring.server.state import ServerState

log = logging.getLogger(__name__)


@dataclass
class GrpcServer:
    server: aio.Server
    port: int  # the bound port (the one asked for, or the one given for port 0)

    async def stop(self, grace_s: float) -> None:
        await self.server.stop(grace_s)


def address(host: str, port: int) -> str:
    return f"[{host.strip('[]')}]:{port}" if ":" in host else f"{host}:{port}"


async def start_grpc(
    state: ServerState, admission: AdmissionController | None, port: int
) -> GrpcServer:
    """Serve both services on the HTTP host at `port` (0: any free port)."""
    config = state.config
    gate = CallGate(
        api_keys=config.api_keys,
        draining=state.draining,
        admission=admission,
        metrics=state.metrics,
        timeout_s=config.request_timeout_s,
    )
    server = aio.server(
        interceptors=[gate],
        options=[
            # The HTTP body limit is the message limit: larger messages get
            # RESOURCE_EXHAUSTED from grpc itself, before anything is parsed.
            ("grpc.max_receive_message_length", config.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
        ],
    )
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceService(state), server
    )
    embeddings_pb2_grpc.add_EmbeddingsServicer_to_server(EmbeddingsService(state), server)
    where = address(config.host, port)
    try:
        bound = server.add_insecure_port(where)
    except RuntimeError as exc:  # grpcio's word for a port it cannot bind
        raise OSError(f"gRPC could not bind {where}: {exc}") from None
    if bound == 0:
        raise OSError(f"gRPC could not bind {where}")
    await server.start()
    log.info("gRPC on %s", address(config.host, bound))
    return GrpcServer(server, bound)
