"""Dynamic batching: concurrent requests for one model and modality share a batch.

Each request hands over its items at once and gets its rows back in order. A batch
is closed when it holds `max_batch` items or `max_wait_s` has passed since the
worker found it waiting; a single request larger than `max_batch` runs on its own
(the engine batches inside it). Runs are serialised on one thread per batcher;
ONNX Runtime's own threads do the parallel work.

The wait applies only after a batch that held several requests: a lone client
never waits for company that is not coming.

The engine's vectors do not depend on the rest of their batch (bit for bit, in fp32
and int8), so grouping never changes a result.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The queue is full: the server answers 429 at once rather than queue without end."""


@dataclass
class _Request:
    items: Sequence[Any]
    future: asyncio.Future[np.ndarray] = field(repr=False)


class Batcher:
    def __init__(
        self,
        name: str,
        run: Callable[[list[Any]], np.ndarray],
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[int], None] = lambda size: None,
        on_depth: Callable[[int], None] = lambda depth: None,
    ) -> None:
        self.name = name
        self._run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._on_depth = on_depth
        self._pending: deque[_Request] = deque()
        self._waiting = 0  # items queued, not yet taken into a batch
        self._wakeup = asyncio.Event()
        self._closing = False
        self._last_requests = 0  # requests in the last batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}")
        self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"batcher {name}")

    @property
    def depth(self) -> int:
        return self._waiting

    async def submit(self, items: Sequence[Any]) -> np.ndarray:
        """The run's rows for `items`, in order. Raises Overloaded when the queue is full."""
        if self._closing:
            raise Overloaded(f"{self.name} is shutting down")
        if self._waiting + len(items) > self.max_queue and self._waiting:
            raise Overloaded(
                f"{self.name}: {self._waiting} items already queued (limit {self.max_queue})"
            )
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(items, future))
        self._set_waiting(self._waiting + len(items))
        self._wakeup.set()
        return await future

    def _set_waiting(self, value: int) -> None:
        self._waiting = value
        self._on_depth(value)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            # Waiting for company only pays when there is company: after a batch of one
            # request (a lone client), the next runs at once.
            deadline = loop.time() + (self.max_wait_s if self._last_requests > 1 else 0.0)
            while self._waiting < self.max_batch and not self._closing:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take()
            await self._run_batch(loop, batch)

    def _take(self) -> list[_Request]:
        batch = [self._pending.popleft()]
        size = len(batch[0].items)
        while self._pending and size + len(self._pending[0].items) <= self.max_batch:
            size += len(self._pending[0].items)
            batch.append(self._pending.popleft())
        self._set_waiting(self._waiting - size)
        self._last_requests = len(batch)
        return batch

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Request]) -> None:
        live = [r for r in batch if not r.future.done()]  # a client that went away is skipped
        if not live:
            return
        items = [item for r in live for item in r.items]
        self._on_batch(len(items))
        try:
            out = await loop.run_in_executor(self._executor, self._run, items)
        except Exception as exc:
            log.exception("batch of %d failed in %s", len(items), self.name)
            for r in live:
                if not r.future.done():
                    r.future.set_exception(exc)
            return
        start = 0
        for r in live:
            if not r.future.done():
                r.future.set_result(out[start : start + len(r.items)])
            start += len(r.items)

    async def close(self) -> None:
        """Finish what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        await self._worker
        self._executor.shutdown(wait=True)
