"""Graphs in the form OpenVINO runs well, made from the graph cache's ONNX Runtime graphs.

fp32 graphs run on OpenVINO as they are. The two other precisions get a variant, cached
beside its source under a key of its own (`variant_key`), listed and pruned with it:

int8: our recipe is written for ONNX Runtime: each Linear input is quantized per row
(ReduceMax, ReduceMin, QuantizeLinear with axis 0), or per tensor (DynamicQuantizeLinear)
in towers that run one item at a time, and multiplied by the int8 weights in
com.microsoft's MatMulIntegerToFloat. OpenVINO's ONNX frontend computes that op as an fp32
product of converted integers (and mis-infers the per-row shapes: its output has no rows),
so each such Linear becomes

    MatMul(x, DequantizeLinear(weight_int8, weight_scale, axis=1))

on the layer's fp32 input. OpenVINO keeps such weights compressed and quantizes
activations itself at run time (DYNAMIC_QUANTIZATION_GROUP_SIZE): no calibration, as in
our recipe. The quantization nodes then feed nothing and go (the row scales were the
product's input scale). The weights file is a hard link to the source's (the
same int8 bytes): no extra disk, and it outlives a prune of the source.

bf16: every MatMul on a weight matrix runs on bf16 weights and a bf16 copy of its input,
with fp32 results; everything else (residual stream, LayerNorm, softmax, GELU) stays fp32:

    Cast(MatMul(Cast(x, bf16), weight_bf16), fp32)

OpenVINO's plugin-wide bf16 hint also keeps the residual stream in bf16, which cost the
CLIP ViT-B/32 text tower its cosine target (min 0.99989 against fp32 over 32 queries; this
form 0.99994, the image tower 0.99996 against 0.99994), for a few percent of speed. The
weights file holds the weight matrices in bf16 (half their fp32 bytes) and the rest as it
was, written tensor by tensor from the source's file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from handspring.runtime.graph_cache import INFO_FILE

if TYPE_CHECKING:
    import onnx

# Bump when a rewrite changes, so that old variants are not reused.
VARIANT_FORMAT = 1
DATA_FILE = "model.onnx.data"
_ALIGN = 4096  # offsets of tensors in a weights file, so that each can be mapped
FLOAT, BFLOAT16 = 1, 16  # onnx.TensorProto's element types
EXTERNAL = 1  # onnx.TensorProto.EXTERNAL

# (the source graph without its weights, its path, the staging folder) -> the variant's
# graph; writes the variant's weights file into the staging folder.
Rewrite = Callable[["onnx.ModelProto", Path, Path], "onnx.ModelProto"]


def variant_key(source_key: str, precision: str) -> str:
    parts = {"source": source_key, "variant": f"openvino-{precision}", "format": VARIANT_FORMAT}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def openvino_graph(source: Path, precision: str) -> tuple[Path, bool]:
    """The graph OpenVINO compiles for the graph cache entry `source` (a `model.onnx`) at
    `precision`: an fp32 graph as it is; its bf16 variant; the int8 graph's variant.
    Variants are made and cached on first use. Returns (path, whether it was made now)."""
    if precision == "int8":
        return _variant(source, "int8", _int8_files)
    if precision == "bf16":
        return _variant(source, "bf16", _bf16_files)
    return source, False


def _variant(source: Path, precision: str, rewrite: Rewrite) -> tuple[Path, bool]:
    folder = source.parent.parent / variant_key(source.parent.name, precision)
    path = folder / "model.onnx"
    if path.is_file():
        os.utime(folder)  # its last use, as the graph cache marks it
        return path, False
    import onnx

    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        # The weights stay in their file: only the graph is read whole.
        model = rewrite(onnx.load(str(source), load_external_data=False), source, staging)
        onnx.save_model(model, str(staging / "model.onnx"))
        (staging / INFO_FILE).write_text(json.dumps(_variant_info(source, precision)))
        try:
            os.rename(staging, folder)
        except OSError:
            if not path.is_file():  # not a lost race with another process
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return path, True


def _variant_info(source: Path, precision: str) -> dict[str, object]:
    try:
        info = json.loads((source.parent / INFO_FILE).read_text())
    except (OSError, ValueError):
        info = {}
    options = dict(info.get("options") or {})
    options |= {"backend": "openvino", "precision": f"{options.get('precision', '?')}>{precision}"}
    return {**info, "options": options, "source_graph": source.parent.name}


# ----------------------------------------------------------------------------- int8


def _int8_files(model: onnx.ModelProto, source: Path, staging: Path) -> onnx.ModelProto:
    data = source.parent / DATA_FILE
    if data.is_file():  # absent when every initializer is inline (a tiny graph)
        try:
            os.link(data, staging / DATA_FILE)
        except OSError:  # another filesystem, or no hard links there
            shutil.copyfile(data, staging / DATA_FILE)
    return rewrite_int8_matmuls(model)


def rewrite_int8_matmuls(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with every MatMulIntegerToFloat replaced by an fp32 MatMul on its
    dequantized weights, and the nodes that only fed those products removed."""
    from onnx import helper

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "MatMulIntegerToFloat":
            nodes.append(node)
            continue
        quantize = producer[node.input[0]]
        if quantize.op_type not in ("QuantizeLinear", "DynamicQuantizeLinear"):
            raise ValueError(
                f"{node.name}: its input comes from {quantize.op_type}, not a quantization"
            )
        product, weights = node.output[0], f"{node.output[0]}.weight"
        nodes.append(
            helper.make_node(
                "DequantizeLinear", [node.input[1], node.input[3]], [weights], name=weights, axis=1
            )
        )
        bias = node.input[6] if len(node.input) > 6 and node.input[6] else None
        matmul_out = f"{product}.matmul" if bias else product
        nodes.append(
            helper.make_node("MatMul", [quantize.input[0], weights], [matmul_out], name=matmul_out)
        )
        if bias:
            nodes.append(helper.make_node("Add", [matmul_out, bias], [product], name=product))
    _replace_nodes(graph, nodes)
    return model


