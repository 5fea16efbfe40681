"""What stands before every gRPC method, as the HTTP side's middleware stands before its
routes: the drain, the API key, load shedding, errors as status codes, metrics and logs.

The drain and the key are checked before the request message is deserialized: a call
refused there costs its headers only. Load shedding shares the HTTP side's controller, so
one backlog and one completion rate cover both ports.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc import aio

from handspring.server.errors import RequestError
from handspring.server.guards.admission import AdmissionController, refusal_message
from handspring.server.guards.shutdown import RETRY_AFTER_S, Draining
from handspring.server.metrics import Metrics

log = logging.getLogger("handspring.server.access")

UNAUTHENTICATED = "missing or wrong API key (metadata authorization: Bearer KEY)"
DRAINING = "the server is shutting down and takes no new requests: retry"

# Probes need no key, and a draining server still says it is alive.
PUBLIC_METHODS = frozenset(
    {"/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady"}
)
ANSWERED_WHILE_DRAINING = frozenset({"/inference.GRPCInferenceService/ServerLive"})
# The calls that carry work: shed under overload, as HTTP's POSTs are.
WORK_METHODS = frozenset(
    {"/inference.GRPCInferenceService/ModelInfer", "/embeddings_proto.Embeddings/GetEmbeddings"}
)

# The HTTP status a request error carries, as the gRPC code that means the same.
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

Behavior = Callable[[Any, aio.ServicerContext], Awaitable[Any]]
Metadata = Sequence[tuple[str, str | bytes]]


def code_for(status: int) -> grpc.StatusCode:
    default = grpc.StatusCode.INVALID_ARGUMENT if status < 500 else grpc.StatusCode.INTERNAL
    return _CODES.get(status, default)


def bearer_token(metadata: Metadata | None) -> bytes:
    """The key in `authorization: Bearer KEY`, or b"" when there is none."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            raw = value.encode() if isinstance(value, str) else value
            scheme, _, token = raw.partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else b""
    return b""


class CallGate(aio.ServerInterceptor):
    def __init__(
        self,
        *,
        api_keys: tuple[str, ...],
        draining: Draining,
        admission: AdmissionController | None,
        metrics: Metrics,
        timeout_s: float,
    ) -> None:
        self.timeout_s = timeout_s
        self.api_keys = [key.encode() for key in api_keys]
        self.draining = draining
        self.admission = admission
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:  # unknown: grpc says UNIMPLEMENTED
            return handler
        method = details.method
        if self.draining.begun and method not in ANSWERED_WHILE_DRAINING:
            refusal = (grpc.StatusCode.UNAVAILABLE, DRAINING, RETRY_AFTER_S)
            return self._refusing(method, *refusal)
        if self.api_keys and method not in PUBLIC_METHODS:
            token = bearer_token(details.invocation_metadata)
            # Every key is compared, whichever matches: the time taken says nothing of which.
            if not any([hmac.compare_digest(token, key) for key in self.api_keys]):
                return self._refusing(method, grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED)
        return grpc.unary_unary_rpc_method_handler(
            self._guarded(method, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _refusing(
        self, method: str, code: grpc.StatusCode, message: str, retry_after: int | None = None
    ) -> grpc.RpcMethodHandler:
        # No deserializer: the refused request's message is never parsed.
        async def refuse(request: bytes, context: aio.ServicerContext) -> None:
            start = time.perf_counter()
            try:
                if retry_after is not None:
                    context.set_trailing_metadata((("retry-after", str(retry_after)),))
                await context.abort(code, message)
            finally:
                self._observe_call(method, code, start, context)

        return grpc.unary_unary_rpc_method_handler(refuse)

    def _guarded(self, method: str, behavior: Behavior) -> Behavior:
        async def guarded(request: Any, context: aio.ServicerContext) -> Any:
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            admitted = False
            try:
                if self.admission is not None and method in WORK_METHODS:
                    admitted = await self._admit(context)
                return await behavior(request, context)
            except RequestError as exc:
                code = code_for(exc.status)
                if exc.status == 429:
                    context.set_trailing_metadata((("retry-after", str(RETRY_AFTER_S)),))
                await context.abort(code, exc.message)
            except TimeoutError:  # the server's --request-timeout (a client's deadline cancels)
                code = grpc.StatusCode.DEADLINE_EXCEEDED
                await context.abort(code, f"the request took over {self.timeout_s:g} s")
            except aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:  # the client went away, or its deadline passed
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                code = grpc.StatusCode.INTERNAL
                log.exception("unexpected error in %s", method)
                await context.abort(code, f"internal error: {type(exc).__name__}")
            finally:
                if admitted and self.admission is not None:
                    self.admission.release()
                    self._observe_admission()
                self._observe_call(method, code, start, context)

        return guarded

    async def _admit(self, context: aio.ServicerContext) -> bool:
        assert self.admission is not None
        decision = self.admission.admit()
        self._observe_admission()
        if decision.admitted:
            return True
        self.metrics.shed.labels("grpc").inc()
        context.set_trailing_metadata((("retry-after", str(decision.retry_after_s)),))
        message = refusal_message(decision, self.admission.budget_s)
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        return False  # abort raises: never reached

    def _observe_admission(self) -> None:
        assert self.admission is not None
        controller = self.admission
        self.metrics.admitted.set(controller.in_flight)
        self.metrics.completion_rate.set(controller.rate() or 0.0)
        self.metrics.admission_wait.set(controller.expected_wait_s() or 0.0)

    def _observe_call(
        self, method: str, code: grpc.StatusCode, start: float, context: aio.ServicerContext
    ) -> None:
        seconds = time.perf_counter() - start
        self.metrics.grpc_requests.labels(method, code.name).inc()
        self.metrics.grpc_latency.labels(method).observe(seconds)
        log.info(
            "gRPC %s %s",
            method,
            code.name,
            extra={
                "method": "gRPC",
                "path": method,
                "status": code.name,
                "duration_ms": round(seconds * 1000, 2),
                "client": context.peer(),
            },
        )
