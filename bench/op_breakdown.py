"""Where the time goes, op by op: Handspring int8 (ONNX Runtime) against OpenVINO int8
(NNCF), and the weight streaming of Handspring bf16 against fp32 for one text.

The peers bench (`peers_bench.py`) says how far apart the engines are; this one says why,
from each runtime's own profiler, on the same model (CLIP ViT-B/32, random weights, full
size, the peers bench's cache and inputs) and one thread:

1. int8, each tower: CPU ms per item by kind of work. "Linear layers" is each engine's
   products on weight matrices together with whatever it fuses into them (OpenVINO runs
   bias, GELU and requantization as post-ops of its int8 products; ONNX Runtime's CPU
   kernels run them as ops of their own, each a pass over the activations).
2. Calibrated scales at the cosine bar: NNCF's int8 image tower with fewer and fewer of
   its Linear layers quantized (the rest run in OpenVINO's default bf16), against
   Handspring int8, each with its speed and its cosine to fp32.
3. bf16 and fp32, one text: how fast each reads its weight matrices (GB/s), which bounds a
   single short text, where every weight is read once for a handful of token rows.

    python bench/op_breakdown.py                  # ~4 min once the peers cache exists
    python bench/op_breakdown.py --batch 8 --runs 20

Needs onnxruntime, openvino, and what `peers_bench.py` needs to make its cache (torch,
transformers, nncf) when that cache does not exist yet.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers_bench import (
    DEFAULT_CACHE,
    QUERIES,
    SEED,
    cosines,
    handspring_model,
    prepare,
    text_ids,
)

from handspring.towers.text import TextTokens

# Kind of work -> (ONNX Runtime op types, OpenVINO executed node types).
KINDS: dict[str, tuple[set[str], set[str]]] = {
    "Linear layers (with what the engine fuses into them)": (
        {"MatMulIntegerToFloat", "MatMulInteger", "DynamicQuantizeMatMul", "Gemm"},
        {
            "FullyConnected",
            "FullyConnectedCompressed",
            "FullyConnectedQuantizedLegacy",
            "Convolution",
        },
    ),
    "attention (scores, softmax, weighted sums)": (
        {"MatMul", "FusedMatMul", "Softmax", "MultiHeadAttention"},
        {"Subgraph", "MatMul", "Softmax", "ScaledDotProductAttention"},
    ),
    "activation quantization": (
        {"QuantizeLinear", "DynamicQuantizeLinear", "ReduceMax", "ReduceMin", "Max", "Neg"},
        {"FakeQuantize"},
    ),
    "bias and residual adds, scales": ({"Add", "Sum", "Mul"}, {"Add", "MulAdd", "Multiply"}),
    "GELU": ({"QuickGelu", "Gelu", "BiasGelu", "FastGelu", "Sigmoid"}, {"Gelu", "Swish"}),
    "LayerNorm": ({"LayerNormalization", "SkipLayerNormalization"}, {"MVN"}),
    "layout (transposes, reshapes, copies)": (
        {"Transpose", "Reshape", "Concat", "Slice", "Expand", "Unsqueeze", "Shape", "Gather"},
        {"Transpose", "Reshape", "Reorder", "Concat", "Gather", "StridedSlice", "Broadcast"},
    ),
}
OTHER = "other"
# NNCF runs, by the Linear layers they leave out of int8 (name patterns of the exported
# graph's nodes); what is left out runs in OpenVINO's default precision (bf16 here).
NNCF_SCOPES: dict[str, list[str]] = {
    "none": [],
    "fc2, out_proj": [".*fc2.*", ".*out_proj.*"],
    "all but q, k, v": [".*fc1.*", ".*fc2.*", ".*out_proj.*"],
}
PADDED = 16  # tokens: a shape shared by most search queries

Profile = dict[str, float]  # op type -> CPU ms per item
ONNX_RUNTIME, OPENVINO = 0, 1  # index into a KINDS entry


@dataclass(frozen=True)
class Engine:
    name: str
    runtime: int  # ONNX_RUNTIME or OPENVINO: whose op names `profile` holds
    profile: Profile
    wall: float  # CPU ms per item, not profiled


# ------------------------------------------------------------------------ engines


def handspring_towers(folder: Path, precision: str, backend: str, towers: list[str]) -> Any:
    """The peers bench's Handspring model on one thread, its graphs built into
    HANDSPRING_CACHE."""
    return handspring_model(folder, towers, precision, backend, threads=1).towers


def openvino_config(**extra: Any) -> dict[Any, Any]:
    """One thread, one stream, latency hint, unpinned (as `openvino_session` compiles)."""
    import openvino.properties as props
    import openvino.properties.hint as hints

    config = {
        hints.performance_mode: hints.PerformanceMode.LATENCY,
        props.num_streams: 1,
        props.inference_num_threads: 1,
        hints.enable_cpu_pinning: False,
    }
    return {**config, **extra}


def ort_profile(path: Path, feeds: Mapping[str, np.ndarray], items: int, runs: int) -> Profile:
    """Op type -> CPU ms per item, from ONNX Runtime's profiler, on the session options
    `runtime.session.make_session` gives (one thread, no spinning) plus profiling."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(2):
        session.run(None, dict(feeds))
    # The profile covers the warm-up runs too: it is divided by every run made.
    for _ in range(runs):
        session.run(None, dict(feeds))
    trace = Path(session.end_profiling())
    totals: collections.Counter[str] = collections.Counter()
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"]
    trace.unlink()
    trace.parent.rmdir()
    return {op: us / 1000 / (runs + 2) / items for op, us in totals.items()}


