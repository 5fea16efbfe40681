"""How big the indexer's embedding batches are and when it commits: small at the start
of a run, then the sizes asked for.

A run embeds its first photos in batches of 1, 2, 4, ... up to the batch size, and
commits after 1, 2, 4, ... photos up to `commit_every`. So the first commit waits for
one photo rather than a full batch of large ones (16 twelve-megapixel JPEGs took
13.5 s on a busy laptop, and a run killed sooner than that kept nothing, run after
run). Counting photos rather than seconds keeps the commit points the same on any
machine; the time bound (`commit_seconds`) still applies on top. Once grown, the
batches are the ones asked for, so the steady-state throughput does not change.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator

from handspring.embedder import Embeddings, Model


def growing(limit: int) -> Iterator[int]:
    """1, 2, 4, ... below `limit`, then `limit` for ever."""
    if limit < 1:
        raise ValueError(f"a batch or commit size must be >= 1, got {limit}")
    size = 1
    while size < limit:
        yield size
        size *= 2
    yield from itertools.repeat(limit)


def embed_in_growing_batches(
    model: Model, images: Iterable[bytes], batch_size: int
) -> Iterator[Embeddings]:
    """`model.iter_embed_images` over `images`, in batches of 1, 2, 4, ... then
    `batch_size`: one result per batch, in order. Images are pulled from the iterable
    only as the batches need them."""
    items = iter(images)
    for size in growing(batch_size):
        if size == batch_size:
            # One call from here on: the embedder prepares each batch while the one
            # before it runs, as it always did.
            yield from model.iter_embed_images(items, batch_size=batch_size)
            return
        batch = list(itertools.islice(items, size))
        if not batch:
            return
        yield from model.iter_embed_images(batch, batch_size=size)


class CommitPace:
    """When to commit: after 1, 2, 4, ... photos written, growing to every `every`
    photos, and whenever `seconds` have passed since the last commit."""

    def __init__(
        self, every: int, seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._sizes = growing(every)
        self._seconds = seconds
        self._clock = clock
        self._due_after = next(self._sizes)
        self._since = 0
        self._last = clock()

    def wrote(self) -> bool:
        """One more photo written: True if it is time to commit."""
        self._since += 1
        return self._since >= self._due_after or self._clock() - self._last >= self._seconds

    def committed(self) -> None:
        self._since = 0
        self._last = self._clock()
        self._due_after = next(self._sizes)
