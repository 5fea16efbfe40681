"""Sounds into ImageBind's audio input: float32 [3, 1, 128, 204] per item, equal to
`imagebind/data.py` `load_and_transform_audio_data` with its defaults.

The reference: torchaudio.load -> torchaudio.functional.resample to 16 kHz -> three 2 s
clips from pytorchvideo's ConstantClipsPerVideoSampler -> per clip, subtract the clip's
mean, Kaldi fbank (128 mel bins, 25/10 ms), transpose, zero-pad or cut to 204 frames ->
Normalize(-4.268, 9.138). Where we differ:
- Decoding is libsndfile's (soundfile), not torchaudio's: WAV/FLAC/OGG give the same
  samples; lossy formats may differ by their decoders' rounding and trimming.
- Resampling is torchaudio's windowed sinc (sinc_interp_hann, width 6, rolloff 0.99) with
  its output length, ported, but only the clips' samples are computed.
- The arithmetic is float64 from the decoded samples on (the result float32): the
  reference's formulas without its float32 rounding. That rounding alone moves its resampled
  waveform by up to ~3e-5 (torchaudio computes the filter in the waveform's dtype) and the
  weakest bins by up to ~3e-4 after normalisation (see fbank.py and
  _subtract_means_in_place_order).

Clip starts, read from pytorchvideo 0.1.5's source, are indeed k * (d - 2) / 3 for a sound
of d seconds, k = 0, 1, 2, precisely: max_start = Fraction(max(d - 2, 0)) (d - 2 in float
arithmetic, then exact) and clip k starts at k * max_start / 3, so the last clip starts at
2/3 of max_start and ends well before the end of the sound (only d <= 2 reaches it). Its early
stop (`uniform_clip * index > max_possible_clip_start`) never fires, so there are always
exactly three clips; under 2 s all three are the whole sound. Sample bounds are
int(Fraction * 16000), truncated, so a clip has 32000 samples unless the sound is shorter.

Two reference details we reproduce on purpose:
- `waveform -= waveform.mean()` runs on a slice, a view of the whole waveform: each clip's
  mean is subtracted in place, and clips overlap when the sound is under 8 s, so a later
  clip sees samples the earlier ones already shifted. The mean is over all channels.
- kaldi.fbank reads only channel 0 of a [channels, samples] clip.
Under 25 ms at 16 kHz (400 samples, one fbank frame) the reference fails (an assertion in
kaldi.fbank); we raise AudioError.

soundfile is imported inside the function that decodes, so a process that never touches
audio never loads it (`handspring[audio]`).
"""

from __future__ import annotations

import io
import math
import numbers
import os
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np

from handspring.errors import AudioError
from handspring.preprocess.fbank import fbank, frame_sizes

AudioInput = str | os.PathLike[str] | bytes | tuple[np.ndarray, int]

# load_and_transform_audio_data's defaults.
SAMPLE_RATE = 16000
NUM_MEL_BINS = 128
TARGET_LENGTH = 204
CLIP_DURATION = 2
CLIPS_PER_ITEM = 3
MEAN = -4.268
STD = 9.138

DEFAULT_MAX_SECONDS = 600.0
# Ten minutes of 48 kHz stereo float32 WAV is 230 MB.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
# More is most likely a [samples, channels] array given as [channels, samples].
MAX_CHANNELS = 64
MAX_SAMPLE_RATE = 768_000
# torchaudio.functional.resample's defaults, which data.py keeps.
LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99
# Enough outputs per filter call to amortise the loop over phases; few enough that the copy
# of the input it reads stays small.
_OUTPUTS_PER_CALL = 1 << 16


def describe_audio(source: Any, index: int) -> str:
    """A name for error messages: the path, or `<bytes #3>`, `<array #3>`."""
    if isinstance(source, str | os.PathLike):
        return str(os.fspath(source))
    if isinstance(source, bytes | bytearray | memoryview):
        return f"<bytes #{index}>"
    if isinstance(source, tuple):
        return f"<array #{index}>"
    return f"<{type(source).__name__} #{index}>"