def openvino_profile(
    compiled: Any, feeds: Mapping[int, np.ndarray], items: int, runs: int
) -> Profile:
    """Executed node type -> CPU ms per item, from OpenVINO's profiler (the last request's
    per-node times, summed over `runs` calls); `compiled` was compiled with profiling on."""
    request = compiled.create_infer_request()
    for _ in range(2):
        request.infer(dict(feeds))
    totals: collections.Counter[str] = collections.Counter()
    for _ in range(runs):
        request.infer(dict(feeds))
        for node in request.profiling_info:
            totals[node.node_type] += node.real_time.total_seconds() * 1000
    return {op: ms / runs / items for op, ms in totals.items()}


def cpu_ms_per_item(call: Callable[[], Any], items: int, runs: int) -> float:
    call()
    times = []
    for _ in range(runs):
        start = time.process_time()
        call()
        times.append(time.process_time() - start)
    return 1000 * float(np.median(times)) / items


def nncf_model(cache: Path, tower: str) -> Any:
    import openvino as ov
    import openvino.properties as props

    config = openvino_config(**{props.enable_profiling: True})
    return ov.Core().compile_model(str(cache / f"nncf-{tower}.xml"), "CPU", config)


# ------------------------------------------------------------------------- tables


def by_kind(profile: Profile, runtime: int) -> dict[str, float]:
    kinds: collections.Counter[str] = collections.Counter()
    for op, ms in profile.items():
        kind = next((k for k, ops in KINDS.items() if op in ops[runtime]), OTHER)
        kinds[kind] += ms
    return dict(kinds)


def int8_table(tower: str, batch: int, engines: list[Engine]) -> str:
    """Engines' CPU ms per item by kind of work; the last column compares the first
    engine (ours) with the last (NNCF's)."""
    kinds = [by_kind(e.profile, e.runtime) for e in engines]
    item = "image" if tower == "image" else "text"
    rows = [
        f"**{tower} tower, batch {batch}**, CPU ms per {item}",
        "",
        "| kind of work | " + " | ".join(e.name for e in engines) + " | first / last |",
        "|---|" + "---:|" * (len(engines) + 1),
    ]

    def row(label: str, values: list[float]) -> str:
        ratio = f"{values[0] / values[-1]:.2f}x" if values[-1] >= 0.005 else "-"
        return f"| {label} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {ratio} |"

    for kind in [*KINDS, OTHER]:
        values = [k.get(kind, 0.0) for k in kinds]
        if max(values) >= 0.005:
            rows.append(row(kind, values))
    linear = next(iter(KINDS))
    totals = [sum(k.values()) for k in kinds]
    rows.append(
        row(
            "all but the Linear layers",
            [t - k.get(linear, 0.0) for t, k in zip(totals, kinds, strict=True)],
        )
    )
    rows.append(row("total, profiled", totals))
    rows.append(row("total, not profiled", [e.wall for e in engines]))
    return "\n".join(rows)


