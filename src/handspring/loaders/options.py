"""What `handspring.load` passes to every family's loader."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from handspring.graph.layers import Precision
from handspring.runtime.backends import Runtime
from handspring.runtime.session import TowerSession
from handspring.towers.base import item_precision
from handspring.towers.image import DecodeOptions

log = logging.getLogger("handspring")

# Longer sounds are refused from their header, before they are decoded.
DEFAULT_MAX_AUDIO_SECONDS = 600.0


@dataclass(frozen=True)
class LoadOptions:
    precision: Precision
    precision_name: str  # "fp32" | "int8" | "bf16", as the caller said it
    threads: int | None = None
    spinning: bool = True
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS
    backend: str = "auto"  # "auto" | "onnxruntime" | "openvino" (runtime/backends.py)

    @property
    def runtime(self) -> Runtime:
        return Runtime(self.backend, self.precision_name)


def tower_precision(
    name: str, modality: str, options: LoadOptions, rows_per_item: int | None = None
) -> Precision:
    """The precision a tower is built at: int8 only where its registry gate allows it, and
    for a tower whose items have `rows_per_item` token rows, its activation scales as
    `towers.base.item_precision` sets them (the tower runs as many items at a time as
    `items_per_run` of the same rows says)."""
    precision = options.precision
    if precision.int8:
        from handspring.registry import check_int8_gate

        check_int8_gate(name, modality)
    if rows_per_item is not None:
        precision = item_precision(precision, rows_per_item)
    return precision


def log_ready(name: str, compiled: Mapping[str, TowerSession]) -> None:
    for modality, tower in compiled.items():
        how = f"{'built' if tower.built else 'cached graph'}, {tower.backend}"
        log.info("%s %s tower ready in %.2f s (%s)", name, modality, tower.seconds, how)
