"""Reading safetensors checkpoints into float32 numpy arrays, one tensor at a time.

safetensors' own reader checks the file and gives names, dtypes and shapes; the data is
read from the offsets in the file's header with plain reads, not through the reader's
memory map: every page of a map that is touched counts in the process's RSS until it is
unmapped, so a graph build that read all of ViT-B/32's 605 MB through the map held it all
at once (a cold int8 load peaked at 800 MiB, 624 of them file pages). A read's buffer is
freed as soon as the builder is done with the tensor.

bfloat16 has no numpy dtype: it is read as raw uint16 and widened by a bit shift (bf16
is the top half of a float32, so this is exact).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
from safetensors import safe_open

from handspring.errors import CheckpointError

# safetensors' float dtypes, as numpy reads their bytes (little-endian by the format).
_FLOAT_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "F64": "<f8"}


class TensorFile:
    """One .safetensors file, read lazily."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise CheckpointError(str(path), "file not found")
        try:
            self._handle = safe_open(str(path), framework="numpy")
            self._keys = list(self._handle.keys())
        except Exception as exc:  # safetensors raises its own internal error types
            raise CheckpointError(str(path), f"not a readable safetensors file ({exc})") from exc
        self._header: dict[str, dict] | None = None

    def names(self) -> list[str]:
        return self._keys

    def dtype(self, key: str) -> str:
        return self._handle.get_slice(key).get_dtype()

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._handle.get_slice(key).get_shape())

    def get(self, key: str) -> np.ndarray:
        dtype = self.dtype(key)
        if dtype not in _FLOAT_DTYPES:
            raise CheckpointError(str(self.path), f"dtype {dtype} is not a float type", key)
        try:
            raw = self._read(key, _FLOAT_DTYPES[dtype])
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(str(self.path), f"tensor unreadable ({exc})", key) from exc
        if dtype == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.astype(np.float32, copy=False)

    def _read(self, key: str, dtype: str) -> np.ndarray:
        if self._header is None:
            with self.path.open("rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                self._header = json.loads(f.read(size))
                self._data_start = 8 + size
        info = self._header[key]
        start, end = info["data_offsets"]
        count = (end - start) // np.dtype(dtype).itemsize
        raw = np.fromfile(self.path, dtype=dtype, count=count, offset=self._data_start + start)
        if raw.size != count:
            raise CheckpointError(str(self.path), "file is truncated", key)
        return raw.reshape(info["shape"])


class TensorSource(Mapping[str, np.ndarray]):
    """All tensors of a checkpoint, possibly sharded, under (renamed) keys.

    `rename` maps a key of this source to (file key, transform); it lets the
    OpenAI/OpenCLIP layout be read under transformers' names without copying.
    """

    def __init__(self, files: list[TensorFile]) -> None:
        self.files = files
        self._where: dict[str, TensorFile] = {}
        for file in files:
            for key in file.names():
                self._where[key] = file

    @classmethod
    def open(cls, paths: list[Path]) -> TensorSource:
        return cls([TensorFile(p) for p in paths])

    def describe(self) -> str:
        return ", ".join(str(f.path) for f in self.files)

    def file_of(self, key: str) -> Path:
        return self._where[key].path

    def shape(self, key: str) -> tuple[int, ...]:
        return self._where[key].shape(key)

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._where:
            raise CheckpointError(self.describe(), "missing tensor", key)
        return self._where[key].get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def shard_paths(folder: Path, index_name: str) -> list[Path]:
    """The shard files a `*.safetensors.index.json` names."""
    index_path = folder / index_name
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(str(index_path), f"unreadable shard index ({exc})") from exc
    return [folder / name for name in sorted(set(weight_map.values()))]
