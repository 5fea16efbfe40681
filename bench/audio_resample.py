"""Our resampler (numpy, torchaudio's windowed sinc), and soxr "VHQ" for the record, against
torchaudio.functional.resample (ImageBind's) to 16 kHz; then audio_clips on a long file.

For each source rate and signal, the max abs difference of the resampled waveforms and of
the final model input ([3, 1, 128, 204], our fbank from each waveform), against torchaudio
run in float64 (its arithmetic without rounding) and in float32 (as ImageBind runs it), and
the time of each resampler (torch on one thread). torchaudio comes from the reference copy that
tests/support/audio_reference.py loads (the README's test command installs it).

    python bench/audio_resample.py [--seconds 5.3] [--long-minutes 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from handspring.preprocess.audio import (  # noqa: E402
    SAMPLE_RATE,
    audio_clips,
    clips_from_waveform,
    decode_audio,
    resample,
    resampled_length,
)
from tests.support.audio_reference import (  # noqa: E402
    noise,
    speech_like,
    tones,
    torchaudio_resample,
)

RATES = [44100, 48000, 22050, 8000, 32000]
SIGNALS: dict[str, Callable[[float, int], np.ndarray]] = {
    "noise": lambda s, r: noise(s, r, seed=1),
    "tones": lambda s, r: tones(s, r, (220.0, 440.0, 1000.0, 3000.0, 7000.0)),
    "speech-like": lambda s, r: speech_like(s, r, seed=2),
}


def soxr_resample(waveform: np.ndarray, rate: int) -> np.ndarray:
    """soxr "VHQ" with torchaudio's output length: zeros after the end give soxr's own value
    for the samples torchaudio's ceiling adds, and leave the others as they were."""
    import soxr

    channels, length = waveform.shape
    target = resampled_length(length, rate)
    zeros = (target - length * SAMPLE_RATE // rate + 2) * -(-rate // SAMPLE_RATE)
    stream = soxr.ResampleStream(rate, SAMPLE_RATE, channels, dtype="float32", quality="VHQ")
    head = stream.resample_chunk(np.ascontiguousarray(waveform.T))
    tail = stream.resample_chunk(np.zeros((zeros, channels), np.float32), last=True)
    return np.concatenate([head, tail])[:target].T


def _timed(fn: Callable[[], np.ndarray], repeats: int = 3) -> tuple[np.ndarray, float]:
    out = fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return out, 1000 * (time.perf_counter() - start) / repeats


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


def model_input(waveform_16k: np.ndarray) -> np.ndarray:
    return clips_from_waveform(waveform_16k, SAMPLE_RATE, item="bench")


def compare(seconds: float) -> None:
    import torch

    try:
        import soxr  # noqa: F401

        has_soxr = True
    except ImportError:
        has_soxr = False
    reference = torchaudio_resample()
    print(f"{seconds} s mono to {SAMPLE_RATE} Hz; ta = torchaudio (on one thread)\n")
    print(
        "| from | signal | wave: ours vs ta64 | ours vs ta32 | ta32 vs ta64 | soxr vs ta32 "
        "| input: ours vs ta64 | ours vs ta32 | soxr vs ta32 | ours ms | ta ms | soxr ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for rate in RATES:
        for name, make in SIGNALS.items():
            signal = make(seconds, rate)[None]
            ours, ours_ms = _timed(lambda s=signal, r=rate: resample(s, r))
            float32, ta_ms = _timed(
                lambda s=signal, r=rate: reference(torch.from_numpy(s), r, SAMPLE_RATE).numpy()
            )
            float64 = reference(torch.from_numpy(signal.astype(np.float64)), rate, SAMPLE_RATE)
            float64 = float64.numpy()
            our_input = clips_from_waveform(signal, rate, item=name)

            soxr_cells = ["-", "-", "-"]
            if has_soxr:
                by_soxr, soxr_ms = _timed(lambda s=signal, r=rate: soxr_resample(s, r))
                soxr_cells = [
                    f"{_max_abs(by_soxr, float32):.2e}",
                    f"{_max_abs(model_input(by_soxr), model_input(float32)):.2e}",
                    f"{soxr_ms:.1f}",
                ]
            print(
                f"| {rate} | {name} | {_max_abs(ours, float64):.2e} "
                f"| {_max_abs(ours, float32):.2e} | {_max_abs(float32, float64):.2e} "
                f"| {soxr_cells[0]} | {_max_abs(our_input, model_input(float64)):.2e} "
                f"| {_max_abs(our_input, model_input(float32)):.2e} | {soxr_cells[1]} "
                f"| {ours_ms:.1f} | {ta_ms:.1f} | {soxr_cells[2]} |"
            )


def long_file(minutes: float) -> None:
    """audio_clips on a long 48 kHz stereo 16-bit WAV: decoding, then only the clips'
    samples resampled; a whole resample for comparison."""
    import soundfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "long.wav"
        seconds = 60 * minutes
        waveform = np.stack([noise(seconds, 48000, seed=3), tones(seconds, 48000)])
        soundfile.write(path, waveform.T, 48000, "PCM_16")
        del waveform
        size = path.stat().st_size
        _, clips_ms = _timed(lambda: audio_clips(path, str(path), max_seconds=None))
        (waveform, rate), decode_ms = _timed(
            lambda: decode_audio(path, item=str(path), max_seconds=None)
        )
    _, whole_ms = _timed(lambda: resample(waveform, rate), repeats=1)
    print(
        f"\n{minutes:g} min 48 kHz stereo PCM_16 WAV ({size / 1e6:.0f} MB): audio_clips "
        f"{clips_ms:.0f} ms, of which decoding {decode_ms:.0f} ms; resampling the whole "
        f"waveform (not done by audio_clips) {whole_ms:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.3)
    parser.add_argument("--long-minutes", type=float, default=10.0)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    compare(args.seconds)
    if args.long_minutes > 0:
        long_file(args.long_minutes)


if __name__ == "__main__":
    main()
