"""What runs on the Ray cluster for `photos index --ray` (the driver's side is
ray_pipeline.py). Plain functions and a class: Ray Data runs them as tasks and actors.

- `probe_model`: one load of the model on a worker, before the pipeline starts: its
  width for the index, and its image tower without the session, which is all that
  decoding needs. It also leaves the graph built in that node's cache.
- `read_and_decode` (CPU tasks): each file read once, hashed and described (size,
  mtime, EXIF) exactly as the local indexer reads it (scanning/reading.py), then decoded
  into model input by the tower's own `prepare` (JPEG draft mode).
- `EmbedActor` (the actor pool): the model loaded once per actor; its graph comes from
  the node's graph cache, which builds it once per node (runtime/graph_cache.py).

The workers must see the library at the paths the driver scanned (the same mount).
"""

from __future__ import annotations

import copy
import os
import pickle
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from handspring.embedder import Model, postprocess
from handspring.errors import InputError
from handspring.photos.indexing.indexer import failure_reason
from handspring.photos.scanning.metadata import enable_heif
from handspring.photos.scanning.reading import Prepared, prepare
from handspring.photos.scanning.scan import ScannedFile
from handspring.photos.stores.stored_paths import decode_stored, encode_stored
from handspring.towers.base import Tower

# Columns of the pipeline's rows.
SEQ = "seq"  # the driver's number for the file
PATH, SIZE, MTIME_NS = "path", "size", "mtime_ns"
SKIP = "skip"  # contents whose vector the index holds already: not decoded (moves, touches)
META = "meta"  # the Prepared file (pickled, without its bytes): what the driver writes
INPUT = "input"  # the model input (pickled); dropped once embedded
REASON = "reason"  # why a photo could not be embedded ("" when it was)
OUTCOME = "outcome"  # one of the three below
VECTOR = "vector"
WORKER = "worker"  # the actor that embedded the batch: node id and pid
BUILT = "built"  # whether that actor built its graph (rather than found it cached)

DECODED = "decoded"  # model input made: to embed
FAILED = "failed"  # read, but not decodable: REASON says why
UNREAD = "unread"  # not for the model: vanished, unreadable, or a content in SKIP


def load_image_model(name: str, precision: str, threads: int | None) -> Model:
    """The image model as the local indexer loads it (Indexer.model)."""
    import handspring

    return handspring.load(
        name,
        modalities=("image",),
        precision=precision,
        threads=threads,
        fast_decode=True,
        spinning=False,  # decoding tasks share the node's cores
    )


def worker_name() -> str:
    import ray

    return f"{ray.get_runtime_context().get_node_id()[:12]}:{os.getpid()}"


@dataclass(frozen=True)
class ModelProbe:
    dim: int
    preprocessor: Tower  # the image tower without its session
    built: bool  # the probe built the graph on its node
    worker: str


def preprocessing_of(tower: Tower) -> Tower:
    """`tower` without its ONNX Runtime session, which neither pickles nor is needed to
    prepare inputs."""
    clone = copy.copy(tower)
    del clone.compiled
    return clone


def probe_model(name: str, precision: str, threads: int | None) -> ModelProbe:
    model = load_image_model(name, precision, threads)
    tower = model.tower("image")
    return ModelProbe(model.dim, preprocessing_of(tower), tower.built, worker_name())


# ------------------------------------------------------------------ decoding tasks


