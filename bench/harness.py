"""What the side-by-side benchmarks share: timing batches, measuring a
process's own peak memory, and running each engine in a fresh process."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def time_batches(
    run: Callable[[list[Any]], object], items: Sequence[Any], batches: Sequence[int], seconds: float
) -> dict[int, float]:
    """ms per batch for each batch size: the median of repeated calls."""
    out: dict[int, float] = {}
    for batch in batches:
        chunk = (list(items) * (batch // len(items) + 1))[:batch]
        run(chunk)  # warm-up
        times: list[float] = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(times) < 3:
            start = time.perf_counter()
            run(chunk)
            times.append(time.perf_counter() - start)
        out[batch] = 1000 * sorted(times)[len(times) // 2]
    return out


def peak_rss_mib() -> float:
    # VmHWM, not getrusage: ru_maxrss survives exec on Linux, so a worker
    # would report the RSS its parent had when it forked.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def spawn_worker(script: str, args: list[str], env: dict[str, str]) -> dict:
    """Run `script --worker ...` in a fresh interpreter; it prints one JSON line last.
    `--spawned-at` lets the worker measure start-up from before the interpreter."""
    out = subprocess.run(
        [sys.executable, script, *args, "--spawned-at", repr(time.time())],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def ratio_rows(
    results: dict[str, dict], key: str, label: str, batches: Sequence[int], reference: str
) -> list[str]:
    """Markdown rows: engine, input, batch, ms/batch, items/s, ratio to the reference engine."""
    rows = []
    for batch in batches:
        for engine, res in results.items():
            ms, ref_ms = res[key][str(batch)], results[reference][key][str(batch)]
            rows.append(
                f"| {engine} | {label} | {batch} | {ms:.1f} | {1000 * batch / ms:.1f} | {ref_ms / ms:.2f}x |"
            )
    return rows
