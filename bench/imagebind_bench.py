"""PyTorch (the reference ImageBindModel) vs Handspring fp32 and int8 on a full-size
(imagebind_huge) random-weight ImageBind, per modality, in one run.

Both engines get the same prepared model inputs (pixel tensors, token ids, fbank clips,
depth/thermal maps, IMU windows), so the figures are the graphs' alone: Handspring through
`tower.run`, the reference through `model({modality: tensor})` under inference_mode with 2
torch threads. Every engine and modality runs in its own fresh process, so peak RSS (VmHWM)
is its own; Handspring's towers are built once in a first process (cold) and measured in a
second one that reads the graph cache (warm). The int8 gate compares int8 with fp32 embeddings
on photo-like images, varied texts, generated sounds and smooth array inputs.

    python bench/imagebind_bench.py                      # all six modalities, batch 1 and 8
    python bench/imagebind_bench.py --quick              # batch 1, fewer repetitions and inputs
    python bench/imagebind_bench.py --modalities audio,imu

The checkpoint (4.8 GB of random weights) is written once under --cache and reused; the
graphs go to a fresh HANDSPRING_CACHE under it, removed at the end. Peak memory: ~10 GB (the
PyTorch processes: the model plus the state_dict it copies from). Needs the test extra
(torch, imagebind-unofficial).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from harness import peak_rss_mib, spawn_worker, time_batches

ROOT = Path(__file__).resolve().parents[1]
MODALITIES = ("image", "text", "audio", "depth", "thermal", "imu")
PRECISIONS = ("fp32", "int8")
DEFAULT_CACHE = Path.home() / ".cache" / "handspring-bench" / "imagebind"
RUN_ROWS = 8  # gate inputs go through the engines in batches of this many

# Shown beside the figures.
SPEED_TARGET = {"image": 3.0, "audio": 3.0}  # int8 items/s over PyTorch's, every batch
RSS_TARGET_MIB = {"image": 900.0, "audio": 250.0}  # one modality loaded, int8, after a batch
GATE_TARGET = {m: 0.999 if m == "image" else 0.995 for m in MODALITIES}

# The first eight are the timed texts: prompts of a usual length. The rest vary the gate.
TEXTS = [
    "a photo of a dog",
    "a red car parked on the street",
    "children playing football in the park",
    "a bowl of fresh fruit on a table",
    "sunset over the mountains",
    "a cat sleeping on a sofa",
    "people walking in the rain with umbrellas",
    "an old castle on a hill",
    "",
    "dog",
    "the sound of rain on a tin roof",
    "a violin playing a slow melody in a concert hall",
    "A man is eating food.",
    "Two men pushed carts through the woods while it was raining.",
    "How do I reset my password if I no longer have access to my email?",
    "The quarterly report shows revenue grew by twelve percent year over year.",
    "Ünïcödé &amp; HTML   spacing, café, naïve, Zürich",
    "東京の夜景と高層ビル",
    "🐶🐱 emoji pets 🎉",
    "3.14159 26535 89793 numbers 42",
    "ALL CAPS SHOUTING ABOUT A THUNDERSTORM",
    "a thermal image of a person walking at night",
    "a depth map of an indoor room with furniture",
    "accelerometer readings of someone running",
    "waves crashing on a rocky shore under a grey sky",
    "a helicopter flying low over a city",
    "birds singing in a forest at dawn",
    "a close-up of a bee on a yellow flower",
    "a crowded train station during rush hour",
    "snow falling on a quiet street lined with trees",
    "word " * 100,  # cut to 77 tokens, the end token kept
    "an astronaut riding a horse on the moon, digital art, highly detailed, 4k",
]


# ------------------------------------------------------------------ inputs


def _image_inputs(n: int) -> np.ndarray:
    from PIL import Image

    from handspring.models.imagebind import IMAGE_SIZE
    from handspring.preprocess.image import ImageTransform
    from tests.support.images import photo_array

    # The image tower's own transform (Resize bicubic, CenterCrop, CLIP mean and std).
    transform = ImageTransform.from_open_clip({"size": IMAGE_SIZE})
    sizes = [(480, 640), (640, 480), (224, 224), (300, 900)]
    photos = [photo_array(*sizes[i % len(sizes)], seed=i) for i in range(n)]
    return np.stack([transform(Image.fromarray(p)) for p in photos])  # [N, 3, 224, 224]


def _text_inputs(texts: list[str]) -> dict[str, np.ndarray]:
    """Token ids as the reference's tokenizer gives them (zero-padded to 77) + where our
    tower reads each text, from the ImageBind tokenizer both engines share."""
    from handspring.models.imagebind import CONTEXT_LENGTH
    from handspring.preprocess.text import ClipTokenizer

    tokenizer = ClipTokenizer.from_clip_vocab(context_length=CONTEXT_LENGTH, cleaning="imagebind")
    batch = tokenizer.encode(texts)
    ids = np.zeros((len(texts), CONTEXT_LENGTH), np.int64)
    ids[:, : batch.input_ids.shape[1]] = batch.input_ids
    for i, length in enumerate(batch.lengths):
        ids[i, length:] = 0
    return {"ids": ids, "lengths": batch.lengths.astype(np.int64), "eot": batch.eot_index}


def _sounds(n: int) -> list[tuple[np.ndarray, int]]:
    from tests.support.audio_reference import noise, speech_like, stereo_with_offsets, tones

    def chirp(seconds: float, rate: int, low: float, high: float) -> np.ndarray:
        t = np.arange(round(seconds * rate)) / rate
        phase = 2 * np.pi * (low * t + (high - low) * t**2 / (2 * seconds))
        return (0.4 * np.sin(phase)).astype(np.float32)

    sounds = [
        (speech_like(4.3, 44100, seed=1), 44100),
        (tones(1.2, 16000), 16000),
        (chirp(3.0, 22050, 100, 8000), 22050),
        (noise(2.5, 22050, seed=2), 22050),
        (stereo_with_offsets(6.1, 48000), 48000),
        (tones(10.0, 16000, freqs=(60.0, 1000.0)), 16000),
        (chirp(7.5, 48000, 3000, 200) + noise(7.5, 48000, seed=3, level=0.05), 48000),
        (noise(0.8, 8000, seed=4, level=0.8), 8000),
    ]
    return [sounds[i % len(sounds)] for i in range(n)]


def _audio_inputs(n: int) -> np.ndarray:
    from handspring.preprocess.audio import audio_clips

    clips = [audio_clips(sound, f"<sound #{i}>") for i, sound in enumerate(_sounds(n))]
    return np.stack(clips)  # [N, 3, 1, 128, 204]


def _smooth_maps(n: int, seed: int) -> np.ndarray:
    """Depth- or thermal-like maps: blobs and a slope over the frame, plus sensor noise,
    standardised as a normalised input would be. [N, 1, 224, 224]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:224, 0:224].astype(np.float32) / 223
    maps = []
    for _ in range(n):
        field = rng.normal() * x + rng.normal() * y
        for _ in range(6):
            cy, cx, width = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
            field += rng.normal() * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * width**2))
        field += rng.normal(0, 0.05, field.shape)
        maps.append((field - field.mean()) / (field.std() + 1e-6))
    return np.stack(maps)[:, None].astype(np.float32)