# ----------------------------------------------------------------------------- bf16


def _bf16_files(model: onnx.ModelProto, source: Path, staging: Path) -> onnx.ModelProto:
    model, to_bf16 = rewrite_bf16_matmuls(model)
    _write_weights(model, source.parent, staging / DATA_FILE, to_bf16)
    return model


def rewrite_bf16_matmuls(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """`model` with every MatMul on a 2-D fp32 initializer run in bf16 (see the module's
    docstring), and {bf16 initializer: the fp32 one it is made from}."""
    from onnx import helper

    graph = model.graph
    weights = {t.name: t for t in graph.initializer if len(t.dims) == 2 and t.data_type == FLOAT}
    to_bf16: dict[str, str] = {}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights:
            nodes.append(node)
            continue
        fp32 = weights[node.input[1]]
        name = f"{fp32.name}.bf16"
        to_bf16[name] = fp32.name
        out = node.output[0]
        nodes += [
            helper.make_node("Cast", [node.input[0]], [f"{out}.x_bf16"], to=BFLOAT16),
            helper.make_node("MatMul", [f"{out}.x_bf16", name], [f"{out}.bf16"], name=out),
            helper.make_node("Cast", [f"{out}.bf16"], [out], to=FLOAT, name=f"{out}.fp32"),
        ]
    for name, fp32_name in to_bf16.items():
        bf16 = graph.initializer.add()
        bf16.CopyFrom(weights[fp32_name])
        bf16.name, bf16.data_type = name, BFLOAT16
    _replace_nodes(graph, nodes)
    return model, to_bf16


def _write_weights(
    model: onnx.ModelProto, source_folder: Path, target: Path, to_bf16: dict[str, str]
) -> None:
    """The model's external initializers written to `target`, one at a time: read from
    the source's weights file, rounded to bf16 where `to_bf16` names them."""
    with target.open("wb") as out:
        for tensor in model.graph.initializer:
            if tensor.data_location != EXTERNAL:  # small: stays in the graph file
                if tensor.name in to_bf16:
                    fp32 = np.frombuffer(tensor.raw_data, dtype=np.float32)
                    tensor.raw_data = to_bfloat16_bits(fp32).tobytes()
                continue
            array = _read_external(tensor, source_folder)
            if tensor.name in to_bf16:
                array = to_bfloat16_bits(array.view(np.float32))
            offset = -out.tell() % _ALIGN + out.tell()
            out.seek(offset)
            out.write(memoryview(np.ascontiguousarray(array)).cast("B"))
            _point_to(tensor, DATA_FILE, offset, array.nbytes)


def _read_external(tensor: onnx.TensorProto, folder: Path) -> np.ndarray:
    """An external initializer's bytes, as uint8."""
    entries = {e.key: e.value for e in tensor.external_data}
    with (folder / entries["location"]).open("rb") as f:
        f.seek(int(entries.get("offset", 0)))
        return np.frombuffer(f.read(int(entries["length"])), dtype=np.uint8)


def _point_to(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        tensor.external_data.add(key=key, value=value)


def to_bfloat16_bits(array: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest, ties to even."""
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return rounded.astype(np.uint16)


# ------------------------------------------------------------------------------ both


def _replace_nodes(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    """Set `nodes` as the graph's, without those (and initializers) no output depends on."""
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(nodes):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    kept.reverse()
    initializers = [t for t in graph.initializer if t.name in needed]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
