"""The Ray Data pipeline of `photos index --ray`, and the actor that runs it on the
cluster and hands its results to the driver.

    files to read -> map_batches(read_and_decode)   CPU tasks: read, hash, EXIF, decode
                  -> map_batches(EmbedActor)        actor pool of 1..N: the model

Ray Data's executor runs in `PipelineRunner`, an actor on the cluster, rather than in
the driver: Ray Data cannot run through Ray Client (`ray://`, how a driver outside the
cluster such as a Kubernetes CronJob reaches it: Ray 2.60 fails with "'Worker' object
has no attribute 'core_worker'"), while actors and `ray.get` can. The driver asks the
runner for finished rows, a few hundred at a time, and commits them.

Fault tolerance is Ray Data's: an embedding actor that dies is restarted and the
batches it held run again (actor pools default to max_restarts=-1 and
max_task_retries=-1); a failed decoding task is retried. The runner itself is not
restarted: if it dies, the run stops, and the next run resumes from the commits.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from handspring.photos.indexing import ray_workers as rw

# Input blocks handed to Ray Data: enough for every worker to start at once, few enough
# that a library of millions is not millions of objects.
MAX_INPUT_BLOCKS = 2000
# What a decoding task may hold: a worker process with handspring, Pillow and numpy
# loaded (about 120 MiB), its files' bytes and model inputs, and one photo decoded at
# full size (PNG, TIFF and HEIC have no draft mode: 12 MP is 36 MB of RGB). Declared so
# Ray packs no more decoding tasks on a node than its memory holds, and, being a
# resource the actors do not ask for, it keeps Ray Data from fusing decoding into the
# actors: decoding stays in tasks, embedding in the pool.
DECODE_MEMORY_BASE = 192 << 20
DECODE_MEMORY_PER_PHOTO = 16 << 20
# Finished rows the runner holds for the driver before the pipeline waits for it.
READY_ROWS = 4096


@dataclass(frozen=True)
class PipelinePlan:
    """How the pipeline runs: everything the runner needs besides the files."""

    model_args: tuple[str, str, int | None]  # image model, precision, ORT threads per actor
    preprocessor: Any  # the image tower without its session (ray_workers.ModelProbe)
    roots: list[str]
    batch_size: int
    read_workers: int
    max_actors: int
    actor_cpus: float
    decode_cpus: float
    actor_class: type[rw.EmbedActor] = rw.EmbedActor


def embedding_dataset(plan: PipelinePlan, files: Any) -> Any:
    """The Ray Dataset of results for `files` (a pyarrow Table: SEQ, PATH, SIZE,
    MTIME_NS, SKIP), unexecuted."""
    import ray.data

    rows = files.num_rows
    per_block = plan.batch_size * max(1, -(-rows // (plan.batch_size * MAX_INPUT_BLOCKS)))
    blocks = [files.slice(start, per_block) for start in range(0, rows, per_block)]
    return (
        ray.data.from_arrow(blocks)
        .map_batches(
            rw.read_and_decode,
            batch_size=plan.batch_size,
            batch_format="numpy",
            num_cpus=plan.decode_cpus,
            memory=DECODE_MEMORY_BASE + plan.batch_size * DECODE_MEMORY_PER_PHOTO,
            fn_kwargs={
                "preprocessor": plan.preprocessor,
                "roots": plan.roots,
                "read_workers": plan.read_workers,
            },
        )
        .map_batches(
            plan.actor_class,
            batch_size=plan.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=plan.max_actors),
            num_cpus=plan.actor_cpus,
            fn_constructor_args=plan.model_args,
        )
    )


_END = object()


class PipelineRunner:
    """Runs the pipeline on the cluster (a Ray actor, one per index run) and hands out
    its results in the order they finish."""

    def __init__(self, plan: PipelinePlan, files: Any) -> None:
        import ray.data

        logging.getLogger("ray.data").setLevel(logging.ERROR)  # notes on every execution
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the driver shows photos saved
        self._ready: queue.Queue[Any] = queue.Queue(maxsize=max(4, READY_ROWS // plan.batch_size))
        dataset = embedding_dataset(plan, files)
        self._thread = threading.Thread(target=self._drain, args=(dataset,), daemon=True)
        self._thread.start()

    def _drain(self, dataset: Any) -> None:
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                self._ready.put(batch)
        except BaseException as exc:  # raised on the driver by `next`
            self._ready.put(exc)
            return
        self._ready.put(_END)

    def next(self, max_rows: int = READY_ROWS) -> dict[str, np.ndarray] | None:
        """Finished rows: at least one block (waiting for it), and whatever else is done,
        up to about `max_rows`; None once every file is done."""
        first = self._ready.get()
        if not isinstance(first, dict):
            self._ready.put(first)  # the end, or the error, for every later call too
            if isinstance(first, BaseException):
                raise first
            return None
        parts, rows = [first], len(first[rw.SEQ])
        while rows < max_rows:
            try:
                part = self._ready.get_nowait()
            except queue.Empty:
                break
            if not isinstance(part, dict):
                self._ready.put(part)  # for the next call, after these rows
                break
            parts.append(part)
            rows += len(part[rw.SEQ])
        return {key: np.concatenate([p[key] for p in parts]) for key in first}
