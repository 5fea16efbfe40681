"""Graceful shutdown: what a request gets once SIGTERM (or SIGINT) has arrived, and how the
process ends.

Requests that arrive after the signal get 503 with `Retry-After`. So do the ones still
running when `--graceful-timeout` ends: uvicorn cancels their tasks, and would otherwise
answer them with its own plain-text 500, which no contract's client can read and which
says "bug" where the truth is "retry". Both answers are in the called contract's shape.
After the drain the process exits 0: it did what the signal asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.server import HANDLED_SIGNALS

from handspring.server.errors import error_response

# Seconds a client should wait: the address it retries on is usually served by another
# replica (or this one restarted) by then.
RETRY_AFTER_S = 1

# A draining server is still alive, and its metrics show the drain.
ANSWERED_WHILE_DRAINING = frozenset({"/.well-known/live", "/v2/health/live", "/metrics"})


class Draining:
    """Whether a shutdown has begun. Set from the signal handler, read by every request."""

    def __init__(self) -> None:
        self.begun = False

    def begin(self) -> None:
        self.begun = True


def unavailable(path: str, message: str) -> JSONResponse:
    """503 with Retry-After, in `path`'s contract shape."""
    return error_response(path, 503, message, headers={"Retry-After": str(RETRY_AFTER_S)})


class RefusedWhileDraining:
    """ASGI middleware: 503 for requests that arrive after the shutdown began, and for those
    the graceful timeout cuts before their answer started."""

    def __init__(self, app: ASGIApp, *, draining: Draining) -> None:
        self.app = app
        self.draining = draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in ANSWERED_WHILE_DRAINING:
            await self.app(scope, receive, send)
            return
        if self.draining.begun:
            message = "the server is shutting down and takes no new requests: retry"
            await unavailable(path, message)(scope, receive, send)
            return
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except asyncio.CancelledError:
            # Only uvicorn's end of the graceful timeout is answered: any other cancel is
            # someone else's to handle, and a started answer cannot be replaced.
            if started or not self.draining.begun:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # the cancel is handled here, by answering
            message = "the server shut down before this request finished: retry"
            await unavailable(path, message)(scope, receive, send)


class GracefulServer(uvicorn.Server):
    """uvicorn's server, which tells the app when a shutdown signal arrives, and returns
    after the shutdown instead of raising the signal again (uvicorn's way, which ends a
    clean drain with status 143)."""

    def __init__(self, config: uvicorn.Config, draining: Draining) -> None:
        super().__init__(config)
        self.draining = draining

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.draining.begin()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Signal handlers can only be set from the main thread.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
