"""CPU features that change how int8 graphs should be built."""

from __future__ import annotations

import functools
import platform
from pathlib import Path


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux names them (avx512_vnni, amx_bf16, ...); empty
    where /proc/cpuinfo cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


@functools.cache
def int8_weight_bits() -> int:
    """8 on CPUs with VNNI (or not x86); 7 elsewhere on x86.

    Without VNNI, x86 int8 kernels multiply u8 activations by s8 weights with
    an instruction that saturates pairs of products at int16; 7-bit weights
    keep every pair in range, at a small cost in accuracy.
    """
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return 8
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 7
    return 8 if ("avx512_vnni" in flags or "avx_vnni" in flags or "amx_int8" in flags) else 7
