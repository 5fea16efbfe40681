"""Audio preprocessing: equal to ImageBind's `load_and_transform_audio_data`.

The references (torchaudio's kaldi.fbank and resample, pytorchvideo's clip sampler,
imagebind's data.py) are the real code, loaded as tests/support/audio_reference.py says; a
missing one fails the tests that need it, with the command that installs it. Every sound is
generated here.
"""

from __future__ import annotations

import io
import math
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handspring.errors import AudioError
from handspring.preprocess import audio
from handspring.preprocess.audio import (
    CLIPS_PER_ITEM,
    NUM_MEL_BINS,
    TARGET_LENGTH,
    _sinc_kernel,
    audio_clips,
    clip_bounds,
    decode_audio,
    describe_audio,
    resample,
    resampled_length,
)
from handspring.preprocess.fbank import fbank, mel_banks
from tests.support.audio_reference import (
    constant_clips_sampler_class,
    get_clip_timepoints,
    imagebind_data_functions,
    kaldi,
    kaldi_fbank,
    load_like_torchaudio,
    noise,
    speech_like,
    stereo_with_offsets,
    tones,
    torchaudio_resample,
    torchaudio_sinc_kernel,
)

FBANK_TOLERANCE = 1e-4
MODEL_INPUT_TOLERANCE = 1e-4
# Against torchaudio run in float64: the same arithmetic, in another order.
RESAMPLE_TOLERANCE = 1e-12


@pytest.fixture
def torch() -> types.ModuleType:
    """The reference tests' one dependency that may be absent (a runtime-only install)."""
    return pytest.importorskip("torch")


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max(initial=0.0))


# --- fbank -------------------------------------------------------------------------------

FBANK_SIGNALS: dict[str, Callable[[], np.ndarray]] = {
    "noise_2s": lambda: noise(2.0, 16000),
    "quiet_noise": lambda: noise(1.0, 16000, seed=1, level=1e-3),
    "tones_2s": lambda: tones(2.0, 16000),
    "speech_like": lambda: speech_like(2.0, 16000),
    "silence_dc_0.3": lambda: np.full(12345, 0.3, np.float32),
    "silence_zero": lambda: np.zeros(1000, np.float32),
    "one_frame_400": lambda: noise(400 / 16000, 16000, seed=2),
    "odd_401": lambda: tones(401 / 16000, 16000),
    "odd_4567": lambda: noise(4567 / 16000, 16000, seed=3, level=0.01),
    "loud_square": lambda: np.sign(tones(0.7, 16000, (97.0,))).astype(np.float32),
}


@pytest.mark.reference
def test_mel_banks_equal_torchaudio(torch: types.ModuleType) -> None:
    banks, _ = kaldi().get_mel_banks(128, 512, 16000.0, 20.0, 0.0, 100.0, -500.0, 1.0)
    expected = torch.nn.functional.pad(banks, (0, 1)).numpy()
    assert mel_banks(128, 512, 16000.0).dtype == np.float32
    assert np.array_equal(mel_banks(128, 512, 16000.0), expected)


