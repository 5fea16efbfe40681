"""Handspring: CLIP embeddings on the CPU with ONNX Runtime, built from safetensors."""

from handspring.embedder import ClipModel, ImageEmbeddings
from handspring.errors import CheckpointError, HandspringError, ImageError, TokenizerError
from handspring.loading import load

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