def legend() -> str:
    """Which op types each kind of work counts, as each runtime's profiler names them."""
    rows = [
        "| kind of work | ONNX Runtime op types | OpenVINO executed node types |",
        "|---|---|---|",
    ]
    for kind, (ort_ops, ov_ops) in KINDS.items():
        rows.append(f"| {kind} | {', '.join(sorted(ort_ops))} | {', '.join(sorted(ov_ops))} |")
    return "\n".join(rows)


def weight_bytes(path: Path, op_types: set[str]) -> int:
    """Bytes of the 2-D initializers that `op_types` nodes read (the weight matrices)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    sizes = {
        t.name: int(np.prod(t.dims)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        for t in model.graph.initializer
        if len(t.dims) == 2
    }
    return sum(sizes.get(n.input[1], 0) for n in model.graph.node if n.op_type in op_types)


# --------------------------------------------------------------------------- main


def int8_section(cache: Path, folder: Path, tower: str, batch: int, runs: int) -> str:
    """Handspring int8 on ONNX Runtime and on its OpenVINO backend, and NNCF's int8 IR."""
    if tower == "image":
        pixels = np.load(cache / "pixels.npy")[:batch]
        inputs: list[Any] = list(pixels)
        ort_feeds = {"pixel_values": pixels}
        nncf_feeds = {0: pixels}
    else:
        ids = text_ids(folder, QUERIES[:batch])
        first_eot = ids["input_ids"] == ids["input_ids"].max(axis=1, keepdims=True)
        eot = np.argmax(first_eot, axis=1).astype(np.int64)  # [N]
        inputs = [TextTokens(row[: m.sum()], False, eot=int(e)) for row, m, e in zip(ids["input_ids"], ids["attention_mask"], eot, strict=True)]  # fmt: skip
        ort_feeds = {"input_ids": ids["input_ids"], "eot_index": eot}
        nncf_feeds = {0: ids["input_ids"], 1: ids["attention_mask"]}
    engines = []
    for name, backend in (("Handspring int8", "onnxruntime"), ("Handspring int8, OpenVINO backend", "openvino")):  # fmt: skip
        model = handspring_towers(folder, "int8", backend, [tower])[tower]
        wall = cpu_ms_per_item(lambda: model.run(inputs), batch, runs)  # noqa: B023
        # The tower runs a batch in runs of `run_rows` items; so does the profile.
        per_run = min(batch, model.run_rows)
        feeds = {k: v[:per_run] for k, v in ort_feeds.items()}
        if backend == "onnxruntime":
            profile = ort_profile(model.compiled.graph_path, feeds, per_run, runs)
            engines.append(Engine(name, ONNX_RUNTIME, profile, wall))
        else:
            ov_feeds = dict(enumerate(feeds.values()))
            profile = openvino_profile(model.session.compiled, ov_feeds, per_run, runs)
            engines.append(Engine(name, OPENVINO, profile, wall))
    compiled = nncf_model(cache, tower)
    request = compiled.create_infer_request()
    wall = cpu_ms_per_item(lambda: request.infer(dict(nncf_feeds)), batch, runs)
    profile = openvino_profile(compiled, nncf_feeds, batch, runs)
    engines.append(Engine("OpenVINO NNCF int8", OPENVINO, profile, wall))
    return int8_table(tower, batch, engines)


