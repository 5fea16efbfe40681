"""`handspring export`: a model's towers as standalone ONNX files, with their preprocessing
and tokenizers as data, in one folder that any ONNX Runtime can use without handspring.

The towers are loaded through `handspring.load`, so the exported graphs are the ones
handspring runs (fp32, or the gated int8), taken from the graph cache and rewritten by
export/graphs.py. The folder is written beside its destination and renamed into place, so
a failed export leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import handspring
from handspring.embedder import Model
from handspring.export.errors import ExportError
from handspring.export.gates import check_int8_export, gate_json
from handspring.export.graphs import SINGLE_FILE_LIMIT, WrittenGraph, write_tower_graph
from handspring.export.towers import TowerExport, plan_tower
from handspring.loading import load, locate
from handspring.registry import Int8Gate, known_model
from handspring.runtime.session import precision_of

FORMAT = "handspring-export"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
PREPROCESS_JSON = "preprocess.json"
# Families whose towers give scores or sparse weights rather than embeddings.
NOT_EMBEDDINGS = ("cross-encoder", "splade")


def export_model(
    model: str | Path,
    outdir: str | Path,
    *,
    precision: str = "fp32",
    modalities: Collection[str] | None = None,
    allow_ungated: bool = False,
    single_file_limit: int = SINGLE_FILE_LIMIT,
) -> Path:
    """Write `model`'s towers (all, or `modalities`) to `outdir`, which must be absent or
    empty: `<modality>.onnx` per tower, model.json, preprocess.json and the tokenizer and
    filterbank files. Returns `outdir`.

    precision: "fp32", or "int8" where the registry's gate for each tower allows it;
        `allow_ungated` exports int8 for towers whose accuracy was never measured.
    single_file_limit: a graph over this many bytes keeps its weights in a .data file.
    """
    name = str(model)
    target = Path(outdir)
    _check_target(target)
    precision_of(precision)  # a ValueError naming the choices, before any work
    family = locate(model).family
    if family.name in NOT_EMBEDDINGS:
        raise ExportError(name, f"a {family.description} gives scores, not embeddings to export")
    asked = tuple(dict.fromkeys(modalities)) if modalities else family.modalities
    if missing := [m for m in asked if m not in family.modalities]:
        raise ExportError(
            name,
            f"has no {missing[0]} modality (modalities it has: {', '.join(family.modalities)})",
        )
    gates = check_int8_export(name, asked, allow_ungated) if precision == "int8" else {}
    loaded = load(model, asked, precision, threads=1)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    staging.chmod(0o755)  # mkdtemp's 0o700 would otherwise stay on the finished folder
    try:
        exported = {
            m: plan_tower(m, t, loaded.family, loaded.dim) for m, t in loaded.towers.items()
        }
        graphs = {
            m: write_tower_graph(
                loaded.towers[m].graph_path, staging / f"{m}.onnx", e.plan, single_file_limit
            )
            for m, e in exported.items()
        }
        for tower in exported.values():
            for relative, data in tower.files.items():
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                (staging / relative).write_bytes(data)
        preprocess = {m: e.preprocess for m, e in exported.items()}
        manifest = _manifest(name, loaded, precision, exported, graphs, gates)
        _write_json(staging / PREPROCESS_JSON, preprocess)
        _write_json(staging / MODEL_JSON, manifest)
        if target.exists():
            target.rmdir()  # empty, as checked
        os.rename(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def _check_target(target: Path) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ExportError(str(target), "exists and is not an empty folder")


def _manifest(
    name: str,
    loaded: Model,
    precision: str,
    exported: dict[str, TowerExport],
    graphs: dict[str, WrittenGraph],
    gates: dict[str, Int8Gate | None],
) -> dict[str, Any]:
    known = known_model(name)
    towers = {}
    for modality, tower in exported.items():
        graph = graphs[modality]
        towers[modality] = {
            "file": graph.file,
            "external_data": graph.external_data,
            "inputs": [spec.as_json() for spec in graph.inputs],
            "outputs": [
                {**spec.as_json(), "normalized": spec.name == "embedding" and tower.plan.normalize}
                for spec in graph.outputs
            ],
            "pooling": tower.pooling,
            "normalization": (
                "L2 in the graph: `embedding` is unit length, `raw_embedding` is before it"
                if tower.plan.normalize
                else "none (the model's own choice): `embedding` equals `raw_embedding`"
            ),
            "precision": precision_of(precision).tag,
            "int8_gate": gate_json(gates.get(modality)),
            "ir_version": graph.ir_version,
            "opsets": graph.opsets,
        }
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": name,
        "repo_id": known.repo_id if known else None,
        "licence": (known.licence or None) if known else None,
        "family": loaded.family,
        "modalities": list(loaded.modalities),
        "dim": loaded.dim,
        "precision": precision,
        "zero_shot": _zero_shot(loaded),
        "towers": towers,
        "handspring_version": handspring.__version__,
    }


def _zero_shot(model: Model) -> dict[str, Any] | None:
    if not model.logit_scales:
        return None
    return {
        "scoring": model.zero_shot,
        "against": "text",
        "logit_scale": dict(model.logit_scales),
        "logit_bias": dict(model.logit_biases) or None,
        "formula": (
            "softmax over labels of logit_scale[m] * cos(x, text)"
            if model.zero_shot == "softmax"
            else "sigmoid(logit_scale[m] * cos(x, text) + logit_bias[m]) per label"
        ),
    }


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