def _imu_windows(n: int) -> np.ndarray:
    """Accelerometer and gyroscope windows: a few sinusoids per axis, gravity on one
    accelerometer axis, noise. [N, 6, 2000]."""
    rng = np.random.default_rng(11)
    t = np.arange(2000, dtype=np.float32) / 200  # 10 s at 200 Hz
    windows = []
    for _ in range(n):
        channels = []
        for c in range(6):
            signal = sum(
                rng.uniform(0.1, 1.0)
                * np.sin(2 * np.pi * rng.uniform(0.2, 5.0) * t + rng.uniform(0, 6))
                for _ in range(3)
            )
            signal += 9.81 if c == 2 else 0.0
            channels.append(signal + rng.normal(0, 0.05, t.shape))
        windows.append(np.stack(channels))
    return np.stack(windows).astype(np.float32)


def make_inputs(modalities: list[str], path: Path) -> dict[str, int]:
    """Every modality's inputs, saved for the workers; returns how many of each."""
    arrays: dict[str, np.ndarray] = {}
    for modality in modalities:
        if modality == "image":
            arrays["image"] = _image_inputs(16)
        elif modality == "text":
            arrays |= {f"text.{k}": v for k, v in _text_inputs(TEXTS).items()}
        elif modality == "audio":
            arrays["audio"] = _audio_inputs(8)
        elif modality in ("depth", "thermal"):
            arrays[modality] = _smooth_maps(8, seed=1 if modality == "depth" else 2)
        else:
            arrays["imu"] = _imu_windows(8)
    np.savez(path, **arrays)
    return {m: len(arrays["text.ids" if m == "text" else m]) for m in modalities}


