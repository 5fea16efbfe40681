"""Float arrays given as they are: depth and thermal maps, IMU windows.

ImageBind's repository has no preprocessing for these modalities, so none is applied: the
caller gives the model's input (see `preprocess.arrays` for the usual depth conversion).
Arrays come as numpy arrays (or nested lists), as the bytes of a `.npy` file, or as the
path of one; `.npy` files are read with pickles refused.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from handspring.errors import InputError
from handspring.runtime.session import TowerSession
from handspring.towers.base import Options, Tower

# A .npy of a [6, 2000] float64 window is 96 kB; refuse what no valid input can be.
MAX_NPY_BYTES = 64 * 1024 * 1024


class ArrayTower(Tower):
    """One float32 array per item, of `shape` (a leading 1 may be left out)."""

    def __init__(
        self, modality: str, compiled: TowerSession, dim: int, shape: tuple[int, ...]
    ) -> None:
        super().__init__(compiled, dim)
        self.modality = modality
        self.shape = shape
        self.input_name = self.session.get_inputs()[0].name

    def prepare(self, item: Any, name: str, options: Options) -> np.ndarray:
        array = _as_array(item, name)
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


def _as_array(item: Any, name: str) -> np.ndarray:
    if isinstance(item, np.ndarray):
        return item
    if isinstance(item, bytes | bytearray | memoryview):
        return _load_npy(io.BytesIO(bytes(item)), name)
    if isinstance(item, str | os.PathLike):
        try:
            size = os.path.getsize(item)
        except OSError:
            raise InputError(name, "file not found") from None
        if size > MAX_NPY_BYTES:
            raise InputError(name, f"{size:,} bytes is over the limit of {MAX_NPY_BYTES:,}")
        with open(item, "rb") as f:
            return _load_npy(f, name)
    if isinstance(item, list | tuple):
        try:
            return np.asarray(item, dtype=np.float64)
        except (ValueError, TypeError):
            raise InputError(name, "not a rectangular array of numbers") from None
    raise InputError(name, f"{type(item).__name__} is not an array, .npy bytes or a .npy path")


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
