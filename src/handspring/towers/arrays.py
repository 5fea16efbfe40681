"""Float arrays: depth and thermal maps, IMU windows.

ImageBind's repository has no preprocessing for these modalities, so an array is the
model's input as it is (see `preprocess.arrays` for the usual depth conversion). Arrays
come as numpy arrays (or nested lists), as the bytes of a `.npy` file, or as the path of
one; `.npy` files are read with pickles refused.

Other files are read as Weaviate's multi2vec-bind container reads them (see
`preprocess.bind_files`): an image file for depth and thermal, a CSV for IMU. A file is
taken for one of those only when its first bytes are not a `.npy` (or `.npz`) header.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from handspring.errors import InputError
from handspring.preprocess.bind_files import gray_image_input, imu_window_from_csv
from handspring.preprocess.decode import DEFAULT_MAX_PIXELS
from handspring.runtime.session import TowerSession
from handspring.towers.base import Options, Tower

# A .npy of a [6, 2000] float64 window is 96 kB, its CSV about 120 kB; refuse what no
# valid input can be. Image files are bounded by their pixel count instead.
MAX_NPY_BYTES = 64 * 1024 * 1024

# np.save's magic, and the zip header np.savez writes.
_NUMPY_MAGICS = (b"\x93NUMPY", b"PK\x03\x04")

# Modality -> the file multi2vec-bind sends for it, when it is not a .npy.
OTHER_FILES = {"depth": "image", "thermal": "image", "imu": "CSV"}


class ArrayTower(Tower):
    """One float32 array per item, of `shape` (a leading 1 may be left out)."""

    def __init__(
        self,
        modality: str,
        compiled: TowerSession,
        dim: int,
        shape: tuple[int, ...],
        *,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        super().__init__(compiled, dim)
        self.modality = modality
        self.shape = shape
        self.max_pixels = max_pixels  # for depth and thermal image files
        self.input_name = self.session.get_inputs()[0].name

    def prepare(self, item: Any, name: str, options: Options) -> np.ndarray:
        array = self._as_array(item, name)
        if array.shape != self.shape and (1, *array.shape) == self.shape:
            array = array[None]
        if array.shape != self.shape:
            raise InputError(
                name, f"shape {tuple(array.shape)}, but {self.modality} input is {self.shape}"
            )
        if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise InputError(name, f"dtype {array.dtype} is not a real number type")
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise InputError(name, "holds NaN or infinite values")
        return array

    def run(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        return self.run_chunked({self.input_name: np.stack(batch)})

    def _as_array(self, item: Any, name: str) -> np.ndarray:
        if isinstance(item, np.ndarray):
            return item
        if isinstance(item, bytes | bytearray | memoryview):
            return self._from_bytes(bytes(item), name)
        if isinstance(item, str | os.PathLike):
            return self._from_path(os.fspath(item), name)
        if isinstance(item, list | tuple):
            try:
                return np.asarray(item, dtype=np.float64)
            except (ValueError, TypeError):
                raise InputError(name, "not a rectangular array of numbers") from None
        other = OTHER_FILES.get(self.modality)
        files = f".npy or {other} file" if other else ".npy file"
        raise InputError(name, f"{type(item).__name__} is not an array, nor a {files}")

    def _from_bytes(self, data: bytes, name: str) -> np.ndarray:
        other = OTHER_FILES.get(self.modality)
        if other is None or data.startswith(_NUMPY_MAGICS):
            return _load_npy(io.BytesIO(data), name)
        if other == "CSV":
            return imu_window_from_csv(data, item=name)
        return gray_image_input(data, item=name, max_pixels=self.max_pixels)

    def _from_path(self, path: str | bytes, name: str) -> np.ndarray:
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                head = f.read(len(_NUMPY_MAGICS[0]))
        except IsADirectoryError:
            raise InputError(name, "is a directory, not a file") from None
        except OSError:
            raise InputError(name, "file not found") from None
        if OTHER_FILES.get(self.modality) == "image" and not head.startswith(_NUMPY_MAGICS):
            # Pillow reads only what it decodes; max_pixels bounds it.
            return gray_image_input(os.fsdecode(path), item=name, max_pixels=self.max_pixels)
        if size > MAX_NPY_BYTES:
            raise InputError(name, f"{size:,} bytes is over the limit of {MAX_NPY_BYTES:,}")
        with open(path, "rb") as f:
            return self._from_bytes(f.read(), name)


def _load_npy(f: Any, name: str) -> np.ndarray:
    try:
        array = np.load(f, allow_pickle=False)
    except ValueError as exc:
        raise InputError(name, "not a .npy array (pickled objects are refused)", str(exc)) from None
    except (OSError, EOFError) as exc:
        raise InputError(name, "not a readable .npy file", str(exc)) from None
    if not isinstance(array, np.ndarray):
        raise InputError(name, "a .npz archive, not one .npy array")
    return array
