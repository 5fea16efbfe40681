"""ONNX Runtime CPU sessions, and a tower's session from the graph cache."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnxruntime as ort

from handspring.graph.layers import Precision
from handspring.runtime.backends import Runtime, chosen_backend
from handspring.runtime.cpu import int8_weight_bits
from handspring.runtime.graph_cache import cached_graph, graph_info, graph_key

if TYPE_CHECKING:
    import onnx

    from handspring.runtime.openvino_session import OpenVinoSession


def default_threads() -> int:
    """Physical-ish cores available to this process (ORT's default ignores cgroup CPU sets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def make_session(
    path: Path, threads: int | None = None, spinning: bool = True
) -> ort.InferenceSession:
    """One session on the CPU. Spinning keeps worker threads hot between the
    small ops of a transformer: at batch 1 it is worth ~20% on our 2 cores."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    # The pre-planned memory pattern holds every intermediate of a run at
    # once: ~25 MiB more at a batch of 16 images for ~2% of speed.
    options.enable_mem_pattern = False
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class TowerSession:
    """A tower's compiled graph: its session, where the graph is, and how it started."""

    session: ort.InferenceSession | OpenVinoSession
    graph_path: Path
    built: bool  # built now, rather than read from the cache
    seconds: float  # build (if any) + session start
    backend: str = "onnxruntime"  # or "openvino" (runtime/backends.py)


def precision_of(name: str) -> Precision:
    if name == "fp32":
        return Precision(int8=False)
    if name == "int8":
        return Precision(int8=True, weight_bits=int8_weight_bits())
    raise ValueError(f"precision must be 'fp32' or 'int8', not {name!r}")


def graph_precision(name: str) -> Precision:
    """The graph cache entry a load precision builds: bf16 runs a variant of the fp32
    graph (runtime/openvino_graphs.py)."""
    return precision_of("fp32" if name == "bf16" else name)


def built_session(
    weight_files: list[Path],
    options: dict[str, Any],
    build: Callable[[], onnx.ModelProto],
    threads: int | None,
    spinning: bool = True,
    fingerprints: list[str] | None = None,
    runtime: Runtime | None = None,
) -> TowerSession:
    """A session on the graph `build` makes, from the graph cache when it has
    one for these weights and options, on the backend `runtime` chooses."""
    start = time.perf_counter()
    key = graph_key(weight_files, options, fingerprints or ())
    path, built = cached_graph(key, build, graph_info(weight_files, options))
    runtime = runtime or Runtime()
    backend = chosen_backend(runtime, options)
    if backend == "openvino":
        from handspring.runtime.openvino_graphs import openvino_graph
        from handspring.runtime.openvino_session import openvino_session

        path, made = openvino_graph(path, runtime.precision)
        session: ort.InferenceSession | OpenVinoSession = openvino_session(
            path, runtime.precision, threads
        )
        built = built or made
    else:
        session = make_session(path, threads, spinning)
    return TowerSession(session, path, built, time.perf_counter() - start, backend)


def exported_session(path: Path, threads: int | None, spinning: bool = True) -> TowerSession:
    """A session on a pre-exported graph, run as it is."""
    start = time.perf_counter()
    session = make_session(path, threads, spinning)
    return TowerSession(session, path, False, time.perf_counter() - start)
