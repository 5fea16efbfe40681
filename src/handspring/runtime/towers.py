"""From a checkpoint to a ready ONNX Runtime session per tower, through the graph cache."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnxruntime as ort

from handspring.graph.layers import Precision
from handspring.models.clip import build_text_graph, build_vision_graph
from handspring.runtime.cpu import int8_weight_bits
from handspring.runtime.graph_cache import cached_graph, graph_key
from handspring.runtime.session import make_session
from handspring.weights.checkpoint import ClipCheckpoint, Modality

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True)
class TowerSession:
    session: ort.InferenceSession
    graph_path: Path
    built: bool  # built now, rather than read from the cache
    seconds: float  # build (if any) + session start


def precision_of(name: str) -> Precision:
    if name == "fp32":
        return Precision(int8=False)
    if name == "int8":
        return Precision(int8=True, weight_bits=int8_weight_bits())
    raise ValueError(f"precision must be 'fp32' or 'int8', not {name!r}")


def built_session(
    weight_files: list[Path],
    options: dict[str, Any],
    build: Callable[[], onnx.ModelProto],
    threads: int | None,
    spinning: bool = True,
) -> TowerSession:
    """A session on the graph `build` makes, from the graph cache when it has
    one for these weights and options."""
    start = time.perf_counter()
    path, built = cached_graph(graph_key(weight_files, options), build)
    session = make_session(path, threads, spinning)
    return TowerSession(session, path, built, time.perf_counter() - start)


def clip_tower(
    checkpoint: ClipCheckpoint,
    modality: Modality,
    precision: Precision,
    threads: int | None,
    spinning: bool = True,
) -> TowerSession:
    if checkpoint.layout == "immich":
        # Pre-exported graphs run as they are; precision is whatever they were exported at.
        start = time.perf_counter()
        path = checkpoint.onnx_files[modality]
        session = make_session(path, threads, spinning)
        return TowerSession(session, path, False, time.perf_counter() - start)
    assert checkpoint.config is not None and checkpoint.tensors is not None
    config, tensors = checkpoint.config, checkpoint.tensors
    options = {
        "family": "clip",
        "tower": modality,
        "precision": precision.tag,
        "config": asdict(config.vision if modality == "image" else config.text),
        "projection_dim": config.projection_dim,
    }

    def build() -> onnx.ModelProto:
        builder = build_vision_graph if modality == "image" else build_text_graph
        return builder(config, tensors, precision)

    return built_session(checkpoint.weight_files, options, build, threads, spinning)