@pytest.mark.reference
@pytest.mark.parametrize("name", list(FBANK_SIGNALS))
def test_fbank_matches_kaldi(
    name: str, torch: types.ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """Against kaldi.fbank run on the float64 waveform: the same code without float32 rounding.
    Against the float32 run ImageBind does, we may be no farther than that run is from its own
    float64 result (MKL's float32 FFT moves the weakest bins by up to ~3e-3)."""
    samples = FBANK_SIGNALS[name]()
    ours = fbank(samples)
    exact = kaldi_fbank(samples.astype(np.float64))
    float32 = kaldi_fbank(samples)
    to_exact, to_float32 = _max_abs(ours, exact), _max_abs(ours, float32)
    reference_own = _max_abs(float32, exact)
    with capsys.disabled():
        print(
            f"\nfbank {name} {ours.shape}: vs kaldi float64 {to_exact:.2e}, vs kaldi float32 "
            f"{to_float32:.2e} (kaldi float32 vs its float64 {reference_own:.2e})"
        )
    assert ours.dtype == np.float32
    assert to_exact <= FBANK_TOLERANCE
    assert to_float32 <= reference_own + 1e-5


def test_fbank_refuses_less_than_one_frame() -> None:
    with pytest.raises(ValueError, match="400 samples"):
        fbank(np.zeros(399, np.float32))


# --- clips -------------------------------------------------------------------------------

# Sample counts at 16 kHz: under one frame, around 2 s and 8 s (where clips stop overlapping),
# odd ones, and ten minutes.
CLIP_LENGTHS = [1, 399, 400, 16000, 19200, 31999, 32000, 32001, 32003, 48000, 84800, 84801,
                127999, 128000, 128001, 160007, 1_234_567, 9_600_000]  # fmt: skip


@pytest.mark.reference
def test_clip_bounds_match_pytorchvideo_sampler() -> None:
    """get_clip_timepoints from data.py with the real sampler, shared across items as data.py
    shares it, sliced as data.py slices."""
    timepoints = get_clip_timepoints()
    sampler = constant_clips_sampler_class()(clip_duration=2, clips_per_video=3)
    rng = np.random.default_rng(0)
    lengths = CLIP_LENGTHS + [int(n) for n in rng.integers(400, 2_000_000, 200)]
    for n in lengths:
        points = timepoints(sampler, n / 16000)
        expected = [(int(start * 16000), int(end * 16000)) for start, end in points]
        assert clip_bounds(n) == expected, n
        assert len(expected) == CLIPS_PER_ITEM


def test_clips_of_short_sounds_are_the_whole_sound() -> None:
    assert clip_bounds(19200) == [(0, 32000)] * 3
    # 5.3 s: starts at k * (5.3 - 2) / 3 s, with 5.3 - 2 = 3.2999999999999998 in float, and
    # int() truncating 17599.99... to 17599.
    assert clip_bounds(84800) == [(0, 32000), (17599, 49599), (35199, 67199)]


# --- resampling --------------------------------------------------------------------------

# (rate, new rate): ImageBind's cases to 16 kHz (reduced: 441:160, 3:1, 441:320, 1:2, 2:1,
# 441:640, 6:1, 3:4), and 1601:1000, coprime, whose phases' bands start at uneven taps.
RATE_PAIRS = [(44100, 16000), (48000, 16000), (22050, 16000), (8000, 16000), (32000, 16000),
              (11025, 16000), (96000, 16000), (12000, 16000), (1601, 1000)]  # fmt: skip


@pytest.mark.reference
@pytest.mark.parametrize(("rate", "new_rate"), RATE_PAIRS)
def test_sinc_kernel_is_torchaudios_band(rate: int, new_rate: int, torch: types.ModuleType) -> None:
    """Our band of each row is torchaudio's float64 kernel there; the rest of its row is (next
    to) zero."""
    gcd = math.gcd(rate, new_rate)
    full, width = torchaudio_sinc_kernel()(rate, new_rate, gcd, dtype=torch.float64)
    full = full[:, 0].numpy()
    band, first_taps, our_width = _sinc_kernel(rate // gcd, new_rate // gcd)
    assert our_width == width
    assert full.shape == (new_rate // gcd, 2 * width + rate // gcd)
    rows = np.arange(len(full))[:, None]
    columns = first_taps[:, None] + np.arange(band.shape[1])
    assert _max_abs(band, full[rows, columns]) <= 1e-15
    full[rows, columns] = 0
    assert np.abs(full).max() <= 1e-40


@pytest.mark.reference
@pytest.mark.parametrize(("rate", "new_rate"), RATE_PAIRS)
def test_resample_matches_torchaudio(
    rate: int, new_rate: int, torch: types.ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """Against torchaudio.functional.resample run in float64 (ImageBind's arithmetic without
    float32 rounding), and in float32 as ImageBind runs it: no farther from that than it is
    from its own float64 result (it computes the filter in float32, up to ~3e-5 off)."""
    reference = torchaudio_resample()
    signal = np.stack([speech_like(1.3, rate, seed=8), noise(1.3, rate, seed=9)])
    ours = resample(signal, rate, new_rate)
    exact = reference(torch.from_numpy(signal.astype(np.float64)), rate, new_rate).numpy()
    float32 = reference(torch.from_numpy(signal), rate, new_rate).numpy()
    to_exact, to_float32 = _max_abs(ours, exact), _max_abs(ours, float32)
    reference_own = _max_abs(float32, exact)
    with capsys.disabled():
        print(
            f"\nresample {rate} -> {new_rate}, 1.3 s stereo: vs torchaudio float64 "
            f"{to_exact:.2e}, vs torchaudio float32 {to_float32:.2e} (torchaudio float32 vs "
            f"its float64 {reference_own:.2e})"
        )
    assert ours.dtype == np.float64
    assert to_exact <= RESAMPLE_TOLERANCE
    assert to_float32 <= reference_own + 1e-6


@pytest.mark.reference
@pytest.mark.parametrize("rate", [44100, 48000, 22050, 8000])
def test_resample_lengths_and_parts(rate: int, torch: types.ModuleType) -> None:
    """Every length torchaudio gives, down to one sample; any part [start, stop) is those
    samples of the whole, computed alone."""
    reference = torchaudio_resample()
    for n in [1, 2, 3, 7, 441, 1000, rate - 1, rate + 1, round(1.37 * rate)]:
        signal = np.stack([tones(n / rate, rate), noise(n / rate, rate, seed=n)])
        ours = resample(signal, rate)
        expected = reference(torch.from_numpy(signal.astype(np.float64)), rate, 16000).numpy()
        assert ours.shape == expected.shape == (2, resampled_length(n, rate)), n
        assert _max_abs(ours, expected) <= RESAMPLE_TOLERANCE, n
        length = ours.shape[1]
        for start, stop in [(0, 1), (length // 3, length - 1), (length - 1, length), (5, 5)]:
            if stop <= length:
                part = resample(signal, rate, start=start, stop=stop)
                assert _max_abs(part, ours[:, start:stop]) <= 1e-15, (n, start, stop)
    with pytest.raises(ValueError, match="not within"):
        resample(signal, rate, start=0, stop=length + 1)


def test_resample_at_the_same_rate_copies() -> None:
    signal = noise(0.1, 16000)[None]
    out = resample(signal, 16000, start=3, stop=10)
    assert out.dtype == np.float64
    assert np.array_equal(out, signal[:, 3:10])
    out[:] = 0
    assert signal[0, 3] != 0


@pytest.mark.reference
@pytest.mark.slow
def test_resample_length_keeps_torchaudio_float32_ceiling(torch: types.ModuleType) -> None:
    """Past 2**23 output samples torchaudio's float32 ceiling falls one short: 48 kHz, 525 s."""
    n = 3 * 8_400_000 + 1  # 8_400_000.33 output samples
    signal = np.zeros((1, n), np.float32)
    signal[0, -5:] = 1.0
    expected = torchaudio_resample()(torch.from_numpy(signal), 48000, 16000).numpy()
    assert expected.shape[1] == resampled_length(n, 48000) == 8_400_000
    tail = resample(signal, 48000, start=8_400_000 - 10)
    assert _max_abs(tail, expected[:, -10:]) <= 1e-6


# --- end to end --------------------------------------------------------------------------


def _write_wav(path: Path, waveform: np.ndarray, rate: int) -> Path:
    import soundfile

    soundfile.write(path, waveform.T, rate, subtype="FLOAT")
    return path


END_TO_END: dict[str, Callable[[], tuple[np.ndarray, int]]] = {
    "44k1_stereo_5.3s": lambda: (stereo_with_offsets(5.3, 44100), 44100),
    "16k_mono_1.2s": lambda: (speech_like(1.2, 16000, seed=6)[None] + 0.05, 16000),
    "16k_stereo_9.1s": lambda: (stereo_with_offsets(9.1, 16000), 16000),
    "48k_mono_2.01s": lambda: (noise(2.01, 48000, seed=7)[None], 48000),
    "22k05_stereo_12.5s": lambda: (stereo_with_offsets(12.5, 22050), 22050),
    "8k_mono_0.7s": lambda: (speech_like(0.7, 8000, seed=10)[None], 8000),
}


def _without_in_place_effect(waveform: np.ndarray) -> np.ndarray:
    """Our clips if each clip's mean were subtracted from a copy: what the test must tell apart."""
    out = []
    for start, end in clip_bounds(waveform.shape[1]):
        clip = waveform[:, start:end].astype(np.float64)
        clip -= clip.mean()
        mel = np.zeros((NUM_MEL_BINS, TARGET_LENGTH), np.float32)
        frames = fbank(clip[0]).T[:, :TARGET_LENGTH]
        mel[:, : frames.shape[1]] = frames
        out.append(mel[None])
    return (np.stack(out) - np.float32(audio.MEAN)) / np.float32(audio.STD)


@pytest.mark.reference
@pytest.mark.parametrize("name", list(END_TO_END))
def test_audio_clips_match_imagebind(
    name: str, tmp_path: Path, torch: types.ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """From a WAV file, ours against data.py's own load_and_transform_audio_data with
    torchaudio's resample, soundfile decoding in torchaudio.load's place: run on the float64
    copy of the decoded samples (its arithmetic without rounding) within 1e-4, and in float32
    (as ImageBind runs) no farther than that float32 run is from its own float64 result."""
    waveform, rate = END_TO_END[name]()
    path = _write_wav(tmp_path / "sound.wav", waveform, rate)
    ours = audio_clips(path, str(path))

    def reference(dtype: Any) -> np.ndarray:
        data = imagebind_data_functions(load_like_torchaudio(dtype))
        return data["load_and_transform_audio_data"]([str(path)], "cpu")[0].numpy()

    exact, float32 = reference(torch.float64), reference(torch.float32)
    to_exact, to_float32 = _max_abs(ours, exact), _max_abs(ours, float32)
    reference_own = _max_abs(float32, exact)
    in_place = _max_abs(ours, _without_in_place_effect(resample(waveform, rate)))
    with capsys.disabled():
        print(
            f"\n{name}: {ours.shape} vs data.py (float64) {to_exact:.2e}, vs data.py "
            f"(float32) {to_float32:.2e} (its own float32 error {reference_own:.2e}); "
            f"in-place mean effect {in_place:.2e}"
        )
    assert ours.shape == (CLIPS_PER_ITEM, 1, NUM_MEL_BINS, TARGET_LENGTH)
    assert ours.dtype == np.float32
    assert to_exact <= MODEL_INPUT_TOLERANCE
    assert to_float32 <= reference_own + 1e-5
    if name == "44k1_stereo_5.3s":  # overlapping clips with DC offsets: the test must see it
        assert in_place > 10 * MODEL_INPUT_TOLERANCE


# --- inputs and formats ------------------------------------------------------------------

FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"),
           "mp3": ("MP3", "MPEG_LAYER_III")}  # fmt: skip


@pytest.mark.parametrize("suffix", list(FORMATS))
def test_formats_decode_from_path_and_bytes(suffix: str, tmp_path: Path) -> None:
    import soundfile

    fmt, subtype = FORMATS[suffix]
    assert fmt in soundfile.available_formats(), f"libsndfile {soundfile.__libsndfile_version__}"
    path = tmp_path / f"sound.{suffix}"
    soundfile.write(path, stereo_with_offsets(2.5, 44100).T, 44100, format=fmt, subtype=subtype)
    expected, _ = soundfile.read(path, dtype="float32", always_2d=True)
    from_path, rate = decode_audio(path, item="a")
    from_bytes, _ = decode_audio(path.read_bytes(), item="b")
    assert rate == 44100
    assert from_path.shape == (2, len(expected))
    assert np.array_equal(from_path, expected.T)
    assert np.array_equal(from_bytes, expected.T)
    clips = audio_clips(path.read_bytes(), "<bytes #0>")
    assert clips.shape == (3, 1, 128, 204)
    assert np.isfinite(clips).all()
    if suffix in ("wav", "flac"):  # lossless: the 16-bit samples themselves
        original = stereo_with_offsets(2.5, 44100)
        assert np.abs(from_path - original).max() <= 1 / 32768


def test_array_inputs() -> None:
    pcm = (tones(1.5, 22050) * 20000).astype(np.int16)
    as_float = pcm.astype(np.float32) / 32768
    mono = audio_clips((pcm, 22050), "<array #0>")
    assert np.array_equal(mono, audio_clips((as_float, 22050), "x"))
    assert np.array_equal(mono, audio_clips((as_float[None].astype(np.float64), 22050), "x"))
    waveform = stereo_with_offsets(3.0, 16000)
    before = waveform.copy()
    audio_clips((waveform, 16000), "x")  # at 16 kHz nothing is resampled: ours, not a copy
    assert np.array_equal(waveform, before)


def test_describe_audio() -> None:
    assert describe_audio("a/b.wav", 3) == "a/b.wav"
    assert describe_audio(Path("a/b.wav"), 3) == "a/b.wav"
    assert describe_audio(b"RIFF", 3) == "<bytes #3>"
    assert describe_audio((np.zeros(3), 16000), 3) == "<array #3>"


def _wav_bytes(waveform: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, waveform, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def _nan_wav() -> bytes:
    waveform = noise(0.5, 16000)
    waveform[100] = np.nan
    return _wav_bytes(waveform, 16000, "FLOAT")


ERRORS: dict[str, tuple[Callable[[Path], Any], dict[str, Any], str]] = {
    "missing": (lambda d: d / "missing.wav", {}, "file not found"),
    "directory": (lambda d: d, {}, "is a directory"),
    "empty_file": (lambda d: _touch(d / "empty.wav", b""), {}, "empty file (0 bytes)"),
    "text_file": (lambda d: _touch(d / "a.wav", b"hello, not a sound\n"), {},
                  "not a readable audio file"),
    "empty_bytes": (lambda d: b"", {}, "empty data (0 bytes)"),
    "garbage_bytes": (lambda d: bytes(range(256)) * 4, {}, "not a readable audio file"),
    "over_max_bytes": (lambda d: _wav_bytes(noise(1.0, 16000), 16000), {"max_bytes": 1000},
                       "too large: 32,044 bytes is over the limit of 1,000"),
    "no_frames": (lambda d: _wav_bytes(np.zeros(0, np.float32), 16000), {}, "no samples"),
    "too_long_file": (lambda d: _wav_bytes(noise(3.0, 8000), 8000), {"max_seconds": 2},
                      "too long: 3.0 s is over the limit of 2 s"),
    "nan_wav": (lambda d: _nan_wav(), {}, "contains NaN or infinite samples"),
    "too_short": (lambda d: _wav_bytes(noise(0.02, 16000), 16000), {},
                  "too short: 20.0 ms, under one 25 ms frame"),
    "too_short_resampled": (lambda d: (noise(0.0249, 48000), 48000), {}, "too short"),
    "array_nan": (lambda d: (np.array([0.0, np.inf] * 500, np.float32), 16000), {},
                  "contains NaN or infinite samples"),
    "array_3d": (lambda d: (np.zeros((1, 2, 800), np.float32), 16000), {}, "bad array shape"),
    "array_channels_last": (lambda d: (np.zeros((48000, 2), np.float32), 16000), {},
                            "bad array shape (48000, 2): expected [channels, samples]"),
    "array_int32": (lambda d: (np.zeros(800, np.int32), 16000), {},
                    "unsupported array dtype int32"),
    "array_empty": (lambda d: (np.zeros((2, 0), np.float32), 16000), {}, "no samples"),
    "array_rate_float": (lambda d: (np.zeros(800, np.float32), 16000.0), {},
                         "the sample rate must be an integer"),
    "array_rate_zero": (lambda d: (np.zeros(800, np.float32), 0), {}, "unsupported sample rate"),
    "array_too_long": (lambda d: (np.zeros(16001, np.float32), 16000), {"max_seconds": 1},
                       "too long"),
    "not_an_array": (lambda d: ([0.0] * 800, 16000), {}, "the waveform is a list, not a numpy"),
    "unsupported_type": (lambda d: 12, {}, "unsupported input type int"),
}  # fmt: skip


def _touch(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("name", list(ERRORS))
def test_errors_name_the_item_and_the_reason(name: str, tmp_path: Path) -> None:
    make, limits, reason = ERRORS[name]
    source = make(tmp_path)
    item = describe_audio(source, 7)
    with pytest.raises(AudioError) as caught:
        audio_clips(source, item, **limits)
    assert caught.value.item == item
    assert caught.value.reason.startswith(reason), caught.value.reason
    assert str(caught.value).startswith(f"{item}: {reason}")


def test_decoding_stops_at_the_limit() -> None:
    """A header cannot make us decode more than max_seconds: exactly at the limit passes."""
    waveform, rate = decode_audio(_wav_bytes(noise(2.0, 8000), 8000), item="x", max_seconds=2)
    assert waveform.shape == (1, 16000) and rate == 8000


def test_audio_libraries_load_only_when_used() -> None:
    script = "import sys, handspring.preprocess.audio as a\nprint('soundfile' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False"]
