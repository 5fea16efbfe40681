"""ImageBind's audio preprocessing as preprocess.json's `audio` section, and the other
ImageBind inputs (depth, thermal, IMU: arrays fed as they are) as theirs.

The recipe is preprocess/audio.py's and preprocess/fbank.py's: decode, resample to
16 kHz, three 2 s clips, each clip's mean subtracted in place, Kaldi fbank, pad or cut to
204 frames, normalise. The mel filterbank is written out as a file (float32, little-endian)
since its exact float32 values are what a consumer would otherwise have to reproduce.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from handspring.preprocess import audio
from handspring.preprocess.fbank import EPSILON, LOW_FREQ, PREEMPHASIS, frame_sizes, mel_banks

MEL_BANKS_FILE = "audio_mel_banks.f32"


def audio_recipe(input_name: str) -> tuple[dict[str, Any], bytes]:
    """The `audio` section, and the mel filterbank file's bytes."""
    window, shift = frame_sizes(audio.SAMPLE_RATE)
    fft_size = 1 << (window - 1).bit_length()
    banks = mel_banks(audio.NUM_MEL_BINS, fft_size, float(audio.SAMPLE_RATE))
    recipe = {
        "input": input_name,
        "shape": ["batch", audio.CLIPS_PER_ITEM, 1, audio.NUM_MEL_BINS, audio.TARGET_LENGTH],
        "dtype": "float32",
        "decode": "samples as float32 in [-1, 1] ([channels, samples]; 16-bit PCM / 32768)",
        "sample_rate": audio.SAMPLE_RATE,
        "resample": {
            "method": "torchaudio.functional.resample, sinc_interp_hann",
            "lowpass_filter_width": audio.LOWPASS_FILTER_WIDTH,
            "rolloff": audio.ROLLOFF,
            "length": "ceil(float32(new_rate * samples / rate)) after reducing the rates by their gcd",
        },
        "clips": {
            "count": audio.CLIPS_PER_ITEM,
            "seconds": audio.CLIP_DURATION,
            # pytorchvideo's ConstantClipsPerVideoSampler, in exact fractions.
            "start_seconds": "k * max(d - seconds, 0) / count for k = 0..count-1, d = samples / sample_rate",
            "sample_range": "[floor(start * sample_rate), floor((start + seconds) * sample_rate)), cut at the end",
            "mean_subtraction": (
                "in clip order, each clip's mean (over all channels) is subtracted in place "
                "from the shared waveform: samples an earlier clip overlaps carry its mean too"
            ),
            "channel": 0,
        },
        "fbank": {
            "kind": "kaldi (torchaudio.compliance.kaldi.fbank)",
            "num_mel_bins": audio.NUM_MEL_BINS,
            "frame_length_samples": window,
            "frame_shift_samples": shift,
            "snip_edges": True,
            "dither": 0.0,
            "remove_dc_offset": True,
            "preemphasis": PREEMPHASIS,
            "preemphasis_first_sample": "x[0] - preemphasis * x[0]",
            "window": "hann, symmetric: 0.5 - 0.5 * cos(2 pi n / (N - 1))",
            "fft_size": fft_size,
            "spectrum": "power (|X|^2)",
            "low_freq": LOW_FREQ,
            "high_freq": audio.SAMPLE_RATE / 2,
            "mel_banks": {
                "file": MEL_BANKS_FILE,
                "dtype": "float32 little-endian",
                "shape": list(banks.shape),
                "use": "energies[frame, bin] = sum_k power[frame, k] * banks[bin, k]",
            },
            "log_floor": float(EPSILON),
            "log": "log(max(energy, log_floor))",
            "arithmetic": "float64 throughout, float32 at the end",
        },
        "frames": {
            "target": audio.TARGET_LENGTH,
            "layout": "[mel bins, frames] (the fbank transposed)",
            "shorter": "zeros appended",
            "longer": "cut",
        },
        "normalize": {
            "mean": audio.MEAN,
            "std": audio.STD,
            "formula": "(x - mean) / std in float32",
        },
        "too_short": f"under {window} samples at {audio.SAMPLE_RATE} Hz (one frame): refused",
    }
    return recipe, np.ascontiguousarray(banks, dtype="<f4").tobytes()


def array_recipe(input_name: str, shape: list[int | str]) -> dict[str, Any]:
    return {
        "input": input_name,
        "shape": shape,
        "dtype": "float32",
        "note": "fed as it is: ImageBind has no preprocessing for this modality",
    }
