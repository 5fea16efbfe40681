"""int8 on export: the registry's gates decide, as they do at load, but more strictly.

At load, a tower whose int8 accuracy was never measured loads with a warning, since the
user is there to compare it with fp32. An exported folder travels without that warning,
so its int8 is refused unless the caller says it knows (`allow_ungated`); a gate that
failed refuses it either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from handspring.export.errors import ExportError
from handspring.registry import Int8Gate, known_model


def check_int8_export(
    model: str, modalities: Sequence[str], allow_ungated: bool
) -> dict[str, Int8Gate | None]:
    """Each tower's gate, or ExportError for the first tower int8 is refused for."""
    known = known_model(model)
    gates: dict[str, Int8Gate | None] = {}
    for modality in modalities:
        gate = known.gate(modality) if known else None
        if gate is not None and not gate.passed:
            raise ExportError(
                model,
                f"int8 is refused for the {modality} tower ({gate.describe()}); export fp32",
            )
        if gate is None and not allow_ungated:
            raise ExportError(
                model,
                f"int8 accuracy has not been measured for the {modality} tower of this model "
                "(no gate in the registry); export fp32, or pass --allow-ungated "
                "(allow_ungated=True) to export int8 anyway after comparing it with fp32",
            )
        gates[modality] = gate
    return gates


def gate_json(gate: Int8Gate | None) -> dict[str, Any] | None:
    if gate is None:
        return None
    return {
        "min_cosine": gate.min_cosine,
        "required_cosine": gate.required_cosine,
        "nn_agreement": gate.nn_agreement,
    }