def gate_rows(modality: str, count: int, quick: bool) -> np.ndarray:
    """Which inputs the gate reads: all, or a spread-out quarter to third of them."""
    return np.arange(count)[:: (4 if modality in ("image", "text") else 3) if quick else 1]


# ----------------------------------------------------------------- workers


def _model_inputs(modality: str, path: Path) -> list[Any]:
    """One model input per item: an array, or for texts (reference ids [77], our tokens)."""
    data = np.load(path)
    if modality != "text":
        return list(data[modality])
    from handspring.towers.text import TextTokens

    ids, lengths, eot = data["text.ids"], data["text.lengths"], data["text.eot"]
    return [
        (
            ids[i],
            TextTokens(ids[i, : lengths[i]], bool(lengths[i] == ids.shape[1]), eot=int(eot[i])),
        )
        for i in range(len(ids))
    ]


def _pytorch_runner(modality: str, checkpoint: Path) -> Any:
    import torch
    from safetensors.torch import load_file

    from handspring.models.imagebind import ImageBindConfig
    from tests.support.imagebind_reference import imagebind_model_module

    torch.set_num_threads(2)
    config = json.loads((checkpoint / "config.json").read_text())
    cfg = ImageBindConfig.from_json(config)
    # As imagebind_huge(pretrained=True) does: build (random init), then copy a state_dict in.
    model = imagebind_model_module().ImageBindModel(**asdict(cfg)).eval()
    model.load_state_dict(load_file(str(checkpoint / "model.safetensors")), strict=True)
    name = "vision" if modality == "image" else modality

    def run(batch: list[Any]) -> np.ndarray:
        rows = [b[0] for b in batch] if modality == "text" else batch
        with torch.inference_mode():
            return model({name: torch.from_numpy(np.stack(rows))})[name].numpy()

    return run


def _handspring_runner(modality: str, checkpoint: Path, precision: str) -> Any:
    import handspring

    tower = handspring.load(checkpoint, modalities=[modality], precision=precision).towers[modality]

    def run(batch: list[Any]) -> np.ndarray:
        return tower.run([b[1] for b in batch] if modality == "text" else batch)

    return run


