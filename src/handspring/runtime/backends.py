"""Which runtime runs a tower's graph: ONNX Runtime, or OpenVINO where it was measured faster.

ONNX Runtime is the engine (DESIGN.md, decision 1). OpenVINO is an optional extra
(`pip install handspring[openvino]`) that runs the same cached graphs. `backend="auto"`
picks OpenVINO only where both hold:

- it is installed, and this CPU is of the class it was measured on (`cpu_class()`);
- bench/peers_bench.py measured it faster, by `MIN_GAIN` or more in CPU time per item at
  every batch size, for that family, tower and precision (`FASTER_ON_OPENVINO`).

bf16 is the exception: only OpenVINO has bf16 kernels for x86 (ONNX Runtime's CPU
provider has a bf16 GEMM path on ARM64 only), so a bf16 tower always runs on OpenVINO.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from handspring.runtime.cpu import cpu_flags

BACKENDS = ("auto", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "int8", "bf16")
INSTALL_HINT = "pip install 'handspring[openvino]'"

# OpenVINO must save at least this share of CPU time per item to be picked.
MIN_GAIN = 0.10


@dataclass(frozen=True)
class Runtime:
    """How a tower's graph runs: `backend` as the caller asked ("auto" included), at
    `precision` ("fp32", "int8" or "bf16")."""

    backend: str = "auto"
    precision: str = "fp32"


@dataclass(frozen=True)
class Measured:
    """OpenVINO against ONNX Runtime for one family, tower and precision: ms of CPU per
    item at each batch size, on a CPU of `cpu`'s class (bench/peers_bench.py)."""

    family: str
    tower: str
    precision: str
    cpu: str
    onnxruntime_ms: tuple[float, ...]
    openvino_ms: tuple[float, ...]

    @property
    def openvino_faster(self) -> bool:
        return all(
            ov <= (1 - MIN_GAIN) * ort
            for ort, ov in zip(self.onnxruntime_ms, self.openvino_ms, strict=True)
        )


# bench/peers_bench.py, CLIP ViT-B/32 at full size (random weights), one thread per engine,
# 3 alternating rounds, median CPU ms per item at batches 1, 16 and 32, on a 2-core Xeon
# with AMX (a busy machine: other processes used 1.0-1.6 cores). OpenVINO is nowhere
# `MIN_GAIN` faster at every batch size, so `auto` runs all of these on ONNX Runtime. The
# same graphs serve every family: a family absent here runs on ONNX Runtime.
MEASUREMENTS: tuple[Measured, ...] = (
    Measured("clip", "image", "fp32", "amx", (109.4, 78.2, 71.0), (110.5, 68.8, 66.9)),
    Measured("clip", "image", "int8", "amx", (30.5, 19.8, 20.9), (34.9, 26.8, 25.5)),
    Measured("clip", "text", "fp32", "amx", (17.1, 8.3, 10.8), (18.8, 8.8, 9.9)),
    Measured("clip", "text", "int8", "amx", (6.8, 2.7, 4.2), (6.7, 3.7, 4.1)),
)

FASTER_ON_OPENVINO = {
    (m.family, m.tower, m.precision, m.cpu): m for m in MEASUREMENTS if m.openvino_faster
}


def cpu_class() -> str:
    """The CPU trait the measurements depend on: bf16 matrix units (AMX), bf16 vector
    instructions (AVX512-BF16), int8 dot products (VNNI), or none of them."""
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512-bf16"
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "vnni"
    return "other"


def openvino_installed() -> bool:
    from handspring.runtime.openvino_session import openvino_version

    return openvino_version() is not None


def bf16_support() -> str | None:
    """Why bf16 cannot run here, or None when it can."""
    if not openvino_installed():
        return f"bf16 runs on OpenVINO, which is not installed ({INSTALL_HINT})"
    from handspring.runtime.openvino_session import cpu_capabilities

    if "BF16" not in cpu_capabilities():
        return "this CPU has neither AVX512-BF16 nor AMX, so bf16 would be emulated (slower)"
    return None


def check_runtime(runtime: Runtime) -> None:
    """Refuse, before any work, a backend or precision that cannot run here (ValueError)."""
    if runtime.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {runtime.backend!r}")
    if runtime.precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(PRECISIONS)}, not {runtime.precision!r}"
        )
    if runtime.precision == "bf16":
        if runtime.backend == "onnxruntime":
            raise ValueError(
                "precision='bf16' runs on OpenVINO only: ONNX Runtime has no bf16 kernels "
                "on x86 CPUs; use backend='auto' or 'openvino'"
            )
        if reason := bf16_support():
            raise ValueError(f"precision='bf16' is not available: {reason}")
    if runtime.backend == "openvino" and not openvino_installed():
        raise ValueError(f"backend='openvino': OpenVINO is not installed ({INSTALL_HINT})")


def chosen_backend(runtime: Runtime, graph_options: Mapping[str, Any]) -> str:
    """The backend ("onnxruntime" or "openvino") for a tower whose graph was built with
    `graph_options` (its "family" and "tower")."""
    if runtime.backend != "auto":
        return runtime.backend
    if runtime.precision == "bf16":
        return "openvino"
    if not openvino_installed():
        return "onnxruntime"
    family = str(graph_options.get("family", ""))
    tower = str(graph_options.get("tower", "text"))
    measured = (family, tower, runtime.precision, cpu_class()) in FASTER_ON_OPENVINO
    return "openvino" if measured else "onnxruntime"


def describe_backends() -> str:
    """One line per precision: the backend `auto` runs it on, on this machine."""
    import onnxruntime

    from handspring.runtime.openvino_session import openvino_version

    ov_version = openvino_version()
    lines = []
    for precision in PRECISIONS:
        if precision == "bf16":
            reason = bf16_support()
            lines.append(
                f"bf16: OpenVINO {ov_version}"
                if reason is None
                else f"bf16: unavailable ({reason})"
            )
            continue
        faster = sorted(
            f"{family} {tower}"
            for family, tower, p, cpu in FASTER_ON_OPENVINO
            if p == precision and cpu == cpu_class()
        )
        line = f"{precision}: ONNX Runtime {onnxruntime.__version__}"
        if faster and ov_version:
            line += f" (OpenVINO {ov_version} for {', '.join(faster)}: measured faster)"
        lines.append(line)
    return "; ".join(lines)
