"""ImageBind's audio preprocessing as the reference runs it, and the sounds we test it on.

The references are the real code, loaded by path because their packages do not import here:
- torchaudio 2.9's wheel needs torch 2.9: its C extension fails beside the torch these tests
  pin, and transformers imports torchaudio whenever it is installed, so the README's test
  command unpacks the wheel (no deps) under `<venv>/reference/torchaudio` instead.
  `compliance/kaldi.py` is plain torch code that names the package only for MFCC's DCT, so it
  runs with a stub `torchaudio` module. `functional/functional.py` imports the extension, so
  `resample` and its two helpers are compiled from that file's own syntax tree, alone.
- pytorchvideo 0.1.5 (under `<venv>/reference/pytorchvideo`, no deps): `data/clip_sampling.py`
  imports only the standard library.
- imagebind-unofficial (installed --no-deps): `data.py` imports pytorchvideo and torchaudio,
  so its audio functions are compiled alone, with the references above in their place.
A missing reference raises MissingReference, which says how to install it: tests fail, as a
parity test that cannot run proves nothing.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import math
import sys
import types
import warnings
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any, Optional

import numpy as np

REFERENCE_ROOT = Path(sys.prefix) / "reference"
_PINNED = {"torchaudio": "torchaudio==2.9.1", "pytorchvideo": "pytorchvideo==0.1.5"}


# The options data.py's waveform2melspec passes to kaldi.fbank.
KALDI_OPTIONS = {
    "htk_compat": True,
    "sample_frequency": 16000,
    "use_energy": False,
    "window_type": "hanning",
    "num_mel_bins": 128,
    "dither": 0.0,
    "frame_length": 25,
    "frame_shift": 10,
}


class MissingReference(RuntimeError):
    """A reference implementation is not where the tests look for it."""


# --- generated sounds --------------------------------------------------------------------


def tones(seconds: float, rate: int, freqs: Iterable[float] = (220.0, 440.0, 3000.0)) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return sum(0.2 * np.sin(2 * np.pi * f * t + i) for i, f in enumerate(freqs)).astype(np.float32)


def noise(seconds: float, rate: int, seed: int = 0, level: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (level * rng.standard_normal(round(seconds * rate))).astype(np.float32)


def speech_like(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Voiced syllables: harmonics of a wandering pitch through two formant-like peaks, a
    4 Hz syllable envelope, and bursts of hiss between them."""
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    pitch = 130 + 30 * np.sin(2 * np.pi * 0.7 * t) + 10 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = np.zeros(n)
    for harmonic in range(1, 30):
        freq = harmonic * pitch
        gain = np.exp(-(((freq - 700) / 300) ** 2)) + 0.5 * np.exp(-(((freq - 1800) / 400) ** 2))
        voiced += np.where(freq < rate / 2, gain, 0.0) * np.sin(harmonic * phase)
    envelope = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, None) ** 2
    hiss = 0.03 * rng.standard_normal(n) * (envelope < 0.05)
    return (0.5 * voiced / np.abs(voiced).max() * envelope + hiss).astype(np.float32)


def stereo_with_offsets(seconds: float, rate: int) -> np.ndarray:
    """Speech on the left with a DC offset, tones on the right with another: the in-place mean
    subtraction of overlapping clips then changes what later clips see."""
    left = speech_like(seconds, rate, seed=5) + 0.1
    right = 0.5 * tones(seconds, rate) - 0.2
    return np.stack([left, right])


# --- loading source files ----------------------------------------------------------------


def _reference_file(package: str, relative: str) -> Path:
    folder = REFERENCE_ROOT / package
    path = folder / package / relative
    if not path.is_file():
        raise MissingReference(
            f"{package}'s {relative} is not under {folder}: run the README's test command, "
            f"which installs it there (pip install --no-deps --target {folder} "
            f"{_PINNED[package]})"
        )
    return path


def _imagebind_file(relative: str) -> Path:
    """A file of the installed imagebind package, found without executing its __init__ (which
    imports data.py), nor failing on the bare package module imagebind_reference registers."""
    module = sys.modules.get("imagebind")
    if module is not None and getattr(module, "__path__", None):
        folder = Path(next(iter(module.__path__)))
    else:
        spec = importlib.util.find_spec("imagebind")
        if spec is None or not spec.submodule_search_locations:
            raise MissingReference(
                "imagebind-unofficial is not installed: run the README's test command "
                "(pip install --no-deps imagebind-unofficial==0.1.1)"
            )
        folder = Path(next(iter(spec.submodule_search_locations)))
    return folder / relative


