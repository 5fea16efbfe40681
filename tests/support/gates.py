"""Gates that hold a server's engine runs until the test opens them.

A test that needs "the engine is busy" or "requests are in flight" sets that state here
and waits for it, instead of sending work big enough that it is usually still running
when the test looks: on a loaded machine "usually" fails. The engine itself still runs,
unchanged, once the gate opens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from fastapi import FastAPI

from handspring.server.engine.model_pool import ModelPool

# A bound on how long a state may take to be reached: only a broken server gets near it.
STATE_DEADLINE_S = 120.0

Run = Callable[[list[Any]], Any]


def wait_until(
    condition: Callable[[], bool], what: str, deadline_s: float = STATE_DEADLINE_S
) -> None:
    """Poll `condition` until it holds; fail naming `what` if it never does."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never reached: {what}")
        time.sleep(0.01)


def gate_batchers(pool: ModelPool, wrap: Callable[[Run], Run]) -> None:
    """Every batcher the pool makes from now on runs `wrap(run)` instead of `run`."""
    make = pool.batcher

    def gated(loaded: Any, modality: str, variant: str | None, run: Run) -> Any:
        return make(loaded, modality, variant, wrap(run))

    pool.batcher = gated  # type: ignore[method-assign]


class EngineGate:
    """Holds every engine run of an in-process server (`install`) while it is closed.

    `with gate:` opens it on the way out, so held runs finish and the server can stop.
    """

    def __init__(self) -> None:
        self._open = threading.Event()
        self._entered = threading.Condition()
        self.runs = 0  # runs that reached the gate

    @classmethod
    def install(cls, app: FastAPI) -> EngineGate:
        gate = cls()
        gate_batchers(app.state.handspring.pool, gate.hold)
        return gate

    def hold(self, run: Run) -> Run:
        def held(items: list[Any]) -> Any:
            with self._entered:
                self.runs += 1
                self._entered.notify_all()
            self._open.wait()
            return run(items)

        return held

    def wait_for_runs(self, count: int) -> None:
        """Until `count` runs are held (or have been let through)."""
        with self._entered:
            if not self._entered.wait_for(lambda: self.runs >= count, STATE_DEADLINE_S):
                raise AssertionError(f"{count} engine runs never started ({self.runs} did)")

    def open(self) -> None:
        self._open.set()

    def __enter__(self) -> EngineGate:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.open()


def hold_while_exists(path: Path) -> Callable[[Run], Run]:
    """For a server in another process: its runs wait while `path` exists."""

    def wrap(run: Run) -> Run:
        def held(items: list[Any]) -> Any:
            while path.exists():
                time.sleep(0.01)
            return run(items)

        return held

    return wrap