def calibration_section(cache: Path, folder: Path, runs: int) -> str:
    """NNCF's calibrated int8 with Linear layers left out of it, and Handspring int8: CPU
    ms per image at a batch of 16 and min cosine to fp32 over the peers bench's images.
    Every engine is compiled first; then they are timed in rounds, in turn."""
    import logging

    import nncf
    import openvino as ov
    import openvino.properties.hint as hints

    nncf.set_log_level(logging.ERROR)
    pixels = np.load(cache / "pixels.npy")
    calibration = np.load(cache / "calibration-pixels.npy")
    exported = str(cache / "fastembed-image" / "model.onnx")
    core = ov.Core()

    def openvino_run(model: Any, **hint: Any) -> Callable[[np.ndarray], np.ndarray]:
        request = core.compile_model(model, "CPU", openvino_config(**hint)).create_infer_request()
        return lambda batch: np.array(request.infer({0: batch})[0])

    engines = {"fp32": openvino_run(exported, **{hints.inference_precision: ov.Type.f32})}
    items = [{"pixel_values": calibration[i : i + 1]} for i in range(len(calibration))]
    for left_out, patterns in NNCF_SCOPES.items():
        quantized = nncf.quantize(
            core.read_model(exported),
            nncf.Dataset(items),
            preset=nncf.QuantizationPreset.MIXED,
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(items),
            ignored_scope=nncf.IgnoredScope(patterns=patterns),
        )
        engines[left_out] = openvino_run(quantized)
    engines["bf16"] = openvino_run(exported)  # the default hint: bf16 on this CPU
    ours = handspring_towers(folder, "int8", "onnxruntime", ["image"])["image"]
    engines["ours"] = lambda batch: ours.run(list(batch))
    vectors = {
        name: np.concatenate([run(pixels[i : i + 16]) for i in range(0, len(pixels), 16)])
        for name, run in engines.items()
    }
    cosine = cosines(vectors, "fp32")
    times: dict[str, list[float]] = collections.defaultdict(list)
    for round_ in range(3):
        names = list(engines)
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            run = engines[name]
            times[name].append(cpu_ms_per_item(lambda: run(pixels[:16]), 16, runs))  # noqa: B023
    ms = {name: float(np.median(t)) for name, t in times.items()}
    rows = [
        f"**calibrated scales at the cosine bar**: image tower, CPU ms per image at a batch of 16 (median of 3 alternating rounds), min cosine to fp32 over {len(pixels)} images",
        "",
        "| engine | Linear layers left out of int8 | ms | min cosine to fp32 |",
        "|---|---|---:|---:|",
        *(f"| OpenVINO NNCF int8 | {k} | {ms[k]:.2f} | {cosine[k]:.5f} |" for k in NNCF_SCOPES),
        f"| Handspring int8 | none | {ms['ours']:.2f} | {cosine['ours']:.5f} |",
        f"| OpenVINO, default hint (bf16 here) | all | {ms['bf16']:.2f} | {cosine['bf16']:.5f} |",
        f"| OpenVINO fp32 | all | {ms['fp32']:.2f} | 1 |",
    ]
    return "\n".join(rows)


