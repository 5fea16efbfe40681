"""A tower's graph, the very one handspring runs, rewritten as a standalone ONNX file whose
inputs are what a user feeds and whose outputs are the final vectors.

What handspring does around a graph moves into it, so that a consumer in any language
only tokenizes or resizes and then runs the file:
- CLIP-style text towers read the first end-of-text token, whose place handspring passes
  as `eot_index`; the exported graph finds it itself (the first id equal to the
  end-of-text id, as handspring computes it from the padded ids).
- ImageBind's audio tower embeds each 2 s clip, and handspring averages a sound's clips:
  the exported graph takes a sound's clips as one row and averages them.
- handspring's L2 normalisation: `embedding` is unit length where handspring's default is,
  and `raw_embedding` is the vector before it.

Weights stay as they are (fp32, or the gated int8 of `precision="int8"`). A graph whose
weights fit in one protobuf message is written as one file; a larger one keeps them in a
`<file>.data` beside it (ONNX external data), as protobuf cannot hold 2 GiB.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

EMBEDDING = "embedding"
RAW_EMBEDDING = "raw_embedding"
EOT_INPUT = "eot_index"
# ORT 1.2x (onnxruntime-node included) reads IR version 10 at most.
MAX_IR_VERSION = 10
# Protobuf messages stop at 2 GiB; the graph's own nodes need some of that room.
SINGLE_FILE_LIMIT = 2**31 - 2**26
_PREFIX = "export."

DTYPE_NAMES = {
    TensorProto.FLOAT: "float32",
    TensorProto.FLOAT16: "float16",
    TensorProto.DOUBLE: "float64",
    TensorProto.INT64: "int64",
    TensorProto.INT32: "int32",
    TensorProto.INT8: "int8",
    TensorProto.UINT8: "uint8",
    TensorProto.BOOL: "bool",
}


@dataclass(frozen=True)
class GraphPlan:
    """How a tower's graph changes on export."""

    dim: int  # the width of the vectors
    eot_id: int | None = None  # find `eot_index` in the graph: the first id equal to this
    clips: int | None = None  # one input row holds this many clips, whose vectors are averaged
    normalize: bool = True  # `embedding` is unit length (else equal to `raw_embedding`)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy's name: "float32", "int64"...
    shape: list[int | str]  # a string is a dimension the caller chooses ("batch", "tokens")

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": self.shape}


@dataclass(frozen=True)
class WrittenGraph:
    file: str
    external_data: str | None  # the weights file beside it, when over the single-file limit
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    ir_version: int
    opsets: dict[str, int]


def write_tower_graph(
    source: Path, target: Path, plan: GraphPlan, single_file_limit: int = SINGLE_FILE_LIMIT
) -> WrittenGraph:
    """`source` (a built or pre-exported tower graph, with its weights file beside it) as a
    standalone graph at `target`."""
    model = onnx.load(str(source), load_external_data=False)
    graph = model.graph
    opset = _default_opset(model)
    if EMBEDDING not in [o.name for o in graph.output]:
        # Pre-exported graphs (Immich) name their one output otherwise.
        _rename_value(graph, graph.output[0].name, EMBEDDING)
    del graph.output[:]  # per-token outputs (sentence models) go; `embedding` comes back below
    tower_out = _PREFIX + "tower_output"
    _rename_value(graph, EMBEDDING, tower_out)
    before: list[onnx.NodeProto] = []
    after: list[onnx.NodeProto] = []
    if plan.eot_id is not None:
        before += _eot_from_ids(graph, plan.eot_id)
    if plan.clips is not None:
        before.append(_clips_as_rows(graph, plan.clips))
        after += _mean_of_clips(graph, tower_out, plan.clips, plan.dim, opset)
        tower_out = after[-1].output[0]
    after.append(helper.make_node("Identity", [tower_out], [RAW_EMBEDDING], name=RAW_EMBEDDING))
    if plan.normalize:
        after += _l2_normalized(graph, RAW_EMBEDDING, opset)
    else:
        after.append(helper.make_node("Identity", [RAW_EMBEDDING], [EMBEDDING], name=EMBEDDING))
    nodes = [*before, *graph.node, *after]
    del graph.node[:]
    graph.node.extend(nodes)
    for name in (EMBEDDING, RAW_EMBEDDING):
        graph.output.append(
            helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", plan.dim])
        )
    _prune_unused(graph)
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    model.producer_name = "handspring export"
    external = _save(model, source.parent, target, single_file_limit)
    return WrittenGraph(
        file=target.name,
        external_data=external,
        inputs=[_spec(v) for v in graph.input if v.name not in _initializer_names(graph)],
        outputs=[_spec(v) for v in graph.output],
        ir_version=model.ir_version,
        opsets={o.domain or "ai.onnx": o.version for o in model.opset_import},
    )


# ------------------------------------------------------------------ rewrites


def _eot_from_ids(graph: onnx.GraphProto, eot_id: int) -> list[onnx.NodeProto]:
    """eot_index = the first position of `eot_id` in input_ids (ArgMax keeps the first max)."""
    inputs = [v for v in graph.input if v.name != EOT_INPUT]
    if len(inputs) == len(graph.input):
        raise ValueError(f"graph {graph.name!r} has no {EOT_INPUT} input to compute")
    del graph.input[:]
    graph.input.extend(inputs)
    ids = inputs[0].name
    eot = _const(graph, "eot_id", np.asarray(eot_id, dtype=np.int64))
    found, as_int = _PREFIX + "is_eot", _PREFIX + "is_eot_int"
    return [
        helper.make_node("Equal", [ids, eot], [found], name=found),
        # ArgMax reads no booleans.
        helper.make_node("Cast", [found], [as_int], name=as_int, to=TensorProto.INT32),
        helper.make_node("ArgMax", [as_int], [EOT_INPUT], name=EOT_INPUT, axis=1, keepdims=0),
    ]