def worker(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    run_dir, checkpoint = Path(args.run_dir), Path(args.checkpoint)
    batches = [int(b) for b in args.batches.split(",")]
    if args.worker == "all":
        return _all_towers_worker(args.modality.split(","), checkpoint, run_dir, batches)
    from handspring.models.imagebind import CONTEXT_LENGTH

    modality = args.modality
    items = _model_inputs(modality, run_dir / "inputs.npz")
    start = time.perf_counter()
    if args.worker == "pytorch":
        run = _pytorch_runner(modality, checkpoint)
    else:
        run = _handspring_runner(modality, checkpoint, args.worker)
    load_s = time.perf_counter() - start
    run(items[:1])
    out: dict[str, Any] = {
        "load_s": load_s,
        "first_s": time.time() - args.spawned_at,
        "rss_ready_mib": peak_rss_mib(),
    }
    if args.build:  # the cold start alone: the graph built, one item embedded
        return out
    out["ms"] = time_batches(run, items[:RUN_ROWS], batches, args.seconds)
    if modality == "text":
        # Like for like: a text that fills the context, which the reference always runs.
        longest = [item for item in items if item[1].tokens == CONTEXT_LENGTH]
        out["ms_full_length"] = time_batches(run, longest[:1], batches, args.seconds)
    out["rss_batches_mib"] = peak_rss_mib()
    out["resident_mib"] = _resident_mib()
    gate = [items[i] for i in gate_rows(modality, len(items), args.quick)]
    embeddings = [run(gate[i : i + RUN_ROWS]) for i in range(0, len(gate), RUN_ROWS)]
    np.save(run_dir / f"{args.worker}-{modality}.npy", np.concatenate(embeddings))
    return out


def _all_towers_worker(
    modalities: list[str], checkpoint: Path, run_dir: Path, batches: list[int]
) -> dict[str, Any]:
    import handspring

    start = time.perf_counter()
    model = handspring.load(checkpoint, modalities=modalities, precision="int8")
    load_s = time.perf_counter() - start
    for modality in modalities:
        items = _model_inputs(modality, run_dir / "inputs.npz")
        tower = model.towers[modality]
        batch = items[: max(batches)]
        tower.run([b[1] for b in batch] if modality == "text" else batch)
    return {"load_s": load_s, "rss_batches_mib": peak_rss_mib(), "resident_mib": _resident_mib()}


def _resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------- checkpoint


def ensure_checkpoint(cache: Path, seed: int) -> Path:
    """The full-size random-weight checkpoint, written once (in a separate process, which
    holds the model once: safetensors writes from the tensors' own memory)."""
    from handspring.models.imagebind import ImageBindConfig

    folder = cache / f"huge-seed{seed}"
    config_path = folder / "config.json"
    if (folder / "model.safetensors").is_file() and config_path.is_file():
        written = json.loads(config_path.read_text())
        expected = {
            k: list(v) if isinstance(v, tuple) else v for k, v in asdict(ImageBindConfig()).items()
        }
        if all(written.get(k) == v for k, v in expected.items()):
            return folder
        raise SystemExit(f"{folder} holds another config; remove it to write imagebind_huge")
    staging = cache / f".staging-huge-seed{seed}-{os.getpid()}"
    print(f"writing the full-size checkpoint to {folder} (4.8 GB, ~1 min) ...", file=sys.stderr)
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
        "from handspring.models.imagebind import ImageBindConfig; "
        "from tests.support.imagebind_reference import write_imagebind_checkpoint; "
        "write_imagebind_checkpoint(Path(sys.argv[2]), ImageBindConfig(), int(sys.argv[3]))"
    )
    try:
        subprocess.run([sys.executable, "-c", code, str(ROOT), str(staging), str(seed)], check=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


# ------------------------------------------------------------------ tables


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def throughput_table(
    results: dict[tuple[str, str], dict], modalities: list[str], batches: list[int]
) -> str:
    lines = [
        "| engine | modality | batch | ms/batch | items/s | vs PyTorch | target |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    rows = [(m, m, "ms") for m in modalities]
    if "text" in modalities:
        rows.insert(modalities.index("text") + 1, ("text", "text, 77 tokens", "ms_full_length"))
    for modality, label, key in rows:
        for batch in batches:
            ref_ms = results[("pytorch", modality)][key][str(batch)]
            for engine in ("pytorch", *PRECISIONS):
                ms = results[(engine, modality)][key][str(batch)]
                ratio = ref_ms / ms
                target = ""
                if engine == "int8" and modality in SPEED_TARGET:
                    goal = SPEED_TARGET[modality]
                    target = f">= {goal:.0f}x: {'met' if ratio >= goal else 'NOT met'}"
                lines.append(
                    f"| {engine} | {label} | {batch} | {ms:.1f} | {1000 * batch / ms:.2f} "
                    f"| {ratio:.2f}x | {target} |"
                )
    return "\n".join(lines)


def memory_table(
    results: dict[tuple[str, str], dict],
    builds: dict[tuple[str, str], dict],
    everything: dict[str, Any],
    modalities: list[str],
    batches: list[int],
) -> str:
    after = f"after batch {' and '.join(map(str, batches))}"
    lines = [
        f"| what | peak RSS MiB ({after}) | resident MiB at the end "
        "| start to first embedding | target |",
        "|---|---:|---:|---:|---|",
    ]
    for modality in modalities:
        for precision in PRECISIONS:
            res = results[(precision, modality)]
            peak = res["rss_batches_mib"]
            target = ""
            if precision == "int8" and modality in RSS_TARGET_MIB:
                goal = RSS_TARGET_MIB[modality]
                target = f"<= {goal:.0f}: {'met' if peak <= goal else 'NOT met'}"
            lines.append(
                f"| Handspring {precision}, {modality} only, warm (cached graph) | {peak:.0f} "
                f"| {res['resident_mib']:.0f} | {res['first_s']:.1f} s | {target} |"
            )
            cold = builds[(precision, modality)]
            lines.append(
                f"| Handspring {precision}, {modality} only, cold (graph built; one item) "
                f"| {cold['rss_ready_mib']:.0f} | | {cold['first_s']:.1f} s "
                f"(load {cold['load_s']:.1f} s) | |"
            )
        res = results[("pytorch", modality)]
        lines.append(
            f"| PyTorch, whole model, {modality} run | {res['rss_batches_mib']:.0f} "
            f"| {res['resident_mib']:.0f} | {res['first_s']:.1f} s | |"
        )
    label = "all six" if len(modalities) == len(MODALITIES) else ", ".join(modalities)
    lines.append(
        f"| Handspring int8, {label} loaded, a batch of each "
        f"| {everything['rss_batches_mib']:.0f} | {everything['resident_mib']:.0f} "
        f"| load {everything['load_s']:.1f} s | |"
    )
    lines.append(
        "\nPyTorch's peak is its load, as imagebind_huge(pretrained=True) loads: the model "
        "plus the state_dict it copies from."
    )
    return "\n".join(lines)


def gate_table(run_dir: Path, modalities: list[str]) -> str:
    lines = [
        "| modality | inputs | min cosine int8 vs fp32 | target "
        "| fp32 vs PyTorch, max abs on unit vectors | min cosine int8 vs PyTorch |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for modality in modalities:
        ours = {p: _unit(np.load(run_dir / f"{p}-{modality}.npy")) for p in PRECISIONS}
        reference = _unit(np.load(run_dir / f"pytorch-{modality}.npy"))
        cosine = float((ours["int8"] * ours["fp32"]).sum(axis=1).min())
        to_reference = float((ours["int8"] * reference).sum(axis=1).min())
        goal = GATE_TARGET[modality]
        lines.append(
            f"| {modality} | {len(reference)} | {cosine:.5f} | >= {goal}: "
            f"{'met' if cosine >= goal else 'NOT met'} "
            f"| {np.abs(ours['fp32'] - reference).max():.1e} | {to_reference:.5f} |"
        )
    return "\n".join(lines)


def environment() -> str:
    import handspring

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    flags = Path("/proc/cpuinfo").read_text()
    vnni = "avx512_vnni" in flags or "avx_vnni" in flags
    return (
        f"Handspring {handspring.__version__}, onnxruntime {version('onnxruntime')}, "
        f"torch {version('torch')}, imagebind-unofficial {version('imagebind-unofficial')}; "
        f"CPU: {cpu}, {len(os.sched_getaffinity(0))} CPUs, VNNI {'yes' if vnni else 'no'}"
    )


# -------------------------------------------------------------------- main


def _spawn(args: list[str], env: dict[str, str]) -> dict:
    try:
        return spawn_worker(__file__, args, env)
    except subprocess.CalledProcessError as exc:
        sys.stderr.write(exc.stderr or "")
        raise SystemExit(f"worker {' '.join(args)} failed (exit {exc.returncode})") from None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="batch 1, ~1 s per figure, fewer gate inputs"
    )
    parser.add_argument("--modalities", default=",".join(MODALITIES), help="comma-separated")
    parser.add_argument("--seconds", type=float, default=4.0, help="timing per batch size")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--seed", type=int, default=0)
    # Worker mode (the bench runs itself).
    parser.add_argument("--worker")
    parser.add_argument("--modality")
    parser.add_argument("--checkpoint")
    parser.add_argument("--run-dir")
    parser.add_argument("--batches")
    parser.add_argument("--build", action="store_true")
    parser.add_argument("--spawned-at", type=float)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    sys.path.insert(0, str(ROOT))
    modalities = [m.strip() for m in args.modalities.split(",") if m.strip()]
    if unknown := [m for m in modalities if m not in MODALITIES]:
        parser.error(f"unknown modality {unknown[0]!r}; choose from {', '.join(MODALITIES)}")
    batches = [1] if args.quick else [1, 8]
    seconds = 1.0 if args.quick else args.seconds
    began = time.perf_counter()
    args.cache.mkdir(parents=True, exist_ok=True)
    checkpoint = ensure_checkpoint(args.cache, args.seed)
    with tempfile.TemporaryDirectory(dir=args.cache, prefix="run-") as tmp:
        run_dir = Path(tmp)
        counts = make_inputs(modalities, run_dir / "inputs.npz")
        env = dict(
            os.environ, HANDSPRING_CACHE=str(run_dir / "handspring-cache"), HF_HUB_OFFLINE="1"
        )
        common = [
            "--checkpoint",
            str(checkpoint),
            "--run-dir",
            str(run_dir),
            "--batches",
            ",".join(map(str, batches)),
        ]
        common += ["--seconds", str(seconds)] + (["--quick"] if args.quick else [])
        results: dict[tuple[str, str], dict] = {}
        builds: dict[tuple[str, str], dict] = {}
        for modality in modalities:
            for engine in ("pytorch", *PRECISIONS):
                if engine != "pytorch":
                    print(f"{modality}: building {engine} ...", file=sys.stderr)
                    builds[(engine, modality)] = _spawn(
                        ["--worker", engine, "--modality", modality, "--build", *common], env
                    )
                print(f"{modality}: running {engine} ...", file=sys.stderr)
                results[(engine, modality)] = _spawn(
                    ["--worker", engine, "--modality", modality, *common], env
                )
        print("int8, every modality at once ...", file=sys.stderr)
        everything = _spawn(["--worker", "all", "--modality", ",".join(modalities), *common], env)
        print(f"\nImageBind huge (imagebind_huge sizes), random weights; {environment()}")
        print(
            "Prepared model inputs, the same for both engines; PyTorch eager, inference_mode, "
            f"2 threads; Handspring tower.run, 2 threads. {seconds:.0f} s per figure (median). "
            f"Texts: prompts of 4-8 words (PyTorch runs all 77 positions, Handspring pads to the "
            f"longest), and one that fills the 77 tokens. Audio: 3 clips per item.\n"
        )
        print(throughput_table(results, modalities, batches))
        print()
        print(memory_table(results, builds, everything, modalities, batches))
        print()
        gate_counts = {m: len(gate_rows(m, counts[m], args.quick)) for m in modalities}
        print(f"Gate inputs: {', '.join(f'{n} {m}' for m, n in gate_counts.items())}\n")
        print(gate_table(run_dir, modalities))
    print(f"\n(bench ran {time.perf_counter() - began:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