def streaming_section(folder: Path, runs: int) -> str:
    """fp32 (ONNX Runtime) and bf16 (OpenVINO) text towers on one short query, and the
    bf16 graph compiled for that query's shape alone."""
    query = QUERIES[0]
    rows = [
        f"**one text** ({query!r}), CPU ms",
        "",
        "| precision | runtime | whole text | products on weights | weight bytes | GB/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    results, towers = {}, {}
    for precision, backend in (("fp32", "onnxruntime"), ("bf16", "openvino")):
        towers[precision] = text = handspring_towers(folder, precision, backend, ["text"])["text"]
        tokens = text.prepare_batch([query], ["#0"], {})[0]
        whole, products, nbytes = _one_text(text, tokens, runs * 5)
        rate = nbytes / products / 1e6
        results[precision] = (whole, rate)
        rows.append(
            f"| {precision} | {backend} | {whole:.2f} | {products:.2f} | {nbytes / 1e6:.1f} MB | {rate:.1f} |"
        )
    padded = TextTokens(np.pad(tokens.ids, (0, PADDED - tokens.tokens)), False, tokens.eot)
    bf16_graph = towers["bf16"].compiled.graph_path
    static = [_static_shape(bf16_graph, t, runs * 5) for t in (tokens, padded)]
    (fp32_ms, fp32_rate), (bf16_ms, bf16_rate) = results["fp32"], results["bf16"]
    rows += [
        "",
        f"bf16 against fp32, whole text: {fp32_ms / bf16_ms:.2f}x. Half the weight bytes give "
        f"2 x {bf16_rate:.1f} / {fp32_rate:.1f} = {2 * bf16_rate / fp32_rate:.2f}x at most "
        "when all of the time is weight reading.",
        "",
        "The bf16 graph compiled for one input shape (OpenVINO picks kernels for it), "
        "CPU ms per call on the request:",
        "",
        "| ids shape | ms | vs fp32's whole text | resident MiB the compiled model adds |",
        "|---|---:|---:|---:|",
        *(
            f"| [1, {t}]{label} | {ms:.2f} | {fp32_ms / ms:.2f}x | {mib:.0f} |"
            for t, label, (ms, mib) in zip(
                (tokens.tokens, PADDED), (" (the text's own)", " (padded)"), static, strict=True
            )
        ),
    ]
    return "\n".join(rows)


def _one_text(text: Any, tokens: TextTokens, runs: int) -> tuple[float, float, int]:
    """(CPU ms of the tower's run, ms in products on weight matrices, their weights' bytes)."""
    whole = cpu_ms_per_item(lambda: text.run([tokens]), 1, runs)
    path = text.compiled.graph_path
    if text.compiled.backend == "onnxruntime":
        profile = ort_profile(path, _text_feeds(tokens), 1, runs)
        products = sum(ms for op, ms in profile.items() if op in {"MatMul", "Gemm", "FusedMatMul"})
        return whole, products, weight_bytes(path, {"MatMul", "Gemm"})
    feeds = dict(enumerate(_text_feeds(tokens).values()))
    profile = openvino_profile(text.session.compiled, feeds, 1, runs)
    return whole, profile.get("FullyConnected", 0.0), weight_bytes(path, {"MatMul"})


def _static_shape(path: Path, tokens: TextTokens, runs: int) -> tuple[float, float]:
    """(CPU ms per call, MiB of resident memory added) of the OpenVINO graph at `path`
    compiled as the tower compiles it, but for one input shape."""
    import openvino as ov
    import openvino.properties.hint as hints

    def resident_mib() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20  # fmt: skip

    feeds = dict(enumerate(_text_feeds(tokens).values()))
    before = resident_mib()
    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({port.get_any_name(): list(feeds[i].shape) for i, port in enumerate(model.inputs)})  # fmt: skip
    # f32 hint: as `openvino_session` compiles bf16 variants (their casts say where bf16 runs)
    config = openvino_config(**{hints.inference_precision: ov.Type.f32})
    request = core.compile_model(model, "CPU", config).create_infer_request()
    ms = cpu_ms_per_item(lambda: request.infer(feeds), 1, runs)
    return ms, resident_mib() - before


def _text_feeds(tokens: TextTokens) -> dict[str, np.ndarray]:
    """A CLIP text graph's inputs for one text (`towers.text.TextTokens`), in graph order."""
    return {"input_ids": tokens.ids[None], "eot_index": np.array([tokens.eot], np.int64)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--towers", default="image,text")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    prepare(args.cache)
    folder = args.cache / f"clip-seed{SEED}"
    run_cache = Path(tempfile.mkdtemp(dir=args.cache, prefix="breakdown-"))
    os.environ["HANDSPRING_CACHE"] = str(run_cache)
    from handspring.runtime import openvino_session

    # Profiling is a compile-time option: on for every model Handspring's core compiles.
    openvino_session._core().set_property("CPU", {"PERF_COUNT": True})
    try:
        sections = [
            int8_section(args.cache, folder, tower, args.batch, args.runs)
            for tower in args.towers.split(",")
        ]
        sections.append(legend())
        if "image" in args.towers.split(","):
            sections.append(calibration_section(args.cache, folder, args.runs))
        sections.append(streaming_section(folder, args.runs))
    finally:
        import shutil

        shutil.rmtree(run_cache, ignore_errors=True)
    import onnxruntime
    import openvino

    print(
        f"CLIP ViT-B/32 (random weights, seed {SEED}, full size), one thread; "
        f"onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__}\n"
    )
    print("\n\n".join(sections))


if __name__ == "__main__":
    main()
