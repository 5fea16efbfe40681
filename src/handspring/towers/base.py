"""A tower: one modality of a loaded model, as preprocessing -> graph -> postprocessing.

The loop that batches items, overlaps preparation with inference and reports bad items
lives in `handspring.embedder`; a tower only says how to turn one item into model input
(`prepare`) and how to run a batch of prepared inputs (`run`). A new modality is a new
tower; nothing that drives towers (the embedder, the server, the CLI) changes.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from handspring.errors import InputError
from handspring.graph.layers import Precision
from handspring.runtime.session import TowerSession

Options = Mapping[str, Any]


class Tower(ABC):
    """What every modality's tower provides. Subclasses set the class attributes."""

    modality: str
    error_type: type[InputError] = InputError
    # Items per `embed` batch when the caller gives none.
    batch_size: int = 16
    # Items prepared one by one on the decode pool (decoders and resamplers release the
    # GIL); otherwise a whole batch is prepared at once on the calling thread.
    prepare_in_pool: bool = True
    # Texts run sorted by length within a window of this many batches, so little is padded.
    sort_window: int = 1
    # What `normalize=None` means for this tower's model.
    default_normalize: bool = True
    # Named prompts (sentence-transformers models); empty for every other tower.
    prompts: Mapping[str, str] = {}

    def __init__(self, compiled: TowerSession, dim: int) -> None:
        self.compiled = compiled
        self.dim = dim

    # The compiled graph, for callers that inspect or benchmark a tower.
    @property
    def session(self) -> ort.InferenceSession:
        return self.compiled.session

    @property
    def graph_path(self) -> Path:
        return self.compiled.graph_path

    @property
    def built(self) -> bool:
        return self.compiled.built

    @property
    def seconds(self) -> float:
        return self.compiled.seconds

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, graph={self.graph_path})"

    # ------------------------------------------------------------ preparation

    def check_options(self, options: Options) -> None:
        """Refuse options this tower does not take (ValueError), before any work."""
        if options:
            raise ValueError(f"{self.modality} inputs take no options (got {', '.join(options)})")

    def describe(self, item: Any, index: int) -> str:
        """A name for `item` in error messages: its path, or `<bytes #3>` and the like."""
        from handspring.preprocess.decode import describe_item

        return describe_item(item, index)

    @abstractmethod
    def prepare(self, item: Any, name: str, options: Options) -> Any:
        """One item as model input. Raises `self.error_type` naming `name` and the reason."""

    def prepare_batch(
        self, items: Sequence[Any], names: Sequence[str], options: Options
    ) -> list[Any]:
        """Each item prepared, or the InputError that says why it could not be."""
        out: list[Any] = []
        for item, name in zip(items, names, strict=True):
            try:
                out.append(self.prepare(item, name, options))
            except InputError as exc:
                out.append(exc)
        return out

    def length(self, prepared: Any) -> int:
        """What texts are sorted by (tokens); 0 where order does not matter."""
        return 0

    # ---------------------------------------------------------------- running

    @abstractmethod
    def run(self, batch: Sequence[Any]) -> np.ndarray:
        """float32 [N, dim], before normalisation, from prepared inputs. A row's result
        does not depend on the other rows, bit for bit."""

    # Items of one session run; `run` splits larger batches. Image towers set it from
    # their token count (`items_per_run`).
    run_rows: int = 8
    # Items of one run for towers that sort a batch by length (texts): shorter runs pad
    # less, since each is padded only to its own longest item.
    sorted_run_rows: int = 16

    def run_chunked(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """The session on `inputs`, in chunks of `run_rows` along the first axis."""
        rows = len(next(iter(inputs.values())))
        out = np.empty((rows, self.dim), dtype=np.float32)
        for start in range(0, rows, self.run_rows):
            chunk = {k: v[start : start + self.run_rows] for k, v in inputs.items()}
            out[start : start + self.run_rows] = self.session.run(None, chunk)[0]
        return out


# Token rows in one session run of a ViT. Beyond a few hundred rows an int8 run turns
# memory-bound: its fp32 [rows, 4D] activations leave the cache between the quantize,
# MatMul and GELU steps. SigLIP base/16 int8 took 93 ms of CPU per image in runs of one or
# two images and 138 ms in runs of eight; fp32 was flat (358-398 ms); CLIP B/32 (50 tokens)
# was fastest in runs of 8.
ROWS_PER_RUN = 400

# Items of at least this many token rows run one per session run, with their int8
# activations quantized per tensor (`item_precision`). With one item in the tensor that
# is one scale per item, so no row depends on another item, as with per-row scales; and
# ONNX Runtime folds a per-tensor scale and the bias into the int8 GEMM, where per-row
# scales take four more passes over every activation. SigLIP base/16 (196 rows) int8,
# 2 threads: 25.6 images/s alone this way against 20.6 per row alone and 18.0 per row in
# runs of 16. CLIP B/32 (50 rows) is faster batched per row: 102 against 65 alone.
PER_ITEM_ROWS = 128


def items_per_run(tokens_per_item: int) -> int:
    """How many items of `tokens_per_item` rows each make one session run."""
    if tokens_per_item >= PER_ITEM_ROWS:
        return 1
    return max(1, ROWS_PER_RUN // tokens_per_item)


def item_precision(precision: Precision, tokens_per_item: int) -> Precision:
    """The precision of a tower whose items have `tokens_per_item` rows: int8 with
    per-tensor activations where each item runs alone (`items_per_run`)."""
    if precision.int8 and tokens_per_item >= PER_ITEM_ROWS:
        return dataclasses.replace(precision, per_row=False)
    return precision
