"""The ASGI app: every contract's routes on one FastAPI app, with the gate (key, body
limit), metrics and logs around them, and models loaded by the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from handspring import __version__
from handspring.server.config import ServerConfig
from handspring.server.engine.model_pool import ModelPool
from handspring.server.engine.service import EmbeddingService
from handspring.server.errors import (
    RequestError,
    error_response,
    validation_problem,
    validation_status,
)
from handspring.server.guards.admission import AdmissionController, AdmissionGate, floor_for
from handspring.server.guards.middleware import Observed, RequestGate
from handspring.server.guards.shutdown import Draining, RefusedWhileDraining
from handspring.server.metrics import Metrics
from handspring.server.routes import (
    immich,
    infinity,
    native,
    oip,
    openai,
    photo_search,
    predict,
    tei,
    tei_scores,
    tei_tokens,
    weaviate,
)
from handspring.server.state import ServerState

log = logging.getLogger(__name__)

DOCS_ASSETS = "/docs/assets"


def _register_heif() -> None:
    try:
        import pillow_heif
    except ImportError:
        return
    pillow_heif.register_heif_opener()


class GuardedApp(FastAPI):
    """FastAPI with guards in front of all of it, not in its middleware stack: a request
    they refuse (a 429 under overload, hundreds a second) costs neither FastAPI's own
    layers (telemetry, error and body-limit middleware) nor a wrapper of each send; under
    10x overload that cost comes out of the capacity left for the requests admitted."""

    _front: ASGIApp | None = None

    def guard(self, wrap: Callable[[ASGIApp], ASGIApp]) -> None:
        self._front = wrap(super().__call__)

    def guard_layers(self) -> list[type]:
        """The guards' classes, outermost first."""
        layers, layer = [], self._front
        while layer is not None and hasattr(layer, "app"):
            layers.append(type(layer))
            layer = layer.app
        return layers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._front is None:
            await super().__call__(scope, receive, send)
        else:
            await self._front(scope, receive, send)


def create_app(config: ServerConfig) -> GuardedApp:
    _register_heif()
    metrics = Metrics()
    pool = ModelPool(config, metrics)
    state = ServerState(config, metrics, pool, EmbeddingService(config, pool))
    # One controller for both ports: one backlog, one completion rate.
    admission = None
    if config.max_queue_ms > 0:
        admission = AdmissionController(
            budget_s=config.max_queue_ms / 1000, floor=floor_for(config.max_batch)
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await pool.check_available()
        grpc_server = None
        if config.grpc_port is not None:
            # Imported only here: grpcio costs memory a server without gRPC does not need.
            from handspring.server.grpc.server import start_grpc

            grpc_server = await start_grpc(state, admission, config.grpc_port)
            app.state.grpc_port = grpc_server.port
        tasks = []
        if config.preload:
            tasks.append(asyncio.create_task(pool.preload(), name="preload"))
        if config.idle_unload_s > 0:
            tasks.append(asyncio.create_task(pool.unload_idle_forever(), name="unload idle"))
        log.info("serving %s", ", ".join(f"{m.name}={m.source}" for m in config.models))
        yield
        if grpc_server is not None:
            # HTTP has stopped taking requests by now; gRPC calls in flight may finish,
            # new ones are refused (UNAVAILABLE).
            state.draining.begin()
            await grpc_server.stop(config.graceful_timeout)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pool.close()
        await state.service.aclose()

    # /docs and /redoc from the package's own copies of Swagger UI and ReDoc, not a CDN:
    # they work on a machine without internet, and load nothing from elsewhere.
    app = FastAPIOffline(
        title="Handspring",
        version=__version__,
        description="Image, text, audio and other embeddings: OpenAI, Weaviate, TEI, Immich, "
        "infinity, photo-search and Open Inference Protocol (KServe v2) contracts on one "
        "server.",
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
    )
    # fastapi_offline builds a plain FastAPI; this adds only the front door (`__call__`).
    app.__class__ = GuardedApp
    app.state.handspring = state
    # routes.predict holds `POST /predict` for both TEI (JSON) and Immich (multipart).
    routers = (openai, weaviate, tei, tei_scores, tei_tokens, predict, infinity, photo_search, oip)
    for module in (*routers, native, immich):
        app.include_router(module.router)

    @app.get("/metrics", tags=["Operations"], include_in_schema=False)
    async def metrics_route() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(RequestError)
    async def on_request_error(request: Request, exc: RequestError) -> Response:
        return error_response(request.url.path, exc.status, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        message, param = validation_problem(exc.errors())
        status = validation_status(request.url.path, exc.errors())
        return error_response(request.url.path, status, message, param)

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> Response:
        # Starlette's headers (a 405's `Allow`) belong to the answer in every contract. Its
        # 404 is a route that does not exist, not a model.
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(
            request.url.path, exc.status_code, str(exc.detail), headers=exc.headers, code=code
        )

    @app.exception_handler(TimeoutError)
    async def on_timeout(request: Request, exc: TimeoutError) -> Response:
        limit = config.request_timeout_s
        return error_response(request.url.path, 504, f"the request took over {limit:g} s")

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(request.url.path, 500, f"internal error: {type(exc).__name__}")

    return _wrap(app, config, metrics, state.draining, admission)


def _wrap(
    app: GuardedApp,
    config: ServerConfig,
    metrics: Metrics,
    draining: Draining,
    admission: AdmissionController | None,
) -> GuardedApp:
    # Outermost first: Observed sees everything, including what the drain and the gate
    # refuse. Admission is inside the gate: a client without the key gets 401 whatever the
    # load, so it neither learns the load nor holds a place in the backlog; nor does a body
    # declared over the limit. Inside the drain: a server shutting down says 503, not
    # "retry soon here".
    def guards(inner: ASGIApp) -> ASGIApp:
        if admission is not None:
            inner = AdmissionGate(inner, controller=admission, metrics=metrics)
        inner = RequestGate(inner, api_keys=config.api_keys, max_body_bytes=config.max_body_bytes)
        inner = RefusedWhileDraining(inner, draining=draining)
        return Observed(inner, metrics=metrics)

    app.guard(guards)
    return app
