"""The models a server hosts: found by name or alias, loaded on first use (or up front),
unloaded after an idle time, each with its batchers."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from handspring.embedder import Model
from handspring.loading import load, locate
from handspring.registry import FAMILIES, known_model, resolve_alias
from handspring.server.config import ModelSpec, ServerConfig
from handspring.server.engine.batcher import Batcher
from handspring.server.errors import RequestError
from handspring.server.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: Model
    load_seconds: float
    batchers: dict[tuple[str, str | None], Batcher] = field(default_factory=dict)
    leases: int = 0
    last_used: float = field(default_factory=time.monotonic)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.model.modalities)


class ModelPool:
    def __init__(self, config: ServerConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.specs = {spec.name: spec for spec in config.models}
        self._loaded: dict[str, LoadedModel] = {}
        self._loading: dict[str, asyncio.Task[LoadedModel]] = {}
        self._unavailable: dict[str, str] = {}  # name -> why its files cannot be found
        # Once a model is located: the modalities a request naming no model is sent to it
        # for, and all those it embeds.
        self._serves: dict[str, tuple[str, ...]] = {}
        self._embeds: dict[str, tuple[str, ...]] = {}
        self._preloading = config.preload

    # ------------------------------------------------------------- lookup

    def find(self, requested: str | None, modality: str) -> ModelSpec:
        """The model a request names (by name, source, alias or repo id), or the default for
        `modality` (see `find_for`)."""
        return self.find_for(requested, (modality,))

    def find_for(self, requested: str | None, modalities: Sequence[str]) -> ModelSpec:
        """The model a request names, or the default for a request whose items are of all
        these modalities (Weaviate's vectorize needs one model, one space, for all of them):
        1. the configured default (images: --default-image-model, texts:
           --default-text-model, pairs: --default-rerank-model, sparse:
           --default-sparse-model) when it embeds them;
        2. else, of the models that serve them by default, the one that serves the fewest
           other modalities: a CLIP model before ImageBind for images, a sentence model
           before a CLIP text tower for texts (the first listed among equals);
        3. else the first model that embeds them.
        When every model's modalities are known and none embeds them, 422 names them."""
        if requested:
            if (spec := self.named(requested)) is not None:
                return spec
            known = ", ".join(self.specs)
            raise RequestError(
                404, f"model {requested!r} is not served here (served: {known})", param="model"
            )
        wanted = set(modalities)
        for name in self._configured_defaults(wanted):
            spec = self.specs[name]
            if spec.name not in self._embeds or wanted <= set(self._embeds[spec.name]):
                return spec
        serving = [s for s in self.specs.values() if wanted <= set(self._serves.get(s.name, ()))]
        if serving:
            return min(serving, key=lambda s: len(self._serves[s.name]))
        for spec in self.specs.values():
            if wanted <= set(self._embeds.get(spec.name, ())):
                return spec
        if all(name in self._embeds for name in self.specs):
            served = "; ".join(f"{n}: {', '.join(m)}" for n, m in self._embeds.items())
            raise RequestError(
                422,
                f"no model served here embeds {' and '.join(modalities)} (served: {served})",
                param="modality",
            )
        # Some model's files could not be found: its load answers for it (503).
        return next(iter(self.specs.values()))

    def named(self, requested: str) -> ModelSpec | None:
        """The served model a request names (by name, source, alias or repo id), if any."""
        return next((s for s in self.specs.values() if requested in _names_of(s)), None)

    async def adopt(self, spec: ModelSpec) -> ModelSpec:
        """Serve one more model from now on (a contract that names models the operator did
        not list, as Immich does): found without loading, like the configured ones."""
        if (known := self.specs.get(spec.name)) is not None:
            return known
        located = await asyncio.to_thread(locate, spec.source)
        self._serves[spec.name] = located.family.serves_by_default
        self._embeds[spec.name] = located.family.modalities
        log.info("serving %s=%s, named by a request", spec.name, spec.source)
        return self.specs.setdefault(spec.name, spec)

    def _configured_defaults(self, modalities: set[str]) -> list[str]:
        configured: list[str] = []
        if "image" in modalities and self.config.default_image_model:
            configured.append(self.config.default_image_model)
        if "text" in modalities and self.config.default_text_model:
            configured.append(self.config.default_text_model)
        if "text-pair" in modalities and self.config.default_rerank_model:
            configured.append(self.config.default_rerank_model)
        if "sparse" in modalities and self.config.default_sparse_model:
            configured.append(self.config.default_sparse_model)
        return configured

    # ------------------------------------------------------------ loading

    async def check_available(self) -> None:
        """Find each model's files (without loading) so readiness can be answered honestly."""
        for spec in self.specs.values():
            try:
                located = await asyncio.to_thread(locate, spec.source)
                self._serves[spec.name] = located.family.serves_by_default
                self._embeds[spec.name] = located.family.modalities
            except Exception as exc:
                self._unavailable[spec.name] = str(exc)
                log.error("model %s (%s) cannot be found: %s", spec.name, spec.source, exc)

    async def preload(self) -> None:
        try:
            for spec in self.specs.values():
                await self._load(spec)
        finally:
            self._preloading = False

    def ready(self) -> tuple[bool, str]:
        if self._preloading:
            return False, "models are loading"
        if self._unavailable:
            return False, "; ".join(f"{n}: {why}" for n, why in self._unavailable.items())
        return True, "ready"

    async def _load(self, spec: ModelSpec) -> LoadedModel:
        """The loaded model; one load per model at a time, whoever waits for it. The load
        is shielded: a request that times out or goes away does not abandon a half-done
        load for the next request to start again."""
        if (loaded := self._loaded.get(spec.name)) is not None:
            return loaded
        task = self._loading.get(spec.name)
        if task is None:
            task = asyncio.create_task(self._load_now(spec), name=f"load {spec.name}")
            self._loading[spec.name] = task
            task.add_done_callback(lambda _: self._loading.pop(spec.name, None))
        return await asyncio.shield(task)

    async def _load_now(self, spec: ModelSpec) -> LoadedModel:
        start = time.perf_counter()
        log.info("loading model %s from %s (%s)", spec.name, spec.source, spec.precision)
        try:
            model = await asyncio.to_thread(
                load,
                spec.source,
                precision=spec.precision,
                backend=self.config.backend,
                threads=self.config.threads,
                max_pixels=self.config.max_pixels,
                max_audio_seconds=self.config.max_audio_seconds,
                spinning=self.config.spinning,
            )
        except Exception as exc:
            log.exception("model %s failed to load", spec.name)
            raise RequestError(503, f"model {spec.name!r} could not be loaded: {exc}") from exc
        seconds = time.perf_counter() - start
        loaded = LoadedModel(spec, model, seconds)
        self._loaded[spec.name] = loaded
        self._embeds[spec.name] = loaded.modalities
        if (family := FAMILIES.get(model.family)) is not None:  # its files were found late
            self._serves.setdefault(spec.name, family.serves_by_default)
        self._unavailable.pop(spec.name, None)
        # What the load made lives as long as the model: frozen out of the collector's
        # generations, a full collection no longer walks it. Otherwise one comes every few
        # seconds under load and holds the GIL 25 ms (50-180 ms on a busy core), stalling
        # every request and refusal meanwhile.
        gc.collect()
        gc.freeze()
        self.metrics.model_load.labels(spec.name).set(seconds)
        self.metrics.model_loaded.labels(spec.name).set(1)
        log.info("model %s loaded in %.2f s", spec.name, seconds)
        return loaded

    @contextlib.asynccontextmanager
    async def lease(self, spec: ModelSpec) -> AsyncIterator[LoadedModel]:
        """The loaded model, kept in memory while the lease is held."""
        loaded = await self._load(spec)
        # Between a load's end and this line the loop ran other work (a collection, the
        # idle unloader): a model unloaded meanwhile is loaded again, never leased.
        while self._loaded.get(spec.name) is not loaded:
            loaded = await self._load(spec)
        loaded.leases += 1
        try:
            yield loaded
        finally:
            loaded.leases -= 1
            loaded.last_used = time.monotonic()

    def batcher(
        self,
        loaded: LoadedModel,
        modality: str,
        variant: str | None,
        run: Callable[[list], np.ndarray],
    ) -> Batcher:
        """The batcher for one model, modality and variant (a text prompt), made on first use."""
        key = (modality, variant)
        if (batcher := loaded.batchers.get(key)) is None:
            labels = (loaded.spec.name, modality)
            depth = self.metrics.queue_depth.labels(*labels)
            sizes = self.metrics.batch_size.labels(*labels)
            items = self.metrics.items.labels(*labels)

            def on_batch(size: int) -> None:
                sizes.observe(size)
                items.inc(size)

            batcher = Batcher(
                f"{loaded.spec.name}/{modality}" + (f"/{variant}" if variant else ""),
                run,
                max_batch=self.config.max_batch,
                max_wait_s=self.config.max_wait_ms / 1000,
                max_queue=self.config.max_queue,
                on_batch=on_batch,
                on_depth=depth.set,
            )
            loaded.batchers[key] = batcher
        return batcher

    # ---------------------------------------------------------- unloading

    async def unload_idle_forever(self) -> None:
        idle = self.config.idle_unload_s
        while True:
            await asyncio.sleep(min(max(idle / 4, 0.05), 5.0))
            await self._unload_idle(idle)

    async def _unload_idle(self, idle: float) -> None:
        # A function of its own: a loop variable in the sleeping coroutine above would
        # keep the last unloaded model alive, and its memory with it.
        now = time.monotonic()
        for loaded in list(self._loaded.values()):
            if loaded.leases == 0 and now - loaded.last_used >= idle:
                await self._unload(loaded)

    async def _unload(self, loaded: LoadedModel) -> None:
        # No await before the model leaves the table: no lease can start in between.
        del self._loaded[loaded.spec.name]
        self.metrics.model_loaded.labels(loaded.spec.name).set(0)
        for batcher in loaded.batchers.values():
            await batcher.close()
        loaded.batchers.clear()
        loaded.model = None  # type: ignore[assignment]
        gc.unfreeze()  # the model's cycles become collectable; the next load freezes again
        _release_freed_memory()
        log.info("model %s unloaded after %.0f s idle", loaded.spec.name, self.config.idle_unload_s)

    async def close(self) -> None:
        for loaded in list(self._loaded.values()):
            for batcher in loaded.batchers.values():
                await batcher.close()
        self._loaded.clear()

    def status(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for spec in self.specs.values():
            loaded = self._loaded.get(spec.name)
            entry: dict[str, object] = {
                "name": spec.name,
                "source": spec.source,
                "precision": spec.precision,
                "loaded": loaded is not None,
            }
            if loaded is not None:
                entry |= {
                    "dim": loaded.model.dim,
                    "modalities": list(loaded.modalities),
                    "load_seconds": round(loaded.load_seconds, 3),
                    # The runtime each tower runs on ("onnxruntime" or "openvino").
                    "backends": {m: t.compiled.backend for m, t in loaded.model.towers.items()},
                }
            out.append(entry)
        return out

    def loaded(self, name: str) -> LoadedModel | None:
        return self._loaded.get(name)


def _release_freed_memory() -> None:
    """Hand freed memory back to the OS: glibc keeps a freed model's heap otherwise, and a
    reload would add to it rather than reuse it."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _names_of(spec: ModelSpec) -> set[str]:
    names = {spec.name, spec.source, resolve_alias(spec.source)}
    if (entry := known_model(spec.source)) is not None:
        names |= {entry.alias, entry.repo_id}
    return names