def read_and_decode(
    batch: dict[str, np.ndarray],
    *,
    preprocessor: Tower,
    roots: Sequence[str],
    read_workers: int,
) -> dict[str, np.ndarray]:
    """Ray Data batch function: files in, their records and model inputs out."""
    enable_heif()
    rows = range(len(batch[SEQ]))

    def one(row: int) -> tuple[bytes, bytes, str, str]:
        scanned = ScannedFile(
            decode_stored(str(batch[PATH][row])), int(batch[SIZE][row]), int(batch[MTIME_NS][row])
        )
        return _read_one(scanned, set(batch[SKIP][row]), row, preprocessor, roots)

    # Threads overlap the reads (a network mount's latency) with decoding, which
    # releases the GIL; the order of the rows is kept.
    with ThreadPoolExecutor(read_workers, thread_name_prefix="read") as pool:
        done = list(pool.map(one, rows))
    return {
        SEQ: batch[SEQ],
        META: _objects([d[0] for d in done]),
        INPUT: _objects([d[1] for d in done]),
        # Arrow strings are UTF-8: a name that is not (surrogate-escaped) travels escaped.
        REASON: np.array([encode_stored(d[2]) for d in done], dtype=object),
        OUTCOME: np.array([d[3] for d in done], dtype=object),
    }


def _read_one(
    scanned: ScannedFile, skip: set[str], row: int, preprocessor: Tower, roots: Sequence[str]
) -> tuple[bytes, bytes, str, str]:
    prepared = prepare(scanned, None)
    if prepared.vanished:
        _check_library_mounted(scanned.path, roots)
    model_input, reason, outcome = b"", "", UNREAD
    record = prepared.record
    if record is not None and prepared.problem is None and record.sha256 not in skip:
        made, why = model_input_of(preprocessor, prepared.data, row)
        if why is None:
            model_input, outcome = pickle.dumps(made, protocol=5), DECODED
        else:
            reason, outcome = why, FAILED
    prepared.data = b""  # the bytes stay here: only the record goes back
    return pickle.dumps(prepared, protocol=5), model_input, reason, outcome


def model_input_of(tower: Tower, data: bytes, row: int) -> tuple[Any, str | None]:
    """The tower's input for a file's bytes, or why there is none, in the words the local
    indexer records (the embedder's handling of a bad item, embedder.Model._run_chunk)."""
    name = tower.describe(data, row)
    try:
        return tower.prepare(data, name, {}), None
    except InputError as exc:
        return None, failure_reason(exc)
    except Exception as exc:  # a decoder bug must not sink the batch either
        error = tower.error_type(name, "could not be read", f"{type(exc).__name__}: {exc}")
        return None, failure_reason(error)


def _check_library_mounted(path: str, roots: Sequence[str]) -> None:
    """A file gone on a worker whose root is missing there means a worker without the
    library mounted, not a deleted photo: stop rather than skip the whole library."""
    for root in roots:
        if path.startswith(root.rstrip("/") + "/") and not os.path.isdir(root):
            raise FileNotFoundError(
                f"{root}: not found on Ray worker {worker_name()}; every worker must mount "
                "the library at the path the driver scanned"
            )


def _objects(values: list[bytes]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


# ------------------------------------------------------------------ embedding actors


class EmbedActor:
    """Ray Data callable class: one model per actor, loaded when the actor starts."""

    def __init__(self, image_model: str, precision: str, threads: int | None) -> None:
        model = load_image_model(image_model, precision, threads)
        self.tower = model.tower("image")
        self.dim = model.dim
        self.built = self.tower.built
        self.worker = worker_name()
        self.batches = 0  # batches embedded by this actor (tests stop one at a known batch)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = len(batch[SEQ])
        vectors = np.full((rows, self.dim), np.nan, dtype=np.float32)
        ready = [row for row in range(rows) if batch[OUTCOME][row] == DECODED]
        if ready:
            inputs = [pickle.loads(batch[INPUT][row]) for row in ready]
            vectors[ready] = postprocess(self.tower.run(inputs), normalize=True, dimensions=None)
        self.batches += 1
        return {
            SEQ: batch[SEQ],
            META: batch[META],
            REASON: batch[REASON],
            OUTCOME: batch[OUTCOME],
            VECTOR: vectors,
            WORKER: np.array([self.worker] * rows, dtype=object),
            BUILT: np.full(rows, self.built),
        }


def prepared_of(meta: bytes) -> Prepared:
    prepared = pickle.loads(meta)
    assert isinstance(prepared, Prepared)
    return prepared