def _clips_as_rows(graph: onnx.GraphProto, clips: int) -> onnx.NodeProto:
    """Input [batch, clips, *clip] -> the tower's own input [batch * clips, *clip]."""
    value = graph.input[0]
    name, elem_type, clip_dims = value.name, value.type.tensor_type.elem_type, _dims(value)[1:]
    rows = _PREFIX + "clip_rows"
    _rename_value(graph, name, rows)
    clips_shape = _const(graph, "clip_shape", np.asarray([-1, *clip_dims], dtype=np.int64))
    new_input = helper.make_tensor_value_info(name, elem_type, ["batch", clips, *clip_dims])
    del graph.input[0]
    graph.input.insert(0, new_input)
    return helper.make_node("Reshape", [new_input.name, clips_shape], [rows], name=rows)


def _mean_of_clips(
    graph: onnx.GraphProto, per_clip: str, clips: int, width: int, opset: int
) -> list[onnx.NodeProto]:
    shape = _const(graph, "clip_vectors_shape", np.asarray([-1, clips, width], dtype=np.int64))
    grouped, mean = _PREFIX + "clip_vectors", _PREFIX + "mean_of_clips"
    return [
        helper.make_node("Reshape", [per_clip, shape], [grouped], name=grouped),
        _reduce(graph, "ReduceMean", grouped, mean, axis=1, keepdims=0, opset=opset),
    ]


def _l2_normalized(graph: onnx.GraphProto, x: str, opset: int) -> list[onnx.NodeProto]:
    """x / max(||x||, float32 tiny), as handspring's `l2_normalize`."""
    tiny = _const(graph, "tiny", np.asarray(np.finfo(np.float32).tiny, dtype=np.float32))
    norm, floor = _PREFIX + "norm", _PREFIX + "norm_floor"
    return [
        _reduce(graph, "ReduceL2", x, norm, axis=-1, keepdims=1, opset=opset),
        helper.make_node("Max", [norm, tiny], [floor], name=floor),
        helper.make_node("Div", [x, floor], [EMBEDDING], name=EMBEDDING),
    ]


def _reduce(
    graph: onnx.GraphProto, op: str, x: str, out: str, *, axis: int, keepdims: int, opset: int
) -> onnx.NodeProto:
    # Opset 18 moved the axes of ReduceL2 and ReduceMean from an attribute to an input.
    if opset >= 18:
        axes = _const(graph, f"axes_{axis}", np.asarray([axis], dtype=np.int64))
        return helper.make_node(op, [x, axes], [out], name=out, keepdims=keepdims)
    return helper.make_node(op, [x], [out], name=out, axes=[axis], keepdims=keepdims)


def _const(graph: onnx.GraphProto, name: str, value: np.ndarray) -> str:
    full = _PREFIX + name
    if full not in _initializer_names(graph):
        graph.initializer.append(numpy_helper.from_array(value, full))
    return full


def _rename_value(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        if node.name == old:  # our builder names a node after its output
            node.name = new
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new


def _prune_unused(graph: onnx.GraphProto) -> None:
    """Drop the nodes (and initializers) no output needs: the per-token outputs' own."""
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for node in graph.node for a in node.attribute):  # fmt: skip
        return  # a subgraph's reads are not in its node's inputs: keep everything
    needed = {o.name for o in graph.output}
    kept: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    initializers = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


# ------------------------------------------------------------------ saving


def _save(model: onnx.ModelProto, source_dir: Path, target: Path, limit: int) -> str | None:
    """Write `model` to `target`; returns the name of its weights file, if it needs one."""
    locations = _external_locations(model.graph.initializer)
    data_bytes = sum((source_dir / location).stat().st_size for location in locations)
    if data_bytes + model.ByteSize() < limit:
        onnx.load_external_data_for_model(model, str(source_dir))
        onnx.save_model(model, str(target))
        return None
    data_name = target.name + ".data"
    if len(locations) == 1:
        # Our graphs keep every large weight in one page-aligned file: copied as it is,
        # without reading gigabytes into protobuf.
        shutil.copyfile(source_dir / next(iter(locations)), target.parent / data_name)
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = data_name
        onnx.save_model(model, str(target))
    else:
        onnx.load_external_data_for_model(model, str(source_dir))
        onnx.save_model(
            model,
            str(target),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_name,
        )
    return data_name


def _external_locations(tensors: Iterable[onnx.TensorProto]) -> set[str]:
    return {
        entry.value
        for tensor in tensors
        if tensor.data_location == TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }


# ------------------------------------------------------------------ reading


def _default_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _initializer_names(graph: onnx.GraphProto) -> set[str]:
    return {t.name for t in graph.initializer}


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    elem = value.type.tensor_type.elem_type
    return TensorSpec(
        value.name, DTYPE_NAMES.get(elem, TensorProto.DataType.Name(elem)), _dims(value)
    )
