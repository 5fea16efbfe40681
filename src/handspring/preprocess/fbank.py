"""Kaldi log-mel filterbank in numpy, equal to `torchaudio.compliance.kaldi.fbank` with the
options ImageBind passes (imagebind/data.py `waveform2melspec`).

Fixed options: dither 0, snip_edges, remove_dc_offset, preemphasis 0.97, "hanning" window
(torch.hann_window periodic=False), FFT padded to the next power of two, power spectrum,
mel bins from low_freq 20 Hz to Nyquist, log with a float32-epsilon floor, no energy
column (use_energy=False, so htk_compat changes nothing).

The arithmetic is float64, in torch's order of operations, and the result float32: this is
kaldi.fbank run on the float64 waveform to ~1e-6. The reference runs in float32, and its own
rounding (mostly MKL's float32 FFT) moves the log energies of the weakest bins by up to ~3e-3
from its float64 result; no other FFT reproduces that noise, so we aim at the exact value.
The mel banks are float32 as torch builds them, whatever the waveform's dtype.

Kaldi itself refuses 128 mel bins with a 512-point FFT at 16 kHz (the lowest bins are
narrower than one FFT bin, so some are empty); torchaudio does not check, and ImageBind's
audio tower was trained on those bins, empty or not. We do as torchaudio.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

PREEMPHASIS = 0.97
LOW_FREQ = 20.0
# torchaudio's EPSILON: numeric_limits<float>::epsilon(), the floor before the log.
EPSILON = np.float32(np.finfo(np.float32).eps)
_MILLISECONDS_TO_SECONDS = 0.001


def frame_sizes(
    sample_rate: float, frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0
) -> tuple[int, int]:
    """(window_size, window_shift) in samples, truncated exactly as torchaudio computes them."""
    window_shift = int(sample_rate * frame_shift_ms * _MILLISECONDS_TO_SECONDS)
    window_size = int(sample_rate * frame_length_ms * _MILLISECONDS_TO_SECONDS)
    return window_size, window_shift


def fbank(
    waveform: np.ndarray,
    *,
    sample_rate: float = 16000.0,
    num_mel_bins: int = 128,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
) -> np.ndarray:
    """Log-mel energies, float32 [frames, num_mel_bins], of a 1-D waveform.

    As kaldi.fbank on a [channels, samples] tensor reads only channel 0, callers pick the
    channel. Raises ValueError if the waveform is shorter than one frame (torchaudio asserts).
    """
    samples = np.asarray(waveform, dtype=np.float64)
    if samples.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {samples.shape}")
    window_size, window_shift = frame_sizes(sample_rate, frame_length_ms, frame_shift_ms)
    if not 2 <= window_size <= samples.shape[0]:
        raise ValueError(f"a frame is {window_size} samples; the waveform has {samples.shape[0]}")
    padded_size = _next_power_of_2(window_size)

    # snip_edges: only frames that fit entirely; a strided view, no copy yet.
    frames = np.lib.stride_tricks.sliding_window_view(samples, window_size)[::window_shift]
    frames = frames - frames.mean(axis=1, keepdims=True)
    # Pre-emphasis with the first sample of each frame standing in for the one before it.
    previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = frames - PREEMPHASIS * previous
    frames *= _hann_window(window_size)

    spectrum = np.fft.rfft(frames, n=padded_size, axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    banks = mel_banks(num_mel_bins, padded_size, float(sample_rate))
    energies = power @ banks.T.astype(np.float64)
    return np.log(np.maximum(energies, float(EPSILON))).astype(np.float32)


def _log32(x: np.ndarray) -> np.ndarray:
    # numpy's float32 log may be one ulp off the correctly rounded value, which torch's is.
    return np.log(x.astype(np.float64)).astype(np.float32)


def _next_power_of_2(x: int) -> int:
    return 1 if x == 0 else 2 ** (x - 1).bit_length()


@lru_cache(maxsize=8)
def _hann_window(size: int) -> np.ndarray:
    """torch.hann_window(size, periodic=False): torchaudio's 'hanning'."""
    window = 0.5 - 0.5 * np.cos(2 * math.pi * np.arange(size, dtype=np.float64) / (size - 1))
    window.flags.writeable = False
    return window


def _mel(freq: np.ndarray | float) -> np.ndarray | float:
    if isinstance(freq, np.ndarray):
        return np.float32(1127.0) * _log32(np.float32(1.0) + freq / np.float32(700.0))
    return 1127.0 * math.log(1.0 + freq / 700.0)


@lru_cache(maxsize=8)
def mel_banks(num_bins: int, padded_size: int, sample_rate: float) -> np.ndarray:
    """torchaudio's `get_mel_banks` (no VTLN), float32 as torch computes it, with the zero
    column for the Nyquist FFT bin that kaldi.fbank pads on: [num_bins, padded_size // 2 + 1]."""
    if num_bins <= 3:
        raise ValueError("Must have at least 3 mel bins")
    nyquist = 0.5 * sample_rate
    mel_low, mel_high = _mel(LOW_FREQ), _mel(nyquist)
    mel_delta = (mel_high - mel_low) / (num_bins + 1)

    index = np.arange(num_bins, dtype=np.float32)[:, None]
    left = np.float32(mel_low) + index * np.float32(mel_delta)
    center = np.float32(mel_low) + (index + np.float32(1.0)) * np.float32(mel_delta)
    right = np.float32(mel_low) + (index + np.float32(2.0)) * np.float32(mel_delta)
    fft_bin_width = np.float32(sample_rate / padded_size)
    mel = _mel(fft_bin_width * np.arange(padded_size // 2, dtype=np.float32))[None, :]

    up_slope = (mel - left) / (center - left)
    down_slope = (right - mel) / (right - center)
    banks = np.maximum(np.float32(0.0), np.minimum(up_slope, down_slope))
    banks = np.pad(banks, ((0, 0), (0, 1))).astype(np.float32)
    banks.flags.writeable = False
    return banks
