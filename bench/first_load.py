"""The first load against a load from the graph cache: peak RSS and seconds, each in a
fresh process, for full-size random-weight checkpoints.

A first load reads the safetensors weights, builds and quantizes each tower's graph and
writes it to the graph cache; a warm load maps that graph. Target (issue #16): the first
load of both CLIP B/32 towers in int8 peaks at no more than 1.3x the warm load's RSS, and
the same for ImageBind (4.8 GB of fp32 weights), which `--imagebind` adds (~2 min).

    python bench/first_load.py                # CLIP ViT-B/32, int8 and fp32
    python bench/first_load.py --imagebind    # and ImageBind huge, int8, all six towers

Checkpoints are written once under ~/.cache/handspring-bench/ (families_bench.py's and
imagebind_bench.py's folders are reused); each measured load gets an empty graph cache
of its own, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from harness import peak_rss_mib, spawn_worker

ROOT = Path(__file__).resolve().parents[1]
BENCH_CACHE = Path.home() / ".cache" / "handspring-bench"
TARGET = 1.3


def _worker(model: str, precision: str) -> None:
    import handspring

    start = time.perf_counter()
    handspring.load(model, precision=precision)
    seconds = time.perf_counter() - start
    print(json.dumps({"peak_mib": peak_rss_mib(), "seconds": seconds}))


def _clip_b32() -> Path:
    folder = BENCH_CACHE / "families" / "clip-seed0"
    if not folder.is_dir():
        sys.path.insert(0, str(ROOT))
        from tests.support.checkpoints import VIT_B32, write_hf_clip

        staging = folder.with_name(f".staging-clip-{os.getpid()}")
        write_hf_clip(staging, VIT_B32, seed=0)
        staging.rename(folder)
    return folder


def _imagebind() -> Path:
    folder = BENCH_CACHE / "imagebind" / "huge-seed0"
    if not folder.is_dir():
        raise SystemExit(f"{folder} is missing: run bench/imagebind_bench.py once to write it")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imagebind", action="store_true", help="Add ImageBind huge (~2 min).")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "PRECISION"), help=argparse.SUPPRESS)
    parser.add_argument("--spawned-at", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(*args.worker)
        return

    cases = [("CLIP ViT-B/32", _clip_b32(), "int8"), ("CLIP ViT-B/32", _clip_b32(), "fp32")]
    if args.imagebind:
        cases.append(("ImageBind huge (6 towers)", _imagebind(), "int8"))
    rows = []
    for label, folder, precision in cases:
        cache = Path(tempfile.mkdtemp(prefix="handspring-first-load-"))
        env = dict(os.environ, HANDSPRING_CACHE=str(cache))
        try:
            cold = spawn_worker(__file__, ["--worker", str(folder), precision], env)
            warm = spawn_worker(__file__, ["--worker", str(folder), precision], env)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        ratio = cold["peak_mib"] / warm["peak_mib"]
        met = "met" if ratio <= TARGET else "NOT met"
        rows.append(
            f"| {label} | {precision} | {cold['peak_mib']:.0f} MiB, {cold['seconds']:.1f} s | "
            f"{warm['peak_mib']:.0f} MiB, {warm['seconds']:.1f} s | {ratio:.2f}x | "
            f"<= {TARGET}x: {met} |"
        )
    print(
        "| model | precision | first load (graphs built) | from the graph cache | "
        "first / cached peak | target |"
    )
    print("|---|---|---:|---:|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
