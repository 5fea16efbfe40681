"""Reading PyTorch `torch.save` checkpoints (zip format) without torch.

A pickle can name any callable and have it run on load, so the checkpoint's is read by an
unpickler that knows only the few globals a state dict of tensors needs and refuses all others.
Torch stores each storage uncompressed and 64-byte aligned, so the file is memory-mapped and a
tensor is a view that touches only its own pages, read when asked for.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from handspring.errors import CheckpointError

# torch's storage class name -> numpy dtype of its elements (bf16 read as raw uint16).
_STORAGE_DTYPES = {
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "BFloat16Storage": "u2",
    "DoubleStorage": "f8",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "b1",
    "UntypedStorage": "u1",
}
_WIDENED = {"HalfStorage", "BFloat16Storage", "DoubleStorage"}
_CONVERT_HINT = "re-save it with torch.save (default zip format) or convert it to safetensors"


# The stand-ins are strings and named tuples: a BUILD opcode cannot alter them (no __dict__,
# no settable attributes), and the pickle has no way to reach their classes.
class _Storage(NamedTuple):
    kind: str  # torch's storage class name, e.g. "BFloat16Storage"
    key: str  # the record data/<key> holding its bytes
    numel: int


class _LazyTensor(NamedTuple):
    storage: _Storage
    offset: int  # in elements, like shape and strides
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> _LazyTensor:
    dims_match = isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
    numbers = (offset, *size, *stride) if dims_match else (None,)
    if not isinstance(storage, _Storage) or not all(isinstance(n, int) and n >= 0 for n in numbers):
        raise ValueError(f"bad tensor record: offset {offset!r}, size {size!r}, stride {stride!r}")
    return _LazyTensor(storage, offset, size, stride)


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data  # a Parameter is its tensor plus autograd flags we have no use for


# What the pickle may name, mapped to our inert stand-ins: nothing of torch's is ever called.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{(m, n): n for n in _STORAGE_DTYPES for m in ("torch", "torch.storage")},
}


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, source: str) -> None:
        super().__init__(io.BytesIO(data))
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        raise CheckpointError(
            self.source,
            f"forbidden global {module}.{name} in the pickle: only tensors, parameters and "
            "OrderedDicts are read, nothing in the file is run",
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ValueError(f"unknown persistent id {pid!r}")
        _, kind, key, _location, numel = pid
        if kind not in _STORAGE_DTYPES or not isinstance(numel, int) or numel < 0:
            raise ValueError(f"bad storage record {pid!r}")
        return _Storage(kind, str(key), numel)


class TorchCheckpoint(Mapping[str, np.ndarray]):
    """The tensors of one `torch.save` zip checkpoint, read lazily.

    Float tensors come out as float32 (f16/bf16 widened exactly, f64 rounded);
    integer and bool tensors keep their dtype. Arrays read from stored records
    are read-only views onto the memory-mapped file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.files = [self]  # as TensorSource.files: the objects whose .path are the weights
        source = str(self.path)
        if not self.path.is_file():
            raise CheckpointError(source, "file not found")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except zipfile.BadZipFile as exc:
            raise CheckpointError(source, _not_a_zip_reason(self.path)) from exc
        except OSError as exc:
            raise CheckpointError(source, f"unreadable ({exc})") from exc
        pickles = [n for n in self._zip.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(source, f"no single <name>/data.pkl record; {_CONVERT_HINT}")
        self._prefix = pickles[0].removesuffix("/data.pkl")
        self._map: np.memmap | None = None
        order = f"{self._prefix}/byteorder"
        try:
            # Checkpoints from before the byteorder record existed are little-endian.
            big = order in self._zip.namelist() and self._zip.read(order) == b"big"
            top = _StateDictUnpickler(self._zip.read(pickles[0]), source).load()
        except CheckpointError:
            raise
        # A corrupt pickle can fail in any of the many ways unpickling and zip reading can.
        except Exception as exc:
            raise CheckpointError(source, f"unreadable {pickles[0]} ({exc})") from exc
        self._byteorder = ">" if big else "<"
        self._tensors = _state_dict(top, source)

    @classmethod
    def open(cls, path: Path | str) -> TorchCheckpoint:
        return cls(path)

    def describe(self) -> str:
        return str(self.path)

    def file_of(self, key: str) -> Path:
        return self.path

    def shape(self, key: str) -> tuple[int, ...]:
        return self._tensors[key].shape

    def close(self) -> None:
        """Close the file; arrays already handed out keep their mapping alive."""
        self._zip.close()
        self._map = None

    def __getitem__(self, key: str) -> np.ndarray:
        tensor = self._tensors.get(key)
        if tensor is None:
            raise CheckpointError(self.describe(), "missing tensor", key)
        dtype = np.dtype(_STORAGE_DTYPES[tensor.storage.kind]).newbyteorder(self._byteorder)
        buffer = self._storage_bytes(tensor.storage, dtype.itemsize, key)
        step = dtype.itemsize
        try:
            strides = tuple(s * step for s in tensor.strides)
            view = np.ndarray(tensor.shape, dtype, buffer, tensor.offset * step, strides)
        except (ValueError, TypeError) as exc:  # numpy checks the view stays in its buffer
            reason = f"tensor lies outside its storage ({exc})"
            raise CheckpointError(self.describe(), reason, key) from exc
        kind = tensor.storage.kind
        if kind == "BFloat16Storage":  # bf16 is the top half of a float32: exact
            return (view.astype(np.uint32) << 16).view(np.float32)
        if kind in _WIDENED:
            return view.astype(np.float32)
        return view if dtype.isnative else view.astype(dtype.newbyteorder("="))

    def _storage_bytes(self, storage: _Storage, itemsize: int, key: str) -> np.ndarray:
        name = f"{self._prefix}/data/{storage.key}"
        nbytes = storage.numel * itemsize
        try:
            info = self._zip.getinfo(name)
        except KeyError:
            raise CheckpointError(self.describe(), f"record {name} is missing", key) from None
        if info.file_size < nbytes:
            reason = f"record {name} holds {info.file_size} bytes, its storage needs {nbytes}"
            raise CheckpointError(self.describe(), reason, key)
        if info.compress_type != zipfile.ZIP_STORED:
            try:
                return np.frombuffer(self._zip.read(name), np.uint8, count=nbytes)
            except Exception as exc:  # zlib, lzma, bz2 and zipfile each raise their own
                raise CheckpointError(self.describe(), f"unreadable {name} ({exc})", key) from exc
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        # The local header's extra field (torch's alignment padding) can differ from
        # the central directory's, so the data offset is read from the local header.
        at = info.header_offset
        header = bytes(self._map[at : at + 30])
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            raise CheckpointError(self.describe(), f"no zip header for {name} at byte {at}", key)
        start = at + 30 + sum(struct.unpack("<HH", header[26:30]))  # + name and extra lengths
        if start + nbytes > self._map.size:
            raise CheckpointError(self.describe(), "file is truncated", key)
        return self._map[start : start + nbytes]

    def __contains__(self, key: object) -> bool:
        return key in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


def _state_dict(top: Any, source: str) -> dict[str, _LazyTensor]:
    """The tensors of the unpickled object: a state dict, or a dict holding one
    under "state_dict" or "model" (as training scripts save them)."""
    if isinstance(top, dict):
        top = next((top[k] for k in ("state_dict", "model") if isinstance(top.get(k), dict)), top)
    if not isinstance(top, dict):
        raise CheckpointError(source, f"holds a {type(top).__name__}, not a state dict")
    # Values other than tensors (step counters, config strings) are not weights.
    tensors = {k: v for k, v in top.items() if isinstance(k, str) and isinstance(v, _LazyTensor)}
    if not tensors:
        raise CheckpointError(source, "holds no tensors")
    return tensors


def _not_a_zip_reason(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        return "truncated or corrupt zip archive (its central directory is missing or damaged)"
    return (
        "not a zip archive: the legacy torch.save format (before PyTorch 1.6, or "
        f"_use_new_zipfile_serialization=False) is not read; {_CONVERT_HINT}"
    )
