"""`photos index --ray ADDRESS`: the local indexer's run, with reading, decoding and
embedding on a Ray cluster through Ray Data (the pipeline: ray_dataset.py; what runs
on the workers: ray_workers.py).

The driver (this process) scans, works out what is unchanged, changed, moved or gone
from the index, and commits: it is the local `Indexer`, whose `_process` is replaced
here. Results come back in the order the workers finish, and each is settled and
written by the local indexer's own code, so a Ray run keeps a local run's guarantees:
commits after 1, 2, 4, ... then every `commit_every` photos; a driver killed (even
SIGKILL) keeps what it committed, and the next run takes up the rest (paths are unique:
nothing doubles); files that cannot be read are recorded with their reasons; vectors
are the ones a local run computes. Nothing reaches the store before its result is back
on the driver, so a batch that Ray ran twice (an actor lost) is written once.

A moved or touched file keeps its vector without a trip through the model: the driver
sends with each file the contents the index already holds a vector for (its own old
content, and that of gone files of the same size), and a worker that reads one of those
returns the record without decoding it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from handspring.photos.indexing import ray_workers as rw
from handspring.photos.indexing.index_progress import IndexProgress
from handspring.photos.indexing.indexer import Indexer, IndexOptions, IndexReport
from handspring.photos.indexing.ray_cluster import (
    ClusterInfo,
    RayAddress,
    RayClusterError,
    connected,
)
from handspring.photos.indexing.ray_dataset import PipelinePlan, PipelineRunner
from handspring.photos.scanning.scan import ScannedFile, ScanReport
from handspring.photos.stores.records import IndexedFile
from handspring.photos.stores.store import StoreError, WritableStore
from handspring.photos.stores.stored_paths import decode_stored, encode_stored


@dataclass(frozen=True)
class RayOptions:
    address: RayAddress
    max_actors: int | None = None  # the pool's upper size; default: cluster CPUs / actor_cpus
    actor_cpus: float = 1.0  # per embedding actor; its ONNX Runtime threads unless --threads
    decode_cpus: float = 1.0  # per decoding task


@dataclass
class RayRunStats:
    """Who did the work of a run, as the results report it."""

    cluster: ClusterInfo | None = None
    actors: set[str] = field(default_factory=set)  # node id:pid of each actor seen
    graphs_built: set[str] = field(default_factory=set)  # probe or actors that built one
    embedded: int = 0  # photos that went through the model
    passes: int = 0

    @property
    def nodes(self) -> set[str]:
        return {worker.split(":")[0] for worker in self.actors}

    def describe(self) -> str:
        return (
            f"ray: {self.embedded} photos embedded by {len(self.actors)} actor(s) on "
            f"{len(self.nodes)} node(s); graphs built: {len(self.graphs_built)}"
        )


@dataclass(frozen=True)
class _Item:
    scanned: ScannedFile
    known: IndexedFile | None
    skip: frozenset[str]


class RayIndexer(Indexer):
    """An Indexer whose files are read, decoded and embedded on a Ray cluster."""

    def __init__(
        self,
        store: WritableStore,
        options: IndexOptions,
        ray_options: RayOptions,
        progress: bool | IndexProgress = False,
        notice: Callable[[str], None] | None = None,
        actor_class: type[rw.EmbedActor] = rw.EmbedActor,
    ) -> None:
        """`notice`: where a line about the cluster goes once connected. `actor_class`:
        the embedding actor (tests pass a subclass that stops at a known batch)."""
        super().__init__(store, options, progress=progress)
        self.ray = ray_options
        self.notice = notice or (lambda line: None)
        self.actor_class = actor_class
        self.stats = RayRunStats()
        self._connection = contextlib.ExitStack()
        self._probe: rw.ModelProbe | None = None
        self._roots: list[str] = []

    def index_scanned(self, scan: ScanReport) -> IndexReport:
        self.stats = RayRunStats()
        self._probe = None
        self._roots = [r for r in scan.roots if r not in scan.missing_roots]
        try:
            return super().index_scanned(scan)
        finally:
            self._connection.close()

    # ---------------------------------------------------------------- the model

    def _start_model(self) -> None:
        self._record_model(self._probed().dim)

    def _probed(self) -> rw.ModelProbe:
        """The model loaded once on the cluster (connecting first): its width and its
        preprocessing."""
        if self._probe is None:
            import ray

            self.stats.cluster = self._connection.enter_context(connected(self.ray.address))
            self.notice(f"{self.stats.cluster.describe()}; up to {self._max_actors()} actors")
            probe = ray.remote(num_cpus=self.ray.actor_cpus)(rw.probe_model)
            self.progress.model_loading()
            try:
                self._probe = ray.get(probe.remote(*self._model_args()))
            except ray.exceptions.RayError as exc:
                raise StoreError(
                    f"{self.options.image_model}: could not be loaded on the Ray cluster: "
                    f"{_cause(exc)}"
                ) from exc
            self.progress.model_loaded()
            if self._probe.built:
                self.stats.graphs_built.add(self._probe.worker)
        return self._probe

    def _model_args(self) -> tuple[str, str, int | None]:
        threads = self.options.threads or max(1, math.floor(self.ray.actor_cpus))
        return self.options.image_model, self.options.precision, threads

    def _max_actors(self) -> int:
        if self.ray.max_actors is not None:
            return self.ray.max_actors
        cpus = self.stats.cluster.cpus if self.stats.cluster else 1.0
        return max(1, int(cpus // self.ray.actor_cpus))

    # ---------------------------------------------------------------- the run

    def _process(
        self, work: list[tuple[ScannedFile, IndexedFile | None]], report: IndexReport
    ) -> None:
        if not work:
            return
        probe = self._probed()
        self._record_model(probe.dim)
        items = self._items(work)
        while items:  # a second pass only for files a worker skipped that needed the model
            self.stats.passes += 1
            items = self._embed_pass(items, probe, report)

    def _items(self, work: list[tuple[ScannedFile, IndexedFile | None]]) -> list[_Item]:
        held_by_size: dict[int, set[str]] = {}
        for gone in self._gone_by_hash.values():
            for f in gone:
                held_by_size.setdefault(f.size, set()).add(f.sha256)
        items = []
        for scanned, old in work:
            skip = set(held_by_size.get(scanned.size, ()))
            if old is not None and old.has_vector:
                skip.add(old.sha256)
            items.append(_Item(scanned, old, frozenset(skip)))
        return items

    def _embed_pass(
        self, items: list[_Item], probe: rw.ModelProbe, report: IndexReport
    ) -> list[_Item]:
        """One run of the pipeline over `items`; returns those to run again, unskipped."""
        import ray

        runner = ray.remote(num_cpus=0, max_restarts=0)(PipelineRunner).remote(
            self._plan(probe), _files_table(items)
        )
        again: list[_Item] = []
        try:
            asked = runner.next.remote()
            while (batch := ray.get(asked)) is not None:
                asked = runner.next.remote()  # the cluster goes on while these are written
                for row in range(len(batch[rw.SEQ])):
                    item = items[int(batch[rw.SEQ][row])]
                    if not self._settle(item, batch, row, report):
                        again.append(_Item(item.scanned, item.known, frozenset()))
        except ray.exceptions.RayError as exc:
            raise RayClusterError(
                f"the Ray pipeline failed ({_cause(exc)}); what was committed is kept: "
                "run again to go on"
            ) from exc
        finally:
            ray.kill(runner)
        return again

    def _plan(self, probe: rw.ModelProbe) -> PipelinePlan:
        return PipelinePlan(
            model_args=self._model_args(),
            preprocessor=probe.preprocessor,
            roots=self._roots,
            batch_size=self.options.batch_size,
            read_workers=self.options.read_workers,
            max_actors=self._max_actors(),
            actor_cpus=self.ray.actor_cpus,
            decode_cpus=self.ray.decode_cpus,
            actor_class=self.actor_class,
        )

    def _settle(
        self, item: _Item, batch: dict[str, np.ndarray], row: int, report: IndexReport
    ) -> bool:
        """Write one result as the local run does; False if it must go through the model."""
        prepared = rw.prepared_of(batch[rw.META][row])
        prepared.known = item.known
        worker = str(batch[rw.WORKER][row])
        self.stats.actors.add(worker)
        if bool(batch[rw.BUILT][row]):
            self.stats.graphs_built.add(worker)
        if self._settle_without_model(prepared, report):
            self._done += 1
            self._maybe_commit()
            return True
        if batch[rw.OUTCOME][row] == rw.UNREAD:
            return False  # its content was expected to be indexed already, and is not
        reason = decode_stored(str(batch[rw.REASON][row])) or None
        self._write_embedded(prepared, batch[rw.VECTOR][row], reason, report)
        self.stats.embedded += reason is None
        self._done += 1
        self._maybe_commit()
        return True


def _files_table(items: list[_Item]) -> Any:
    """What the pipeline reads: a row per file, numbered as `items`."""
    import pyarrow as pa

    return pa.table(
        {
            rw.SEQ: pa.array(range(len(items)), type=pa.int64()),
            # Arrow strings are UTF-8: a name that is not (surrogate-escaped) travels escaped.
            rw.PATH: pa.array([encode_stored(i.scanned.path) for i in items], type=pa.string()),
            rw.SIZE: pa.array([i.scanned.size for i in items], type=pa.int64()),
            rw.MTIME_NS: pa.array([i.scanned.mtime_ns for i in items], type=pa.int64()),
            rw.SKIP: pa.array([sorted(i.skip) for i in items], type=pa.list_(pa.string())),
        }
    )


def _cause(exc: BaseException) -> str:
    """The first line of what went wrong on the cluster, without Ray's wrapping."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return text[-1] if text else type(cause).__name__