def _load_by_path(name: str, path: Path, **stubs: types.ModuleType) -> types.ModuleType:
    """Execute one source file as module `name`, with `stubs` in sys.modules meanwhile."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = {key: sys.modules.get(key) for key in stubs}
    sys.modules.update(stubs)
    try:
        spec.loader.exec_module(module)
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
    return module


def _definitions(path: Path, names: set[str], namespace: dict[str, Any]) -> dict[str, Any]:
    """Execute only the top-level definitions `names` of a source file, in `namespace`."""
    tree = ast.parse(path.read_text(), str(path))

    def wanted(node: ast.stmt) -> bool:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            return node.name in names
        if isinstance(node, ast.Assign):
            return any(isinstance(t, ast.Name) and t.id in names for t in node.targets)
        return False

    body = [node for node in tree.body if wanted(node)]
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), namespace)
    missing = names - namespace.keys()
    if missing:
        raise MissingReference(f"{path} does not define {sorted(missing)}")
    return namespace


# --- the references ----------------------------------------------------------------------


@cache
def kaldi() -> types.ModuleType:
    """torchaudio.compliance.kaldi."""
    return _load_by_path(
        "_reference_torchaudio_kaldi",
        _reference_file("torchaudio", "compliance/kaldi.py"),
        torchaudio=types.ModuleType("torchaudio"),
    )


def kaldi_fbank(samples: np.ndarray) -> np.ndarray:
    """kaldi.fbank of a 1-D waveform with data.py's options, in the waveform's dtype."""
    import torch

    return kaldi().fbank(torch.from_numpy(samples)[None], **KALDI_OPTIONS).numpy()


@cache
def _torchaudio_resampling() -> dict[str, Any]:
    import torch

    namespace = {
        "torch": torch,
        "math": math,
        "warnings": warnings,
        "Tensor": torch.Tensor,
        "Optional": Optional,
    }
    names = {"_CPU", "_get_sinc_resample_kernel", "_apply_sinc_resample_kernel", "resample"}
    return _definitions(_reference_file("torchaudio", "functional/functional.py"), names, namespace)


def torchaudio_resample() -> Callable[..., Any]:
    """torchaudio.functional.resample(waveform, orig_freq, new_freq, ...)."""
    return _torchaudio_resampling()["resample"]


def torchaudio_sinc_kernel() -> Callable[..., Any]:
    """torchaudio's _get_sinc_resample_kernel(orig_freq, new_freq, gcd, ..., dtype=...)."""
    return _torchaudio_resampling()["_get_sinc_resample_kernel"]


@cache
def constant_clips_sampler_class() -> type:
    """pytorchvideo's ConstantClipsPerVideoSampler."""
    path = _reference_file("pytorchvideo", "data/clip_sampling.py")
    return _load_by_path("_reference_pytorchvideo_clip_sampling", path).ConstantClipsPerVideoSampler


def imagebind_definitions(names: set[str], namespace: dict[str, Any]) -> dict[str, Any]:
    """The top-level definitions `names` of imagebind/data.py, executed alone in `namespace`
    (which must hold what they use): the module's own imports need pytorchvideo and
    torchaudio's extension."""
    return _definitions(_imagebind_file("data.py"), names, namespace)


def get_clip_timepoints() -> Callable[[Any, float], list[tuple[Any, Any]]]:
    """data.py's get_clip_timepoints(clip_sampler, duration)."""
    return imagebind_definitions({"get_clip_timepoints"}, {})["get_clip_timepoints"]


def imagebind_data_functions(
    load: Callable[[str], tuple[Any, int]], resample: Callable[..., Any] | None = None
) -> dict[str, Any]:
    """waveform2melspec, get_clip_timepoints and load_and_transform_audio_data from the real
    imagebind/data.py, with `load` in torchaudio.load's place (torchaudio's own needs its
    extension), torchaudio's real resample unless `resample` is given, the real kaldi.fbank,
    the real torchvision transforms and the real pytorchvideo sampler."""
    import torch
    from torchvision import transforms

    torchaudio = types.SimpleNamespace(
        load=load,
        functional=types.SimpleNamespace(resample=resample or torchaudio_resample()),
        compliance=types.SimpleNamespace(kaldi=kaldi()),
    )
    namespace = {
        "torch": torch,
        "nn": torch.nn,
        "logging": logging,
        "math": math,
        "torchaudio": torchaudio,
        "transforms": transforms,
        "ConstantClipsPerVideoSampler": constant_clips_sampler_class(),
    }
    names = {
        "DEFAULT_AUDIO_FRAME_SHIFT_MS",
        "waveform2melspec",
        "get_clip_timepoints",
        "load_and_transform_audio_data",
    }
    return imagebind_definitions(names, namespace)


def load_like_torchaudio(dtype: Any) -> Callable[[str], tuple[Any, int]]:
    """torchaudio.load, with soundfile decoding: float32 [channels, samples] in [-1, 1], and
    the rate; cast to `dtype` (float64 holds the same values, to run the reference without
    float32 rounding)."""

    def load(path: str) -> tuple[Any, int]:
        import soundfile
        import torch

        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
        return torch.from_numpy(np.ascontiguousarray(data.T)).to(dtype), rate

    return load
