"""The ASGI app: every contract's routes on one FastAPI app, with the gate (key, body
limit), metrics and logs around them, and models loaded by the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

from handspring import __version__
from handspring.server.config import ServerConfig
from handspring.server.errors import RequestError, error_response
from handspring.server.metrics import Metrics
from handspring.server.middleware import Observed, RequestGate
from handspring.server.model_pool import ModelPool
from handspring.server.routes import immich, native, openai, photo_search, tei, weaviate
from handspring.server.service import EmbeddingService
from handspring.server.shutdown import Draining, RefusedWhileDraining
from handspring.server.state import ServerState

log = logging.getLogger(__name__)


def _register_heif() -> None:
    try:
        import pillow_heif
    except ImportError:
        return
    pillow_heif.register_heif_opener()


def create_app(config: ServerConfig) -> FastAPI:
    _register_heif()
    metrics = Metrics()
    pool = ModelPool(config, metrics)
    state = ServerState(config, metrics, pool, EmbeddingService(config, pool))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await pool.check_available()
        tasks = []
        if config.preload:
            tasks.append(asyncio.create_task(pool.preload(), name="preload"))
        if config.idle_unload_s > 0:
            tasks.append(asyncio.create_task(pool.unload_idle_forever(), name="unload idle"))
        log.info("serving %s", ", ".join(f"{m.name}={m.source}" for m in config.models))
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pool.close()
        await state.service.aclose()

    app = FastAPI(
        title="Handspring",
        version=__version__,
        description="CLIP and sentence-transformers embeddings: OpenAI, Weaviate, TEI and "
        "photo-search contracts on one server.",
        lifespan=lifespan,
    )
    app.state.handspring = state
    for module in (openai, weaviate, tei, photo_search, native, immich):
        app.include_router(module.router)

    @app.get("/metrics", tags=["Operations"], include_in_schema=False)
    async def metrics_route() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(RequestError)
    async def on_request_error(request: Request, exc: RequestError) -> Response:
        return error_response(request.url.path, exc.status, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for error in exc.errors()[:5]:
            where = ".".join(str(p) for p in error["loc"] if p != "body") or "body"
            problems.append(f"{where}: {error['msg']}")
        first = exc.errors()[0]["loc"] if exc.errors() else ()
        param = str(first[1]) if len(first) > 1 else None
        return error_response(request.url.path, 422, "; ".join(problems), param)

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> Response:
        # Starlette's headers (a 405's `Allow`) belong to the answer in every contract.
        return error_response(
            request.url.path, exc.status_code, str(exc.detail), headers=exc.headers
        )

    @app.exception_handler(TimeoutError)
    async def on_timeout(request: Request, exc: TimeoutError) -> Response:
        limit = config.request_timeout_s
        return error_response(request.url.path, 504, f"the request took over {limit:g} s")

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(request.url.path, 500, f"internal error: {type(exc).__name__}")

    return _wrap(app, config, metrics, state.draining)


def _wrap(app: FastAPI, config: ServerConfig, metrics: Metrics, draining: Draining) -> FastAPI:
    # Each middleware added wraps the ones before it: Observed, outermost, sees everything,
    # including what the drain and the gate refuse.
    app.add_middleware(RequestGate, api_key=config.api_key, max_body_bytes=config.max_body_bytes)
    app.add_middleware(RefusedWhileDraining, draining=draining)
    app.add_middleware(Observed, metrics=metrics)
    return app
