"""Load shedding: work requests are admitted while the backlog can be answered within the
latency budget (`--max-queue-ms`), and refused with 429 at once, before their body is
read, once it cannot.

The backlog's expected wait is the requests admitted and not yet answered divided by the
rate the server answers them: completions per second of busy time (time with at least one
request in flight), over the last few busy seconds. Idle time is left out, so a quiet
spell does not read as a slow server; and under overload the server is always busy, so
the rate is its capacity for the requests it is getting, whatever they are (texts, images,
one item or many). No figure is configured: the limit follows the machine, the model and
the mix of requests.

A batch's worth of requests is admitted whatever the rate (`floor_for`), so that a burst
of concurrent clients at a quiet server is not shed by a rate measured while it was nearly
idle; but not once the server has been full (that many in flight, or a refusal) in the
last `window_s` seconds: its rate is then its capacity, and the budget alone rules.

A refused request costs its headers and one small JSON answer: it is never parsed, its
images are never decoded, and a client that waits for `100 Continue` never sends its body.
An admitted request is never refused later: shedding happens at the door only.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from handspring.server.errors import contract_of, error_response
from handspring.server.guards.middleware import PUBLIC_PATHS, SHED_SCOPE_KEY
from handspring.server.metrics import Metrics

# The limit keeps the backlog's expected wait to this share of the budget. The estimate is
# a mean: under sustained overload every admitted request waits about the whole backlog,
# and then its own batch runs (a few hundred ms for an image model on a small CPU), so
# admitting up to the whole budget would put most answers just over it. Too small a share
# starves the batches instead: at 0.5 a 30/s image model ran batches of 15 and answered
# 81-89% of its capacity at 10x overload, at 0.7 90-93% with p99 under 900 ms
# (bench/reliability/overload.py --pin).
ADMIT_SHARE = 0.7
# Busy seconds of completions the rate is measured over: several batches of a slow model,
# and short enough to follow a change in the mix of requests within seconds.
WINDOW_S = 3.0
# Bounds the memory of the window at very high rates (the window then spans these).
MAX_SAMPLES = 4096
# Admitted before the first answer gives a rate: a burst at start-up waits for the model's
# load rather than being refused, within reason.
UNMEASURED_CAP = 64
# A stalled server (no completion in the window) still gives clients a finite wait.
MAX_RETRY_AFTER_S = 60
# Refusals are logged as one line per this many seconds, not one each: at 10x overload a
# line per 429 would be hundreds a second, all alike, and cost the server CPU it lacks.
SHED_LOG_EVERY_S = 1.0

log = logging.getLogger("handspring.server.access")


def floor_for(max_batch: int) -> int:
    """Requests admitted whatever the rate at a server that has not been full lately: a
    batch's worth. A batch of concurrent clients (parallel indexing workers) arriving at a
    quiet server is not shed by a rate measured while it was nearly idle, which can be far
    below its capacity; and a stalled server still takes some. Once that many are in flight
    the floor yields to the budget (see `AdmissionController`): otherwise, for a model
    slower than 2 x max_batch / budget requests a second (64/s at the defaults), the floor,
    not the budget, would bound the backlog under sustained overload."""
    return max(1, max_batch)


@dataclass(frozen=True)
class Decision:
    admitted: bool
    in_flight: int  # admitted requests in flight when the decision was made
    wait_s: float | None  # expected wait of that backlog; None before any rate is measured
    retry_after_s: int  # for a refusal: seconds until the backlog is expected to clear


class AdmissionController:
    """Counts admitted requests in flight and measures how fast they are answered.

    A request is admitted while `in_flight / rate` stays within `ADMIT_SHARE * budget_s`;
    before a rate is measured, up to `unmeasured_cap`. Below `floor` requests in flight
    every request is admitted (see `floor_for`), unless the server was full in the last
    `window_s` seconds: `floor` requests in flight at once (a batch's worth: the engine
    runs at its capacity), or a request refused (which, outside that, happens only with
    `floor` or more in flight). Then the rate measured is its capacity, and the budget
    applies alone (with nothing in flight, a request is still admitted). Under sustained
    overload the floor would otherwise bound the backlog of a slow model: every admitted
    request would wait about a whole batch behind another.

    The rate is measured from the answer of the last request that was already in flight
    when the first answer came: the busy time before (a model's load) says nothing of the
    server's speed, and those requests end together, in the first batches, so counting
    them over the short time after would make the server look many times faster.
    """

    def __init__(
        self,
        *,
        budget_s: float,
        floor: int,
        window_s: float = WINDOW_S,
        unmeasured_cap: int = UNMEASURED_CAP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if budget_s <= 0 or floor < 1 or window_s <= 0:
            raise ValueError(
                f"admission needs a budget > 0, a floor >= 1 and a window > 0; got "
                f"budget {budget_s} s, floor {floor}, window {window_s} s"
            )
        self.budget_s = budget_s
        self.floor = floor
        self.window_s = window_s
        self.unmeasured_cap = max(floor, unmeasured_cap)
        self._clock = clock
        self._in_flight = 0
        self._busy_total = 0.0  # busy seconds before the current busy stretch
        self._busy_since: float | None = None  # clock time the current stretch began
        self._origin: float | None = None  # busy clock where the rate is measured from
        self._before_origin = 0  # answers still due to requests admitted before it
        self._stamps: deque[float] = deque(maxlen=MAX_SAMPLES)  # busy clock at each answer
        self._full_at: float | None = None  # clock time the server was last full

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def busy_seconds(self) -> float:
        """Seconds, so far, during which at least one admitted request was in flight."""
        stretch = 0.0 if self._busy_since is None else self._clock() - self._busy_since
        return self._busy_total + stretch

    def rate(self) -> float | None:
        """Answers per busy second over the last `window_s` busy seconds since the origin
        (see the class); None until an answer after it (or a whole window without one)."""
        if self._origin is None:
            return None
        busy = self.busy_seconds()
        start = max(busy - self.window_s, self._origin)
        self._forget_until(start)
        stamps = self._stamps
        if len(stamps) == stamps.maxlen:  # the window is as long as the samples kept
            start, count = stamps[0], len(stamps) - 1
        else:
            count = len(stamps)
        span = busy - start
        if span <= 0 or (count == 0 and busy - self._origin < self.window_s):
            return None
        return count / span

    def expected_wait_s(self) -> float | None:
        """How long the requests in flight are expected to take to be answered."""
        return self.wait_at(self.rate())

    def limit(self) -> int:
        """Requests in flight beyond which new ones are refused."""
        return self._limit(self.rate())

    def full_lately(self) -> bool:
        """Whether the server was full (see the class) in the last `window_s` seconds: of
        the clock, not busy time, so that after a quiet spell a burst finds the floor."""
        full = self._full_at
        return full is not None and self._clock() - full < self.window_s

    def admit(self) -> Decision:
        """Admit one request (the caller must `release` it once answered), or refuse it."""
        rate = self.rate()
        in_flight = self._in_flight
        wait = self.wait_at(rate)
        if in_flight < self._limit(rate):
            if in_flight == 0:
                self._busy_since = self._clock()
            self._in_flight += 1
            if self._in_flight >= self.floor:
                self._full_at = self._clock()
            return Decision(True, in_flight, wait, 0)
        self._full_at = self._clock()
        retry = 1 if wait is None else max(1, math.ceil(min(wait, MAX_RETRY_AFTER_S)))
        return Decision(False, in_flight, wait, retry)

    def wait_at(self, rate: float | None) -> float | None:
        """`expected_wait_s` for a rate already measured."""
        if rate is None:
            return None
        if rate == 0:
            return math.inf if self._in_flight else 0.0
        return self._in_flight / rate

    def _limit(self, rate: float | None) -> int:
        if rate is None:
            return self.unmeasured_cap
        floor = 1 if self.full_lately() else self.floor
        return max(floor, math.floor(rate * self.budget_s * ADMIT_SHARE))

    def release(self) -> None:
        """One admitted request has been answered (whatever the answer)."""
        if self._in_flight <= 0:
            raise RuntimeError("release without a matching admit")
        busy = self.busy_seconds()
        if self._origin is None:
            self._before_origin = self._in_flight - 1
            self._origin = busy
        elif self._before_origin > 0:
            self._before_origin -= 1
            self._origin = busy
        else:
            self._stamps.append(busy)
        self._in_flight -= 1
        if self._in_flight == 0:
            self._busy_total = busy
            self._busy_since = None
        self._forget_until(max(busy - self.window_s, self._origin))

    def _forget_until(self, busy: float) -> None:
        while self._stamps and self._stamps[0] <= busy:
            self._stamps.popleft()


def is_work(scope: Scope) -> bool:
    """POSTs carry the work; reads (models, info, health, metrics, docs) are never shed."""
    return scope["method"] == "POST" and scope["path"] not in PUBLIC_PATHS


def refusal_message(decision: Decision, budget_s: float) -> str:
    held = f"{decision.in_flight} requests are already in flight"
    if decision.wait_s is None:
        why = "and none has been answered yet"
    elif math.isinf(decision.wait_s):
        why = "and none was answered lately"
    else:
        why = f"(about {decision.wait_s:.2f} s of work)"
    return (
        f"overloaded: {held} {why}; the latency budget is {budget_s * 1000:g} ms: "
        f"retry after {decision.retry_after_s} s"
    )


class AdmissionGate:
    """ASGI middleware: admits work requests through `controller`, answers the others 429
    (with `Retry-After`, in the called contract's shape) without reading their body."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        controller: AdmissionController,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.controller = controller
        self.metrics = metrics
        self._clock = clock
        self._shed_since_log = 0
        self._shed_logged_at = -math.inf

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_work(scope):
            await self.app(scope, receive, send)
            return
        decision = self.controller.admit()
        self._observe()
        if not decision.admitted:
            path = scope["path"]
            self.metrics.shed.labels(contract_of(path).value).inc()
            message = refusal_message(decision, self.controller.budget_s)
            self._log_shed(message)
            scope[SHED_SCOPE_KEY] = True
            headers = {"Retry-After": str(decision.retry_after_s)}
            await error_response(path, 429, message, headers=headers)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.controller.release()
            self._observe()

    def _log_shed(self, message: str) -> None:
        """Counts a refusal; logs those since the last line, at most a line a second (the
        first after a quiet second at once), with the latest refusal's reason."""
        self._shed_since_log += 1
        now = self._clock()
        seconds = now - self._shed_logged_at
        if seconds < SHED_LOG_EVERY_S:
            return
        count, self._shed_since_log, self._shed_logged_at = self._shed_since_log, 0, now
        extra = {"status": 429, "shed": count}
        if count == 1:
            log.warning("shed a request (429): %s", message, extra=extra)
        else:
            log.warning("shed %d requests (429) in the last %.1f s; the last: %s", count,
                        seconds, message, extra=extra)  # fmt: skip

    def _observe(self) -> None:
        controller = self.controller
        rate = controller.rate()
        self.metrics.admitted.set(controller.in_flight)
        self.metrics.completion_rate.set(rate or 0.0)
        self.metrics.admission_wait.set(controller.wait_at(rate) or 0.0)
