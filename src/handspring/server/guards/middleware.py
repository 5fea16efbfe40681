"""ASGI middleware: the API key, the body-size limit, and per-request metrics and logs.

Written against raw ASGI so a refused request is answered before its body is read.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from handspring.server.errors import error_response
from handspring.server.metrics import Metrics

log = logging.getLogger("handspring.server.access")

# Set by the admission gate on a request it refused (admission imports this module).
SHED_SCOPE_KEY = "handspring.shed"

UNAUTHORIZED = "missing or wrong API key (Authorization: Bearer)"

# Probes and scrapers need no key.
PUBLIC_PATHS = frozenset(
    {
        "/.well-known/live",
        "/.well-known/ready",
        "/health",
        "/_health",
        "/metrics",
        "/v2/health/live",
        "/v2/health/ready",
    }
)


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a body without a Content-Length passes the limit. An
    HTTPException, so FastAPI's body parsing lets it through to the app's handler."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is over the limit of {limit:,} bytes")


class RequestGate:
    """Checks the bearer key (when one is set) and caps the request body."""

    def __init__(self, app: ASGIApp, *, api_keys: tuple[str, ...], max_body_bytes: int) -> None:
        self.app = app
        self.api_keys = [key.encode() for key in api_keys]
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = dict(scope["headers"])
        if self.api_keys and path not in PUBLIC_PATHS and not self._authorized(headers):
            await error_response(path, 401, UNAUTHORIZED)(scope, receive, send)
            return
        declared = headers.get(b"content-length")
        limit = self.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if started:
                raise
            await self._too_large(scope, receive, send)

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        token = token.strip()
        # Every key is compared, whichever matches: the time taken says nothing of which.
        matches = [hmac.compare_digest(token, key) for key in self.api_keys]
        return scheme.lower() == b"bearer" and any(matches)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = BodyTooLarge(self.max_body_bytes).detail
        await error_response(scope["path"], 413, message)(scope, receive, send)


class Observed:
    """Counts, times and logs each request, by route template (not raw path). A request
    shed under overload is counted and timed, and logged in the gate's summary line."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # prometheus-client's labels() takes a lock and builds a key each call: at hundreds
        # of refusals a second, the children are worth keeping.
        self._children: dict[tuple[str, int], Callable[[float], None]] = {}

    def _recorder(self, route: str, status: int) -> Callable[[float], None]:
        requests = self.metrics.requests.labels(route, str(status))
        errors = self.metrics.errors.labels(route, str(status)) if status >= 400 else None
        latency = self.metrics.latency.labels(route)

        def record(seconds: float) -> None:
            requests.inc()
            if errors is not None:
                errors.inc()
            latency.observe(seconds)

        return record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            record = self._children.get((route, status))
            if record is None:
                record = self._children[(route, status)] = self._recorder(route, status)
            record(seconds)
            if not scope.get(SHED_SCOPE_KEY):  # the gate logs these, a line a second
                client = scope.get("client")
                log.info(
                    "%s %s %d",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(seconds * 1000, 2),
                        "client": client[0] if client else None,
                    },
                )
