"""The precision every command uses when none is given ("auto"): int8 where the model's
measured int8 gate passed for each tower the command runs, fp32 otherwise (models outside
the catalog, and towers never measured). `handspring models` lists the gates."""

from __future__ import annotations

from collections.abc import Iterable

from handspring.registry import FAMILIES, known_model

AUTO = "auto"
CHOICES = (AUTO, "int8", "fp32", "bf16")  # bf16: OpenVINO on a CPU with bf16 units


def default_precision(model: str, modalities: Iterable[str] | None = None) -> str:
    """'int8' if every asked tower (None: every tower of the model) has a passed int8 gate
    in the catalog, else 'fp32'."""
    known = known_model(model)
    if known is None:
        return "fp32"
    towers = list(modalities) if modalities is not None else FAMILIES[known.family].modalities
    gates = [known.gate(tower) for tower in towers]
    return "int8" if gates and all(g is not None and g.passed for g in gates) else "fp32"


def resolve_precision(asked: str, model: str, modalities: Iterable[str] | None = None) -> str:
    return default_precision(model, modalities) if asked == AUTO else asked


def measured_int8(model: str, tower: str) -> str:
    """'min cosine 0.99922 to fp32' for help texts: the catalog's measured figure."""
    known = known_model(model)
    gate = known.gate(tower) if known else None
    return f"min cosine {gate.min_cosine:g} to fp32" if gate else "not measured"


def auto_help(model: str, tower: str) -> str:
    """The sentence each --precision help gives, with the default model's measured figure."""
    return (
        "auto: int8 where the model's int8 gate passed for the towers used (see `handspring "
        f"models`; {model} {tower}s: {measured_int8(model, tower)}), else fp32."
    )
