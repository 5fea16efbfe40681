"""Handspring against its peers on CLIP ViT-B/32 (full size, random weights, seeded), image
and text towers, from the same model inputs: the same pixel tensors for every engine, and
the same 32 search queries tokenized by each engine's own tokenizer (the same ids). Each
peer gets a batch's ids padded to that batch's longest text, as its tokenizer pads them;
Handspring is timed from the strings through `embed_texts` (tokenizing included), which
sorts a batch by length and runs it in runs of 16, each padded to its own longest.

Engines, each in a process of its own (peak RSS is its own; rounds alternate between them):

    pytorch      transformers CLIP{Vision,Text}ModelWithProjection, eager, fp32
    fastembed    fastembed's ImageEmbedding / TextEmbedding (Qdrant/clip-ViT-B-32-*) given the
                 folder of a graph exported the way fastembed's are (torch.onnx.export of the
                 projection models; fastembed cannot fetch its own here: no model hub), timed
                 on the ONNX Runtime session fastembed made
    ort-qdyn     ONNX Runtime quantize_dynamic (signed int8 weights) on that exported graph
    ov-default   OpenVINO on that exported graph, default precision hint (bf16 on a CPU with
                 bf16 units)
    ov-nncf      OpenVINO int8 by NNCF post-training quantization (transformer model type,
                 mixed preset), calibrated on 64 photo-like images / 64 queries not timed
    hs-fp32 hs-int8           Handspring on ONNX Runtime
    hs-fp32-ov hs-int8-ov     Handspring on its OpenVINO backend (backend="openvino")
    hs-bf16                   Handspring bf16 (OpenVINO, bf16 hint on the fp32 graph)

Each engine's timing is a median over calls of ms per batch, wall clock and CPU time of the
process (all its threads); a round runs every engine once per batch size, rounds rotate the
order. CPU time per item is what survives a busy machine; images/s needs a quiet one:

- `--threads 1` (the default when the machine is busy): no engine has worker threads to
  spin or to wait on others, so CPU ms per item is the work itself. Ratios from it are the
  ones to quote on a shared machine.
- The quiet-machine gate: other processes' CPU use (from /proc/stat, minus this bench's
  own processes) is sampled during every round. Above --max-other cores (default 0.15) the
  wall-clock table is not printed unless --force, which prints it under a warning line.

Peak RSS: each engine's timing process after all its batches (files or graph cache read,
warm), and a separate cold first load: a fresh process (Handspring with an empty graph
cache, so it builds its graphs) loading and running one batch of 16.

    python bench/peers_bench.py                        # ~40 min on 2 busy cores
    python bench/peers_bench.py --towers text --engines pytorch,ov-nncf,hs-int8 --batches 32
    python bench/peers_bench.py --quick                # smoke run: batches 1 and 4, 1 round

Needs torch, transformers, onnxruntime, openvino, nncf and fastembed (fastembed installs
with --no-deps beside huggingface_hub 2: it only asks for <2). Disk: ~2.5 GB under --cache
(checkpoint, exported and quantized graphs, kept and reused); the graph cache of a run goes
to a run folder under it, removed at the end.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from harness import peak_rss_mib

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path.home() / ".cache" / "handspring-bench" / "peers"
CPUS = len(os.sched_getaffinity(0))
ENGINES = (
    "pytorch",
    "fastembed",
    "ort-qdyn",
    "ov-default",
    "ov-nncf",
    "hs-fp32",
    "hs-int8",
    "hs-fp32-ov",
    "hs-int8-ov",
    "hs-bf16",
)
HANDSPRING = {  # engine -> (precision, backend)
    "hs-fp32": ("fp32", "onnxruntime"),
    "hs-int8": ("int8", "onnxruntime"),
    "hs-fp32-ov": ("fp32", "openvino"),
    "hs-int8-ov": ("int8", "openvino"),
    "hs-bf16": ("bf16", "openvino"),
}
TOWERS = ("image", "text")
BATCHES = (1, 16, 32)
COUNT = 32  # inputs per tower, timed and compared
CALIBRATION = 64
SEED = 0
PACKAGES = ("torch", "transformers", "onnxruntime", "openvino", "nncf", "fastembed", "handspring")

Batch = Callable[[int], Any]  # batch size -> run that many inputs once

# ------------------------------------------------------------------------- inputs

PHOTO_SIZES = [(768, 1024), (1024, 768), (480, 640), (600, 800), (1080, 1440), (640, 480)]
QUERIES = [
    "a dog", "sunset over the sea", "a red car parked on the street", "birthday cake",
    "children playing football in the park", "a bowl of fresh fruit on a wooden table",
    "my cat sleeping on the sofa", "people walking in the rain with umbrellas", "fireworks",
    "an old castle on a hill above a small village", "snow on the mountains", "receipt",
    "a plate of pasta with tomato sauce and basil", "two friends laughing at a café",
    "the Eiffel Tower at night", "a close-up of a bee on a yellow flower", "wedding",
    "a crowded train station during rush hour", "waves crashing on a rocky shore",
    "screenshot of a chat conversation", "a baby taking its first steps", "东京的夜景",
    "a hiking trail through a pine forest in autumn", "whiteboard with notes from a meeting",
    "a black and white portrait of an old man", "a bicycle leaning against a brick wall",
    "the kids building a sandcastle at the beach last summer", "a handwritten letter",
    "aerial view of a city with a river running through it", "Mount Fuji reflected in a lake",
    "a golden retriever catching a frisbee in mid air on a sunny day",
    "a cup of coffee and a croissant on a balcony in the morning light",
]  # fmt: skip
# Not timed: 64 other queries for NNCF's calibration.
CALIBRATION_QUERIES = [
    f"{adjective} {thing}"
    for adjective in ("a small", "an old", "a bright", "two", "a blurry", "my", "a wet", "a busy")
    for thing in ("house", "bird", "boat", "market", "street", "garden", "bridge", "tree")
]


def photo_jpegs(count: int, first_seed: int) -> list[bytes]:
    from PIL import Image

    from tests.support.images import photo_array

    out = []
    for i in range(count):
        height, width = PHOTO_SIZES[i % len(PHOTO_SIZES)]
        buffer = io.BytesIO()
        Image.fromarray(photo_array(height, width, seed=first_seed + i)).save(
            buffer, "JPEG", quality=90
        )
        out.append(buffer.getvalue())
    return out


# ------------------------------------------------------------------ preparation


def prepare(cache: Path) -> None:
    """Everything the engines read, made once under `cache` (reused when present)."""
    folder = cache / f"clip-seed{SEED}"
    if not (folder / "model.safetensors").is_file():
        from tests.support.checkpoints import VIT_B32, write_hf_clip

        staging = Path(tempfile.mkdtemp(dir=cache))
        write_hf_clip(staging, VIT_B32, seed=SEED)
        staging.rename(folder)
    if not (cache / "pixels.npy").is_file():
        import handspring

        tower = handspring.load(folder, modalities=["image"]).towers["image"]

        def pixels(jpegs: list[bytes]) -> np.ndarray:
            return np.stack([tower.prepare(j, f"#{i}", {}) for i, j in enumerate(jpegs)])

        np.save(cache / "calibration-pixels.npy", pixels(photo_jpegs(CALIBRATION, 1000)))
        np.save(cache / "pixels.npy", pixels(photo_jpegs(COUNT, 0)))
    for tower in TOWERS:
        exported = cache / f"fastembed-{tower}" / "model.onnx"
        if not exported.is_file():
            export(folder, tower, exported.parent)
        quantized = cache / f"qdyn-{tower}.onnx"
        if not quantized.is_file():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(exported, quantized, weight_type=QuantType.QInt8)
        nncf_ir = cache / f"nncf-{tower}.xml"
        if not nncf_ir.is_file():
            nncf_quantize(cache, tower, exported, nncf_ir)


def export(folder: Path, tower: str, out: Path) -> None:
    """The projection model exported as optimum exports fastembed's CLIP graphs: one output
    (the projected embedding), dynamic batch (and sequence for text)."""
    import torch
    import transformers

    out.mkdir(parents=True, exist_ok=True)
    kind = (
        transformers.CLIPVisionModelWithProjection
        if tower == "image"
        else transformers.CLIPTextModelWithProjection
    )

    class Projection(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = kind.from_pretrained(folder, attn_implementation="eager").eval()

        def forward(self, *inputs: Any) -> Any:
            if tower == "image":
                return self.model(pixel_values=inputs[0]).image_embeds
            return self.model(input_ids=inputs[0], attention_mask=inputs[1]).text_embeds

    if tower == "image":
        example: tuple[Any, ...] = (torch.zeros(1, 3, 224, 224),)
        names, axes = ["pixel_values"], {"pixel_values": {0: "batch"}}
        files = ("preprocessor_config.json", "config.json")
    else:
        example = (torch.ones(1, 8, dtype=torch.int64), torch.ones(1, 8, dtype=torch.int64))
        names = ["input_ids", "attention_mask"]
        axes = {n: {0: "batch", 1: "sequence"} for n in names}
        files = (
            "config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        )
    with torch.no_grad():
        torch.onnx.export(
            Projection(),
            example,
            str(out / "model.onnx"),
            input_names=names,
            output_names=[f"{tower}_embeds"],
            dynamic_axes=axes | {f"{tower}_embeds": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    for name in files:
        shutil.copy(folder / name, out / name)


def text_ids(folder: Path, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """CLIPTokenizer's ids and mask, padded to the longest text (the peers' text input)."""
    import transformers

    tokenizer = transformers.CLIPTokenizer.from_pretrained(folder)
    batch = tokenizer(list(texts), padding=True, truncation=True, return_tensors="np")
    return {"input_ids": batch["input_ids"].astype(np.int64), "attention_mask": batch["attention_mask"].astype(np.int64)}  # fmt: skip


def nncf_quantize(cache: Path, tower: str, exported: Path, out: Path) -> None:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(exported))
    if tower == "image":
        pixels = np.load(cache / "calibration-pixels.npy")
        items = [{"pixel_values": pixels[i : i + 1]} for i in range(len(pixels))]
    else:
        ids = text_ids(cache / f"clip-seed{SEED}", CALIBRATION_QUERIES)
        items = [{k: v[i : i + 1] for k, v in ids.items()} for i in range(len(ids["input_ids"]))]
    quantized = nncf.quantize(
        model,
        nncf.Dataset(items),
        preset=nncf.QuantizationPreset.MIXED,
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(items),
    )
    ov.save_model(quantized, str(out))


# ----------------------------------------------------------------------- engines


def engine_runner(engine: str, tower: str, cache: Path, threads: int) -> tuple[Batch, Batch]:
    """(timed, outputs): each takes a batch size and runs the first that many inputs;
    `outputs` returns [N, D] embeddings (any scale)."""
    folder = cache / f"clip-seed{SEED}"
    pixels = np.load(cache / "pixels.npy")
    if engine in HANDSPRING:
        return _handspring(folder, tower, pixels, *HANDSPRING[engine], threads)
    if tower == "image":
        feeds = lambda n: {"pixel_values": pixels[:n]}  # noqa: E731
    else:
        # Each batch as the peer's tokenizer pads it: to the batch's own longest text.
        # Tokenized once per batch size, by its untimed warm-up run.
        feeds = functools.cache(lambda n: text_ids(folder, QUERIES[:n]))
    if engine == "pytorch":
        return _pytorch(folder, tower, feeds, threads)
    if engine == "fastembed":
        session = _fastembed_session(cache, tower, threads)
    elif engine == "ort-qdyn":
        session = _ort_session(cache / f"qdyn-{tower}.onnx", threads)
    else:
        session = _openvino_peer(cache, tower, engine, threads)
    run = lambda n: session.run(None, feeds(n))[0]  # noqa: E731
    return run, run


def handspring_model(
    folder: Path, towers: list[str], precision: str, backend: str, threads: int
) -> Any:
    """The CLIP model `handspring.load` makes at `precision` on `backend`, without spinning
    threads. bf16 is what this bench measures to grant the registry's bf16 gates, so the
    bench folder (no catalog entry) goes to the CLIP loader directly: `load` less its gate."""
    from handspring.loaders.clip import load_clip
    from handspring.loaders.options import LoadOptions
    from handspring.runtime.backends import Runtime, check_runtime
    from handspring.runtime.session import graph_precision

    check_runtime(Runtime(backend, precision))
    options = LoadOptions(
        precision=graph_precision(precision),
        precision_name=precision,
        threads=threads,
        spinning=False,
        backend=backend,
    )
    return load_clip(str(folder), folder, towers, options)


def _handspring(
    folder: Path, tower: str, pixels: np.ndarray, precision: str, backend: str, threads: int
) -> tuple[Batch, Batch]:
    """The one tower of `handspring_model`, timed on its `run` (model inputs to vectors)."""
    model = handspring_model(folder, [tower], precision, backend, threads)
    if tower == "image":
        images = list(pixels)
        run = lambda n: model.towers[tower].run(images[:n])  # noqa: E731
    else:  # from the strings, tokenizing included, as `embed_texts` runs a batch
        run = lambda n: model.embed_texts(QUERIES[:n], batch_size=n, normalize=False)  # noqa: E731
    return run, run


def _pytorch(
    folder: Path, tower: str, feeds: Callable[[int], dict[str, np.ndarray]], threads: int
) -> tuple[Batch, Batch]:
    import torch
    import transformers

    torch.set_num_threads(threads)
    if tower == "image":
        vision = transformers.CLIPVisionModelWithProjection.from_pretrained(folder).eval()
        forward = lambda f: vision(pixel_values=torch.from_numpy(f["pixel_values"])).image_embeds  # noqa: E731
    else:
        text = transformers.CLIPTextModelWithProjection.from_pretrained(folder).eval()
        forward = lambda f: text(**{k: torch.from_numpy(v) for k, v in f.items()}).text_embeds  # noqa: E731

    def run(n: int) -> np.ndarray:
        with torch.inference_mode():
            return forward(feeds(n)).numpy()

    return run, run


def _ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _fastembed_session(cache: Path, tower: str, threads: int) -> Any:
    from fastembed import ImageEmbedding, TextEmbedding

    kind, name = (
        (ImageEmbedding, "Qdrant/clip-ViT-B-32-vision")
        if tower == "image"
        else (TextEmbedding, "Qdrant/clip-ViT-B-32-text")
    )
    embedding = kind(name, specific_model_path=str(cache / f"fastembed-{tower}"), threads=threads)
    return embedding.model.model  # the onnxruntime.InferenceSession fastembed made


def _openvino_peer(cache: Path, tower: str, engine: str, threads: int) -> Any:
    import openvino as ov

    path = cache / (
        f"fastembed-{tower}/model.onnx" if engine == "ov-default" else f"nncf-{tower}.xml"
    )
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()

    class Session:
        def run(self, _: object, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            return [request.infer(feeds, share_outputs=False)[0]]

    return Session()


# ----------------------------------------------------------------------- workers


def worker(engine: str, tower: str, cache: Path, threads: int, cold_batch: int) -> None:
    """Load, then answer commands from stdin, one JSON line each: {"batch", "seconds"} ->
    medians of ms per batch; {"outputs": path} -> saves the embeddings of every input;
    {"quit": true} -> peak RSS. With `cold_batch`, run that batch once and report instead."""
    start = time.perf_counter()
    timed, outputs = engine_runner(engine, tower, cache, threads)
    if cold_batch:
        timed(cold_batch)
        reply({"seconds": time.perf_counter() - start, "peak_rss_mib": peak_rss_mib()})
        return
    reply({"ready": True, "load_s": time.perf_counter() - start})
    for line in sys.stdin:
        command = json.loads(line)
        if "batch" in command:
            reply(time_batch(timed, command["batch"], command["seconds"]))
        elif "outputs" in command:
            np.save(command["outputs"], np.asarray(outputs(COUNT), dtype=np.float32))
            reply({"saved": command["outputs"]})
        else:
            reply({"peak_rss_mib": peak_rss_mib()})
            return


def reply(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def time_batch(run: Batch, batch: int, seconds: float) -> dict[str, float]:
    run(batch)  # warm-up
    walls, cpus = [], []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(walls) < 3:
        wall, cpu = time.perf_counter(), time.process_time()
        run(batch)
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return {"wall_ms": 1000 * float(np.median(walls)), "cpu_ms": 1000 * float(np.median(cpus))}


class Worker:
    """A long-lived engine process, driven over its stdin and stdout."""

    def __init__(self, engine: str, tower: str, args: argparse.Namespace, env: dict[str, str]):
        self.engine = engine
        command = [
            sys.executable, __file__, "--worker", engine, "--towers", tower,
            "--cache", str(args.cache), "--threads", str(args.threads),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
        )
        self.ready = self.read()

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self.read()

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.engine}: worker exited ({self.process.wait()})")
        return json.loads(line)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> float:
        peak = self.ask({"quit": True})["peak_rss_mib"]
        self.process.wait()
        return float(peak)


def busy_seconds() -> float:
    """CPU seconds every process has used since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def engine_env(engine: str, graph_cache: Path) -> dict[str, str]:
    env = dict(os.environ, HANDSPRING_CACHE=str(graph_cache), HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "bench")])
    if engine == "pytorch":  # OpenMP threads sleep instead of spinning between ops
        env |= {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0"}
    return env


# ------------------------------------------------------------------------ a run


def run_tower(tower: str, engines: Sequence[str], args: argparse.Namespace) -> dict[str, Any]:
    graph_cache = args.run_dir / "graphs"
    if any(e in HANDSPRING for e in engines):  # built once, outside any measurement
        build = [e for e in engines if e in HANDSPRING]
        for engine in build:
            Worker(engine, tower, args, engine_env(engine, graph_cache)).close()
    cold = {e: cold_load(e, tower, args) for e in engines}
    workers = {e: Worker(e, tower, args, engine_env(e, graph_cache)) for e in engines}
    timings: dict[str, dict[int, list[dict[str, float]]]] = {e: {} for e in engines}
    other_cores: list[float] = []
    for round_index in range(args.rounds):
        order = list(engines[round_index % len(engines) :]) + list(
            engines[: round_index % len(engines)]
        )
        for batch in args.batches:
            start, busy = time.perf_counter(), busy_seconds()
            ours = sum(w.cpu_seconds() for w in workers.values())
            for engine in order:
                result = workers[engine].ask({"batch": batch, "seconds": args.seconds})
                timings[engine].setdefault(batch, []).append(result)
            elapsed = time.perf_counter() - start
            ours = sum(w.cpu_seconds() for w in workers.values()) - ours
            other_cores.append(max(0.0, (busy_seconds() - busy - ours) / elapsed))
            progress(tower, round_index, batch, order, timings, other_cores[-1])
    vectors = {}
    for engine, w in workers.items():
        path = args.run_dir / f"{tower}-{engine}.npy"
        w.ask({"outputs": str(path)})
        vectors[engine] = np.load(path)
    peaks = {e: w.close() for e, w in workers.items()}
    return {
        "timings": timings,
        "vectors": vectors,
        "peaks": peaks,
        "cold": cold,
        "other": other_cores,
    }


def cold_load(engine: str, tower: str, args: argparse.Namespace) -> dict[str, float]:
    """A fresh process (an empty graph cache for Handspring) loading and running a batch."""
    graph_cache = Path(tempfile.mkdtemp(dir=args.run_dir, prefix="cold-"))
    command = [
        sys.executable, __file__, "--worker", engine, "--towers", tower, "--cache",
        str(args.cache), "--threads", str(args.threads), "--cold-batch", "16",
    ]  # fmt: skip
    out = subprocess.run(
        command, capture_output=True, text=True, check=True, env=engine_env(engine, graph_cache)
    )
    shutil.rmtree(graph_cache, ignore_errors=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def progress(
    tower: str, round_index: int, batch: int, order: Sequence[str], timings: dict, other: float
) -> None:
    cells = [f"{e} {timings[e][batch][-1]['cpu_ms'] / batch:.1f}" for e in order]
    print(
        f"[{tower} round {round_index + 1} batch {batch}] CPU ms/item: {', '.join(cells)}; "
        f"other processes {other:.2f} cores",
        file=sys.stderr,
        flush=True,
    )


# ------------------------------------------------------------------------ tables


def cosines(vectors: dict[str, np.ndarray], reference: str) -> dict[str, float]:
    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    ref = unit(vectors[reference])
    return {e: float((unit(v) * ref).sum(axis=1).min()) for e, v in vectors.items()}


def tables(tower: str, result: dict[str, Any], batches: Sequence[int], wall: bool) -> list[str]:
    timings, peaks, cold = result["timings"], result["peaks"], result["cold"]
    engines = list(timings)
    reference = "pytorch" if "pytorch" in engines else engines[0]
    cos = cosines(result["vectors"], "pytorch" if "pytorch" in engines else engines[0])
    ours = "hs-int8" if "hs-int8" in engines else None

    def median(engine: str, batch: int, key: str) -> float:
        return float(np.median([t[key] for t in timings[engine][batch]]))

    key = "wall_ms" if wall else "cpu_ms"
    unit = "items/s (wall)" if wall else "CPU ms/item"
    header = f"| engine | {tower} batch | {unit} | vs {reference} |"
    header += f" vs {ours} |" if ours else ""
    header += " cosine to fp32 (min) | peak RSS MiB | cold first load MiB |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for batch in batches:
        for engine in engines:
            ms = median(engine, batch, key)
            value = 1000 * batch / ms if wall else ms / batch
            speed = median(reference, batch, key) / ms
            row = f"| {engine} | {batch} | {value:.1f} | {speed:.2f}x |"
            if ours:
                row += f" {median(ours, batch, key) / ms:.2f}x |"
            row += (
                f" {cos[engine]:.5f} | {peaks[engine]:.0f} | {cold[engine]['peak_rss_mib']:.0f} |"
            )
            lines.append(row)
    return lines


def versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--towers", default=",".join(TOWERS))
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="per engine, batch and round")
    parser.add_argument("--threads", type=int, default=0, help="0: CPUs if quiet, else 1")
    parser.add_argument(
        "--max-other", type=float, default=0.15, help="cores other processes may use"
    )
    parser.add_argument("--force", action="store_true", help="print the wall-clock table when busy")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--cold-batch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.cache = args.cache.expanduser()
    sys.path.insert(0, str(ROOT))  # tests.support: the checkpoint writer and the photos
    if args.worker:
        worker(args.worker, args.towers, args.cache, args.threads, args.cold_batch)
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.prepare:
        prepare(args.cache)
        return
    # In a process of its own: torch, nncf and an export are no part of this one.
    env = engine_env("prepare", args.cache / "prepare-graphs")
    command = [sys.executable, __file__, "--prepare", "--cache", str(args.cache)]
    subprocess.run(command, check=True, env=env, cwd=ROOT)
    engines = [e for e in args.engines.split(",") if e]
    args.batches = (1, 4) if args.quick else tuple(int(b) for b in args.batches.split(","))
    args.rounds = 1 if args.quick else args.rounds
    load = os.getloadavg()[0]
    if args.threads == 0:
        args.threads = CPUS if load < 0.5 else 1
    args.run_dir = Path(tempfile.mkdtemp(dir=args.cache, prefix="run-"))
    try:
        results = {t: run_tower(t, engines, args) for t in args.towers.split(",")}
    finally:
        shutil.rmtree(args.run_dir, ignore_errors=True)
    report(results, args, load)


def report(results: dict[str, Any], args: argparse.Namespace, load: float) -> None:
    other = max(max(r["other"]) for r in results.values())
    print(f"\nCLIP ViT-B/32 (random weights, full size), {args.threads} thread(s) per engine, "
          f"{args.rounds} rounds; {versions()}")  # fmt: skip
    print(f"load average at start {load:.2f}; other processes used up to {other:.2f} cores")
    for tower, result in results.items():
        print()
        print("\n".join(tables(tower, result, args.batches, wall=False)))
    quiet = other <= args.max_other
    if not quiet and not args.force:
        print(
            f"\nNo wall-clock table: other processes used up to {other:.2f} cores "
            f"(--max-other {args.max_other}); CPU time per item above is the measure here. "
            "Run on a quiet machine, or --force."
        )
        return
    print()
    if not quiet:
        print(f"WARNING: the machine was busy (other processes up to {other:.2f} cores): "
              "the wall-clock figures below are not a result")  # fmt: skip
    for tower, result in results.items():
        print("\n".join(tables(tower, result, args.batches, wall=True)))
        print()


if __name__ == "__main__":
    main()