def audio_clips(
    source: AudioInput,
    item: str,
    *,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """The model input of one sound: float32 [CLIPS_PER_ITEM, 1, NUM_MEL_BINS, TARGET_LENGTH].

    Raises AudioError(item, reason) for anything that is not a usable sound or is over a limit.
    """
    waveform, rate = decode_audio(source, item=item, max_seconds=max_seconds, max_bytes=max_bytes)
    return clips_from_waveform(waveform, rate, item=item)


def decode_audio(
    source: AudioInput,
    *,
    item: str,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
) -> tuple[np.ndarray, int]:
    """(float32 [channels, samples] in [-1, 1] as torchaudio.load gives it, sample rate).

    max_seconds is checked from the header before decoding, and decoding stops one sample past
    it whatever the header says. max_bytes limits bytes input. None lifts a limit.
    """
    if isinstance(source, tuple):
        return _from_array(source, item, max_seconds)
    if isinstance(source, bytes | bytearray | memoryview):
        size = len(source)
        if size == 0:
            raise AudioError(item, "empty data (0 bytes)")
        if max_bytes is not None and size > max_bytes:
            raise AudioError(item, f"too large: {size:,} bytes is over the limit of {max_bytes:,}")
        return _decode(io.BytesIO(source), item, max_seconds)
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if os.path.isdir(path):
            raise AudioError(item, "is a directory, not an audio file")
        try:
            size = os.path.getsize(path)
        except FileNotFoundError as exc:
            raise AudioError(item, "file not found") from exc
        except OSError as exc:
            raise AudioError(item, "cannot read the file", exc.strerror or str(exc)) from exc
        if size == 0:
            raise AudioError(item, "empty file (0 bytes)")
        return _decode(path, item, max_seconds)
    expected = "expected a path, bytes or a (waveform array, sample rate) tuple"
    raise AudioError(item, f"unsupported input type {type(source).__name__}: {expected}")


def _decode(file: str | io.BytesIO, item: str, max_seconds: float | None) -> tuple[np.ndarray, int]:
    import soundfile

    try:
        sound = soundfile.SoundFile(file)
    except soundfile.LibsndfileError as exc:
        raise AudioError(item, "not a readable audio file", str(exc)) from exc
    except OSError as exc:
        raise AudioError(item, "cannot read the file", exc.strerror or str(exc)) from exc
    with sound:
        rate, channels, frames = sound.samplerate, sound.channels, sound.frames
        if channels > MAX_CHANNELS:
            raise AudioError(item, f"{channels} channels is over the limit of {MAX_CHANNELS}")
        if frames == 0:
            raise AudioError(item, "no samples")
        limit = _max_frames(rate, max_seconds)
        if limit is not None and frames > limit:
            raise AudioError(item, _too_long(frames / rate, max_seconds))
        try:
            # One frame past the limit tells a header that understates the length.
            data = sound.read(-1 if limit is None else limit + 1, dtype="float32", always_2d=True)
        except soundfile.LibsndfileError as exc:
            raise AudioError(item, "corrupt audio data", str(exc)) from exc
    if limit is not None and len(data) > limit:
        raise AudioError(item, _too_long(len(data) / rate, max_seconds))
    return _checked(data.T, rate, item)


def _from_array(
    source: tuple[Any, ...], item: str, max_seconds: float | None
) -> tuple[np.ndarray, int]:
    if len(source) != 2:
        raise AudioError(item, "expected a (waveform array, sample rate) tuple")
    array, rate = source
    if not isinstance(array, np.ndarray):
        raise AudioError(item, f"the waveform is a {type(array).__name__}, not a numpy array")
    if not isinstance(rate, numbers.Integral) or isinstance(rate, bool):
        raise AudioError(item, f"the sample rate must be an integer, not {rate!r}")
    if not 0 < rate <= MAX_SAMPLE_RATE:
        raise AudioError(item, f"unsupported sample rate {rate} Hz (1 to {MAX_SAMPLE_RATE:,})")
    if array.ndim not in (1, 2):
        raise AudioError(
            item, f"bad array shape {array.shape}: expected [samples] or [channels, samples]"
        )
    waveform = array[None] if array.ndim == 1 else array
    if waveform.shape[0] > MAX_CHANNELS:
        raise AudioError(
            item,
            f"bad array shape {array.shape}: expected [channels, samples] with at most "
            f"{MAX_CHANNELS} channels (is it [samples, channels]?)",
        )
    if waveform.shape[1] == 0 or waveform.shape[0] == 0:
        raise AudioError(item, "no samples")
    limit = _max_frames(int(rate), max_seconds)
    if limit is not None and waveform.shape[1] > limit:
        raise AudioError(item, _too_long(waveform.shape[1] / rate, max_seconds))
    if waveform.dtype == np.int16:  # as torchaudio.load normalises 16-bit PCM
        waveform = waveform.astype(np.float32) / np.float32(32768)
    elif waveform.dtype.kind == "f":
        waveform = waveform.astype(np.float32, copy=False)
    else:
        raise AudioError(item, f"unsupported array dtype {array.dtype}: expected float or int16")
    return _checked(waveform, int(rate), item)


def _max_frames(rate: int, max_seconds: float | None) -> int | None:
    return None if max_seconds is None else math.floor(max_seconds * rate)


def _too_long(seconds: float, max_seconds: float | None) -> str:
    return f"too long: {seconds:,.1f} s is over the limit of {max_seconds:,g} s"


def _checked(waveform: np.ndarray, rate: int, item: str) -> tuple[np.ndarray, int]:
    if waveform.shape[1] == 0:
        raise AudioError(item, "no samples")
    if not np.isfinite(waveform).all():
        raise AudioError(item, "contains NaN or infinite samples")
    return waveform, rate


def resampled_length(length: int, rate: int, new_rate: int = SAMPLE_RATE) -> int:
    """torchaudio.functional.resample's output length: the ceiling of a float32 (!) value, which
    falls one short of the true ceiling past 2**22 output samples (~262 s at 16 kHz)."""
    if rate == new_rate:
        return length
    gcd = math.gcd(rate, new_rate)
    orig, new = rate // gcd, new_rate // gcd
    # Past 2**25 outputs the float32 value can round above what the convolution gives, and
    # torchaudio's slice then keeps what there is.
    return min(math.ceil(np.float32(new * length / orig)), (length // orig + 1) * new)


def resample(
    waveform: np.ndarray,
    rate: int,
    new_rate: int = SAMPLE_RATE,
    *,
    start: int = 0,
    stop: int | None = None,
) -> np.ndarray:
    """Samples [start, stop) (default: all) of torchaudio.functional.resample(waveform, rate,
    new_rate) with its defaults, float64 [channels, stop - start], as the reference computes
    them in float64. A copy of the input's samples when the rates are equal."""
    length = resampled_length(waveform.shape[1], rate, new_rate)
    stop = length if stop is None else stop
    if not 0 <= start <= stop <= length:
        raise ValueError(f"samples [{start}, {stop}) are not within the {length} resampled ones")
    if rate == new_rate:
        return waveform[:, start:stop].astype(np.float64)
    gcd = math.gcd(rate, new_rate)
    orig, new = rate // gcd, new_rate // gcd
    out = np.empty((waveform.shape[0], stop - start))
    # Output k * new + j is phase j's filter at input k * orig, so whole blocks of `new`.
    blocks_per_call = max(1, _OUTPUTS_PER_CALL // new)
    end_block = -(-stop // new)
    for first_block in range(start // new, end_block, blocks_per_call):
        blocks = min(blocks_per_call, end_block - first_block)
        chunk = _resampled_blocks(waveform, orig, new, first_block, blocks)
        offset = first_block * new
        lo, hi = max(start, offset), min(stop, offset + blocks * new)
        out[:, lo - start : hi - start] = chunk[:, lo - offset : hi - offset]
    return out


def _resampled_blocks(
    waveform: np.ndarray, orig: int, new: int, first_block: int, blocks: int
) -> np.ndarray:
    """Outputs [first_block * new, (first_block + blocks) * new), float64 [channels, ...]: what
    torchaudio's strided conv1d gives there, its padding included."""
    kernel, first_taps, width = _sinc_kernel(orig, new)
    # Block k's band for phase j starts at input k * orig + first_taps[j] - width (torchaudio
    # pads `width` zeros in front), with first_taps[j] < orig; zeros stand in outside the input.
    lo, hi = first_block * orig - width, (first_block + blocks) * orig + width
    segment = np.zeros((waveform.shape[0], hi - lo))
    inside = waveform[:, max(lo, 0) : hi]
    segment[:, max(lo, 0) - lo : max(lo, 0) - lo + inside.shape[1]] = inside
    windows = np.lib.stride_tricks.sliding_window_view(segment, kernel.shape[1], axis=1)
    out = np.empty((waveform.shape[0], blocks, new))
    for phase in range(new):
        out[:, :, phase] = windows[:, first_taps[phase] :: orig] @ kernel[phase]
    return out.reshape(waveform.shape[0], blocks * new)


@lru_cache(maxsize=8)
def _sinc_kernel(orig: int, new: int) -> tuple[np.ndarray, np.ndarray, int]:
    """torchaudio's _get_sinc_resample_kernel for rates orig:new (reduced by their gcd), in
    float64 as it computes it for a float64 waveform: only each row's band of 2 * width + 1
    taps, [new, 2 * width + 1], where the band starts in the row, [new], and `width`.

    A row spans 2 * width + orig taps, but t is clamped, and the window zero, farther than
    LOWPASS_FILTER_WIDTH / base_freq <= width / orig from the phase's position, so only the band
    can be non-zero; the reference's clamped taps are cos(pi / 2) ** 2 * sin(6 pi) / (6 pi),
    under 1e-48. The band keeps the kernel small when the gcd is 1 (44101 Hz: 16000 phases of
    44135 taps would be 5.6 GB, and torchaudio builds all of them)."""
    base_freq = min(orig, new) * ROLLOFF
    width = math.ceil(LOWPASS_FILTER_WIDTH * orig / base_freq)
    # Phase j sits width + j * orig / new taps into its row: the band is the 2 * width + 1 taps
    # from floor(j * orig / new).
    first_taps = np.arange(new) * orig // new
    taps = first_taps[:, None] + np.arange(2 * width + 1)
    # The reference's operations in its order, so that each tap rounds as it does.
    t = np.arange(0, -new, -1)[:, None] / new + (taps - width) / orig
    t *= base_freq
    t = t.clip(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    window = np.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
    t *= math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.where(t == 0, 1.0, np.sin(t) / t)
    kernel *= window * (base_freq / orig)
    kernel.flags.writeable = False
    first_taps.flags.writeable = False
    return kernel, first_taps, width


def clip_bounds(
    num_samples: int,
    sample_rate: int = SAMPLE_RATE,
    clip_duration: int = CLIP_DURATION,
    clips: int = CLIPS_PER_ITEM,
) -> list[tuple[int, int]]:
    """(start, end) sample indices of each clip, as data.py slices them (end may pass the end)."""
    duration = num_samples / sample_rate
    # As the sampler computes it: float - Fraction falls back to float, then back to exact.
    max_start = Fraction(max(duration - clip_duration, 0))
    step = Fraction(max_start, clips)
    starts = [step * index for index in range(clips)]
    return [(int(s * sample_rate), int((s + clip_duration) * sample_rate)) for s in starts]


def clips_from_waveform(waveform: np.ndarray, rate: int, *, item: str) -> np.ndarray:
    """float32 [channels, samples] at `rate` -> [CLIPS_PER_ITEM, 1, NUM_MEL_BINS,
    TARGET_LENGTH]. The waveform is not modified."""
    length = resampled_length(waveform.shape[1], rate)
    window_size, _ = frame_sizes(SAMPLE_RATE)
    if length < window_size:
        ms = 1000 * waveform.shape[1] / rate
        raise AudioError(item, f"too short: {ms:.1f} ms, under one 25 ms frame")
    bounds = [(start, min(end, length)) for start, end in clip_bounds(length)]
    # Each resampled sample depends on the input alone, so only the clips' are computed: a
    # long sound's three clips are 6 s of it.
    clips = [resample(waveform, rate, start=start, stop=end) for start, end in bounds]
    _subtract_means_in_place_order(clips, bounds)
    out = np.zeros((CLIPS_PER_ITEM, 1, NUM_MEL_BINS, TARGET_LENGTH), np.float32)
    for index, clip in enumerate(clips):
        mel = fbank(clip[0], sample_rate=SAMPLE_RATE, num_mel_bins=NUM_MEL_BINS).T
        frames = min(mel.shape[1], TARGET_LENGTH)
        out[index, 0, :, :frames] = mel[:, :frames]
    return (out - np.float32(MEAN)) / np.float32(STD)


def _subtract_means_in_place_order(clips: list[np.ndarray], bounds: list[tuple[int, int]]) -> None:
    """Leave each float64 clip as the reference's in-place `waveform -= waveform.mean()` leaves
    it: the samples a clip shares with earlier ones carry their means subtracted too, in order.

    float64, as the reference run in float64: its float32 run rounds each shifted sample, and
    which of two neighbouring float32 means it subtracts (torch's summation order) moves the
    log energies of bins near the floor by ~1e-3."""
    means: list[float] = []
    for clip, (start, end) in zip(clips, bounds, strict=True):
        for (earlier_start, earlier_end), mean in zip(bounds, means, strict=False):
            first, stop = max(start, earlier_start), min(end, earlier_end)
            if first < stop:
                clip[:, first - start : stop - start] -= mean
        means.append(float(clip.mean()))
        clip -= means[-1]
