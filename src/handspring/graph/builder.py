"""A small ONNX graph builder: values are names, ops are method calls.

Models are written against this instead of onnx.helper so that a layer reads
like the PyTorch forward it mirrors, and so that initializers carry the
checkpoint key they came from (which makes a built graph easy to inspect).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
MS_DOMAIN = "com.microsoft"

Dim = int | str | None


class Graph:
    def __init__(self, name: str) -> None:
        self.name = name
        self._nodes: list[onnx.NodeProto] = []
        self._initializers: list[onnx.TensorProto] = []
        self._inputs: list[onnx.ValueInfoProto] = []
        self._outputs: list[onnx.ValueInfoProto] = []
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
        self._inputs.append(
            helper.make_tensor_value_info(self._claim(name), elem_type, list(shape))
        )
        return name

    def output(self, value: str, name: str, elem_type: int, shape: Sequence[Dim]) -> None:
        if value != name:
            self.op("Identity", value, name=name)
        self._outputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))

    def const(self, array: np.ndarray, name: str | None = None) -> str:
        """An initializer. `name` is the checkpoint key it came from, when there is one."""
        name = self._claim(name) if name else self._fresh("const")
        self._initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
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
        self._nodes.append(
            helper.make_node(
                op_type, list(inputs), out_names, name=out_names[0], domain=domain, **attrs
            )
        )
        return out_names

    def to_model(self, doc: str = "") -> onnx.ModelProto:
        graph = helper.make_graph(
            self._nodes, self.name, self._inputs, self._outputs, self._initializers
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


FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
