"""Handspring: image, text, audio and other embeddings on the CPU with ONNX Runtime, from
graphs built out of the checkpoints' weights.

Names are imported on first use, so `import handspring.models.clip` (or a
text-only process) does not pay for image decoding and the runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from handspring.embedder import ClipModel, Embeddings, ImageEmbeddings, Model
    from handspring.errors import (
        AudioError,
        CheckpointError,
        HandspringError,
        ImageError,
        InputError,
        TokenizerError,
    )
    from handspring.loading import load

_EXPORTS = {
    "load": "handspring.loading",
    "Model": "handspring.embedder",
    "Embeddings": "handspring.embedder",
    "ClipModel": "handspring.embedder",
    "ImageEmbeddings": "handspring.embedder",
    "AudioError": "handspring.errors",
    "CheckpointError": "handspring.errors",
    "HandspringError": "handspring.errors",
    "ImageError": "handspring.errors",
    "InputError": "handspring.errors",
    "TokenizerError": "handspring.errors",
}

__all__ = [
    "AudioError",
    "CheckpointError",
    "ClipModel",
    "Embeddings",
    "HandspringError",
    "ImageEmbeddings",
    "ImageError",
    "InputError",
    "Model",
    "TokenizerError",
    "load",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'handspring' has no attribute {name!r}")
