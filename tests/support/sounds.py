"""Sound files for the tests that send audio through the server, the CLI and the photo
search: seeded tones over noise, written by libsndfile (soundfile)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile

from tests.support.audio_reference import noise, tones

RATE = 16000


def waveform(seconds: float, seed: int, channels: int = 1) -> np.ndarray:
    """float32 [samples] (or [samples, channels]): three tones, shifted by the seed, over
    noise, so each seed sounds different to a random-weight model."""
    freqs = (110.0 * (seed + 2), 330.0 + 70 * seed, 2500.0 - 90 * seed)
    mono = tones(seconds, RATE, freqs) + noise(seconds, RATE, seed=seed, level=0.05)
    return mono if channels == 1 else np.stack([mono] * channels, axis=1)


def wav_bytes(seconds: float, seed: int, *, channels: int = 1, subtype: str = "PCM_16") -> bytes:
    """A WAV file's bytes. PCM_16 is 32,000 bytes a second of mono, FLOAT twice that."""
    buffer = io.BytesIO()
    soundfile.write(buffer, waveform(seconds, seed, channels), RATE, format="WAV", subtype=subtype)
    return buffer.getvalue()


def write_wav(path: Path, seconds: float, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wav_bytes(seconds, seed))
    return path


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def random_arrays(seed: int) -> dict[str, np.ndarray]:
    """One input per ImageBind array modality, of the shapes its towers take."""
    rng = np.random.default_rng(seed)
    return {
        "depth": rng.standard_normal((1, 224, 224)).astype(np.float32),
        "thermal": rng.standard_normal((1, 224, 224)).astype(np.float32),
        "imu": rng.standard_normal((6, 2000)).astype(np.float32),
    }
