"""A small ONNX graph builder: values are names, ops are method calls.

Models are written against this instead of onnx.helper so that a layer reads
like the PyTorch forward it mirrors, and so that initializers carry the
checkpoint key they came from (which makes a built graph easy to inspect).

Nodes are kept as plain records and turned into protobuf only by `to_model`:
`onnx` takes 75 ms and 12 MiB to import, which a start from the graph cache
(that only needs model configs) should not pay.

While the graph cache builds a graph, large initializers go straight to the graph's
weights file (`writing_weights_to`) instead of staying in memory: a build then holds
about one tensor at a time rather than every weight two or three times over (ImageBind's
fp32 vision tower peaked at 9.9 GB before, four times its weights).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

OPSET = 17
MS_DOMAIN = "com.microsoft"
FLOAT = 1  # onnx.TensorProto.FLOAT
INT64 = 7  # onnx.TensorProto.INT64

Dim = int | str | None

# Initializers at least this large go to the weights file when one is being written.
EXTERNAL_MIN_BYTES = 1024
# ONNX Runtime maps the weights file; offsets aligned to pages let it map each tensor.
_ALIGN = 4096


@dataclass(frozen=True)
class _External:
    """An initializer already written to the weights file."""

    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int
    length: int


class _WeightsFile:
    def __init__(self, file: IO[bytes], location: str) -> None:
        self.file = file
        self.location = location  # the file's name, relative to the model file

    def write(self, array: np.ndarray) -> _External:
        offset = -self.file.tell() % _ALIGN + self.file.tell()
        self.file.seek(offset)
        data = memoryview(np.ascontiguousarray(array)).cast("B")
        self.file.write(data)
        return _External(array.dtype, tuple(array.shape), offset, len(data))


_weights_file: contextvars.ContextVar[_WeightsFile | None] = contextvars.ContextVar(
    "handspring_weights_file", default=None
)


@contextlib.contextmanager
def writing_weights_to(path: Path) -> Iterator[None]:
    """Graphs built inside this block write their large initializers to `path` as they
    are made; the model `to_model` returns then refers to that file by its name."""
    with path.open("wb") as file:
        token = _weights_file.set(_WeightsFile(file, path.name))
        try:
            yield
        finally:
            _weights_file.reset(token)


@dataclass(frozen=True)
class _Node:
    op_type: str
    inputs: list[str]
    outputs: list[str]
    domain: str
    attrs: dict[str, object]


@dataclass(frozen=True)
class _ValueInfo:
    name: str
    elem_type: int
    shape: list[Dim]


class Graph:
    def __init__(self, name: str) -> None:
        self.name = name
        self._nodes: list[_Node] = []
        self._initializers: list[tuple[str, np.ndarray | _External]] = []
        self._weights_file = _weights_file.get()
        self._inputs: list[_ValueInfo] = []
        self._outputs: list[_ValueInfo] = []
        self._names: set[str] = set()
        self._counter = 0
        # Memo for values computed once and shared by several consumers,
        # e.g. one int8 quantization of an input read by the Q, K and V MatMuls.
        self.shared: dict[tuple[str, ...], tuple[str, ...]] = {}

    def _fresh(self, hint: str) -> str:
        self._counter += 1
        name = f"{hint}_{self._counter}"
        self._names.add(name)
        return name

    def _claim(self, name: str) -> str:
        if name in self._names:
            raise ValueError(f"graph {self.name}: value name {name!r} used twice")
        self._names.add(name)
        return name

    def input(self, name: str, elem_type: int, shape: Sequence[Dim]) -> str:
        self._inputs.append(_ValueInfo(self._claim(name), elem_type, list(shape)))
        return name

    def output(self, value: str, name: str, elem_type: int, shape: Sequence[Dim]) -> None:
        if value != name:
            self.op("Identity", value, name=name)
        self._outputs.append(_ValueInfo(name, elem_type, list(shape)))

    def const(self, array: np.ndarray, name: str | None = None) -> str:
        """An initializer. `name` is the checkpoint key it came from, when there is one.
        Small unnamed constants (shapes, scalars) are shared: a graph with one
        initializer per use starts measurably slower."""
        array = np.ascontiguousarray(array)
        small = name is None and array.size <= 16
        if small:
            memo_key = ("const", str(array.dtype), str(array.shape), array.tobytes().hex())
            if memo_key in self.shared:
                return self.shared[memo_key][0]
        name = self._claim(name) if name else self._fresh("const")
        if self._weights_file is not None and array.nbytes >= EXTERNAL_MIN_BYTES:
            self._initializers.append((name, self._weights_file.write(array)))
        else:
            self._initializers.append((name, array))
        if small:
            self.shared[memo_key] = (name,)
        return name

    def ints(self, values: Sequence[int]) -> str:
        return self.const(np.asarray(values, dtype=np.int64))

    def op(
        self,
        op_type: str,
        *inputs: str,
        outputs: int = 1,
        domain: str = "",
        name: str | None = None,
        **attrs: object,
    ) -> str:
        """Add a node with one output and return that output's name."""
        return self.op_multi(op_type, *inputs, outputs=outputs, domain=domain, name=name, **attrs)[
            0
        ]

    def op_multi(
        self,
        op_type: str,
        *inputs: str,
        outputs: int,
        domain: str = "",
        name: str | None = None,
        **attrs: object,
    ) -> list[str]:
        if name is not None and outputs == 1:
            out_names = [self._claim(name)]
        else:
            out_names = [self._fresh(name or op_type) for _ in range(outputs)]
        self._nodes.append(_Node(op_type, list(inputs), out_names, domain, attrs))
        return out_names

    def to_model(self, doc: str = "") -> onnx.ModelProto:
        import onnx
        from onnx import helper, numpy_helper

        def value_info(v: _ValueInfo) -> onnx.ValueInfoProto:
            return helper.make_tensor_value_info(v.name, v.elem_type, v.shape)

        def initializer(name: str, value: np.ndarray | _External) -> onnx.TensorProto:
            if isinstance(value, np.ndarray):
                return numpy_helper.from_array(value, name)
            assert self._weights_file is not None
            tensor = onnx.TensorProto(
                name=name, dims=value.shape, data_type=helper.np_dtype_to_tensor_dtype(value.dtype)
            )
            tensor.data_location = onnx.TensorProto.EXTERNAL
            for key, entry in (
                ("location", self._weights_file.location),
                ("offset", str(value.offset)),
                ("length", str(value.length)),
            ):
                tensor.external_data.add(key=key, value=entry)
            return tensor

        graph = helper.make_graph(
            [
                helper.make_node(
                    n.op_type, n.inputs, n.outputs, name=n.outputs[0], domain=n.domain, **n.attrs
                )
                for n in self._nodes
            ],
            self.name,
            [value_info(v) for v in self._inputs],
            [value_info(v) for v in self._outputs],
            [initializer(name, value) for name, value in self._initializers],
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
            producer_name="handspring",
            doc_string=doc,
        )
        # ORT 1.2x reads IR 10; keep the version the installed onnx writes at most that.
        model.ir_version = min(model.ir_version, 10)
        return model
