"""Handspring: CLIP embeddings on the CPU with ONNX Runtime, built from safetensors.

Names are imported on first use, so `import handspring.models.clip` (or a
text-only process) does not pay for image decoding and the runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from handspring.embedder import ClipModel, ImageEmbeddings
    from handspring.errors import CheckpointError, HandspringError, ImageError, TokenizerError
    from handspring.loading import load

_EXPORTS = {
    "load": "handspring.loading",
    "ClipModel": "handspring.embedder",
    "ImageEmbeddings": "handspring.embedder",
    "CheckpointError": "handspring.errors",
    "HandspringError": "handspring.errors",
    "ImageError": "handspring.errors",
    "TokenizerError": "handspring.errors",
}

__all__ = [
    "CheckpointError",
    "ClipModel",
    "HandspringError",
    "ImageEmbeddings",
    "ImageError",
    "TokenizerError",
    "load",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'handspring' has no attribute {name!r}")
