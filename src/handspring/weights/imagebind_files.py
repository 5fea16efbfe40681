"""Where an ImageBind checkpoint's weights are: safetensors under the original keys
(one file or sharded), or the official torch pickle `imagebind_huge.pth`."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

import numpy as np

from handspring.errors import CheckpointError
from handspring.weights import hub
from handspring.weights.json_files import read_json
from handspring.weights.safetensors_io import TensorSource, shard_paths

PICKLE_PATTERNS = ("*.pth", "*.pt")
SAFETENSORS_PATTERNS = ("*.safetensors", "*.safetensors.index.json")


def is_imagebind_folder(root: Path) -> bool:
    """A config.json saying so, an official pickle, or safetensors with ImageBind's keys."""
    config = root / "config.json"
    if config.is_file():
        return read_json(config).get("model_type") == "imagebind"
    if any(p for pattern in PICKLE_PATTERNS for p in root.glob(pattern)):
        return True
    for path in sorted(root.glob("*.safetensors"))[:1]:
        try:
            return any(k.startswith("modality_trunks.") for k in TensorSource.open([path]))
        except CheckpointError:
            return False
    return False


def fetch_imagebind(repo: str, modalities: Collection[str] = ()) -> Path:
    """A hub repo's config and weights: safetensors when it has them, else the pickle,
    never both (each is 4.8 GB for imagebind_huge). Every tower is in the one file, so
    `modalities` changes nothing."""
    root = hub.fetch(repo, ("config.json", *SAFETENSORS_PATTERNS))
    if any(root.glob("*.safetensors")):
        return root
    return hub.fetch(repo, ("config.json", *PICKLE_PATTERNS))


def imagebind_weights(root: Path) -> tuple[Mapping[str, np.ndarray], list[Path]]:
    """The tensors (read lazily, one at a time) and the files they come from."""
    index = sorted(root.glob("*.safetensors.index.json"))
    if index:
        paths = shard_paths(root, index[0].name)
        return TensorSource.open(paths), paths
    single = sorted(root.glob("*.safetensors"))
    if single:
        return TensorSource.open(single[:1]), single[:1]
    pickles = sorted(p for pattern in PICKLE_PATTERNS for p in root.glob(pattern))
    if pickles:
        from handspring.weights.torch_pickle import TorchCheckpoint

        return TorchCheckpoint.open(pickles[0]), pickles[:1]
    raise CheckpointError(
        str(root), "no ImageBind weights (expected *.safetensors or imagebind_huge.pth)"
    )
