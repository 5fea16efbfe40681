"""Our graphs on OpenVINO's CPU plugin, behind the surface of an ONNX Runtime session.

A tower calls `session.run(None, feeds)` and reads `get_inputs()` / `get_outputs()`; this
adapter gives an OpenVINO CompiledModel that surface, so towers, the embedder and the
server run on either backend unchanged. It compiles the graphs of our graph cache:
OpenVINO's ONNX frontend reads the fp32 graphs as they are (com.microsoft QuickGelu, Gelu
and FastGelu included); int8 and bf16 run variants of them (`openvino_graphs`).

Precision is stated, never left to the plugin: its default on a CPU with bf16 units is to
run everything in bf16, which would make "fp32" a lie (cosine ~0.99995 instead of ~1e-7
differences). bf16 is in the bf16 variant's graph (its MatMuls), so every graph compiles
with an f32 hint.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import openvino as ov

# The `INFERENCE_PRECISION_HINT` of each of our precisions (ov.Type attribute names). int8
# graphs carry int8 weights, dequantized in the graph: OpenVINO keeps them compressed and
# quantizes activations at run time (DYNAMIC_QUANT_GROUP). bf16 graphs say where bf16 runs.
INFERENCE_PRECISION = {"fp32": "f32", "int8": "f32", "bf16": "f32"}

# Activations of int8 layers are quantized per group of this many input channels at run
# time. CLIP ViT-B/32's image tower, CPU ms per image at batch 8, one thread, alternating
# rounds on a busy machine: group 32 (OpenVINO's default) 47.8, 64 39.1, 128 34.4,
# 256 32.2, 768 42.1 (ONNX Runtime int8 in the same rounds: 30.4); min cosine to fp32
# 0.99945, 0.99944, 0.99938, 0.99929, 0.99920.
DYNAMIC_QUANT_GROUP = 256

_ONNX_TYPES = {
    "f32": "tensor(float)",
    "f16": "tensor(float16)",
    "bf16": "tensor(bfloat16)",
    "i64": "tensor(int64)",
    "i32": "tensor(int32)",
    "u8": "tensor(uint8)",
    "i8": "tensor(int8)",
    "boolean": "tensor(bool)",
}


def openvino_version() -> str | None:
    """The installed OpenVINO's version, or None when it is not installed."""
    try:
        from importlib.metadata import version

        return version("openvino")
    except Exception:  # not installed (PackageNotFoundError), or a broken install
        return None


@cache
def _core() -> ov.Core:
    import openvino as ov

    return ov.Core()


def cpu_capabilities() -> tuple[str, ...]:
    """What OpenVINO's CPU plugin says this CPU can run fast ("BF16", "INT8", ...)."""
    return tuple(_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


@dataclass(frozen=True)
class NodeInfo:
    """An input or output as ONNX Runtime's NodeArg describes it: dynamic dims are None."""

    name: str
    shape: list[int | None]
    type: str


def _node_infos(ports: Sequence[Any]) -> list[NodeInfo]:
    """Ports of a model as read, before compiling: compiling fuses a graph output with the
    node before it, whose tensor names then come first."""
    infos = []
    for port in ports:
        shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
        element = port.get_element_type().get_type_name()
        onnx_type = _ONNX_TYPES.get(element, f"tensor({element})")
        infos.append(NodeInfo(port.get_any_name(), shape, onnx_type))
    return infos


class OpenVinoSession:
    """`run`, `get_inputs` and `get_outputs` as an `ort.InferenceSession` has them.

    An OpenVINO infer request serves one call at a time; ONNX Runtime sessions take
    concurrent calls, and the server makes them, so each call borrows a request from a
    small pool (one per concurrent caller, made on demand)."""

    def __init__(
        self, model: ov.Model, compiled: ov.CompiledModel, precision: str, graph_path: Path
    ) -> None:
        self.compiled = compiled
        self.precision = precision
        self.graph_path = graph_path
        # In the compiled model's order, under the ONNX graph's names.
        self._inputs = _node_infos(model.inputs)
        self._outputs = _node_infos(model.outputs)
        self._input_index = {info.name: i for i, info in enumerate(self._inputs)}
        self._output_index = {info.name: i for i, info in enumerate(self._outputs)}
        self._idle: list[ov.InferRequest] = []
        self._lock = threading.Lock()

    def get_inputs(self) -> list[NodeInfo]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeInfo]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return [f"OpenVINO CPU ({self.precision})"]

    def run(
        self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]
    ) -> list[np.ndarray]:
        wanted = list(output_names) if output_names else list(self._output_index)
        checks = ((wanted, self._output_index, "output"), (feeds, self._input_index, "input"))
        for names, known, kind in checks:
            if unknown := [n for n in names if n not in known]:
                raise ValueError(
                    f"{self.graph_path}: no {kind} named {unknown[0]!r} (it has {', '.join(known)})"
                )
        inputs = {self._input_index[k]: np.ascontiguousarray(v) for k, v in feeds.items()}
        request = self._borrow()
        try:
            # share_outputs=False: the results are copies, not views of the request's
            # buffers, which its next call would overwrite.
            results = request.infer(inputs, share_inputs=True, share_outputs=False)
        finally:
            self._give_back(request)
        return [np.asarray(results[self._output_index[n]]) for n in wanted]

    def _borrow(self) -> ov.InferRequest:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self.compiled.create_infer_request()

    def _give_back(self, request: ov.InferRequest) -> None:
        with self._lock:
            self._idle.append(request)


def openvino_session(path: Path, precision: str, threads: int | None) -> OpenVinoSession:
    """The graph at `path` compiled for OpenVINO's CPU plugin: an fp32 graph of the graph
    cache, or the variant `openvino_graphs.openvino_graph` made for `precision`."""
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    from handspring.runtime.session import default_threads

    if precision not in INFERENCE_PRECISION:
        raise ValueError(f"precision must be one of {', '.join(INFERENCE_PRECISION)}")
    config: dict[str, Any] = {
        hints.inference_precision: getattr(ov.Type, INFERENCE_PRECISION[precision]),
        hints.performance_mode: hints.PerformanceMode.LATENCY,
        props.num_streams: 1,
        props.inference_num_threads: threads or default_threads(),
        # Threads stay unpinned, as ONNX Runtime's are: pinned threads of several
        # processes (server workers, the other tower) would queue on the same cores.
        hints.enable_cpu_pinning: False,
    }
    if precision == "int8":
        config[hints.dynamic_quantization_group_size] = DYNAMIC_QUANT_GROUP
    core = _core()
    model = core.read_model(str(path))
    compiled = core.compile_model(model, "CPU", config)
    return OpenVinoSession(model, compiled, precision, path)
