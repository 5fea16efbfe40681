"""SIGKILL during indexing, again and again: does every run keep what it committed, and
do the runs add up?

A library of large generated JPEGs (150 of 4000x3000 by default, EXIF orientations
mixed in), a random-weight full-size clip-ViT-B-32 in sentence-transformers' layout,
int8 as `photos index` runs by default. For each store:

1. an uninterrupted `photos index` into a new index, timed from spawn to exit;
2. into another new index, `photos index` started again and again and SIGKILLed at
   random moments (seeded; 0.5-5 s after each start) until `--kills` kills have landed
   in a run; after each run the store is opened and read: no path twice, and every
   photo a kill found committed is still there, with the same id, after every later
   kill. A run that ends before its kill and leaves the index whole starts a new index,
   so that every kill lands while there is work to lose;
3. one last uninterrupted run, which must complete the index.

It prints one table: kills, photos indexed after the kills, lost, duplicated,
integrity_check, runs that saved nothing, and the time to finish (all runs, killed
ones included) against the uninterrupted run.

    python bench/reliability/kill_resume.py [--photos 150] [--kills 100] [--stores sqlite,qdrant]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

DISTINCT_SCENES = 8  # photo_array takes seconds at 12 MP: a few scenes, each shifted per photo
RUN_TIMEOUT_S = 3600


def make_library(folder: Path, count: int, width: int, height: int) -> dict[str, str]:
    """`count` JPEGs (q90) of width x height, every one different: path -> sha256."""
    import numpy as np
    from PIL import Image

    from tests.support.images import photo_array

    scenes = [photo_array(height, width, seed=s) for s in range(min(DISTINCT_SCENES, count))]
    rng = np.random.default_rng(0)
    out: dict[str, str] = {}
    for i in range(count):
        shift = (int(rng.integers(0, height)), int(rng.integers(0, width)))
        pixels = np.roll(scenes[i % len(scenes)], shift, axis=(0, 1))
        exif = Image.Exif()
        exif[0x0112] = (1, 6, 3, 8)[i % 4]  # orientation
        exif[0x0132] = f"2023:07:{i % 28 + 1:02} 12:{i // 60 % 60:02}:{i % 60:02}"
        path = folder / f"d{i % 5}" / f"photo_{i:04}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90, exif=exif)
        os.utime(path, (1.7e9, 1.7e9 + i))  # an old library: no file looks just written
        out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def index_command(library: Path, url: str, checkpoint: Path) -> list[str]:
    return [
        sys.executable, "-m", "handspring.photos.cli", "index", str(library),
        "--db", url, "--image-model", str(checkpoint), "--no-progress",
    ]  # fmt: skip


def run_to_the_end(command: list[str], env: dict[str, str], log: Path) -> float:
    """Seconds from spawn to exit of a run nobody kills; it must succeed."""
    start = time.perf_counter()
    with log.open("a") as err:
        done = subprocess.run(
            command, env=env, stdout=subprocess.DEVNULL, stderr=err, timeout=RUN_TIMEOUT_S
        )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"an uninterrupted run failed ({done.returncode}); see {log}")
    return seconds


def indexed(url: str, library: Path) -> tuple[dict[str, int], int]:
    """What the store holds under the library: path -> id (the first of any path seen
    twice), and how many rows repeat a path."""
    from handspring.photos.stores.store import open_store

    store = open_store(url, read_only=True)
    try:
        files = list(store.files_under([str(library)]))
    finally:
        store.close()
    ids: dict[str, int] = {}
    for f in files:
        if f.has_vector and f.error is None:
            ids.setdefault(f.path, f.id)
    return ids, len(files) - len({f.path for f in files})


def integrity(url: str) -> str:
    if not url.startswith("sqlite://"):
        return "n/a"
    db = sqlite3.connect(url.removeprefix("sqlite://"))
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


@dataclass
class Outcome:
    store: str
    kills: int = 0
    finished_before_kill: int = 0  # runs that ended before their kill came
    indexes: int = 1  # fresh indexes the kills were spread over
    saved_nothing: int = 0  # killed runs that added no photo
    after_kills: int = 0
    lost: set[str] = field(default_factory=set)  # committed once, gone or changed id later
    duplicated: int = 0
    integrity: set[str] = field(default_factory=set)
    killed_s: float = 0.0  # every killed run, spawn to death
    last_run_s: float = 0.0
    missing_at_end: int = 0
    uninterrupted_s: float = 0.0


def kill_again_and_again(
    outcome: Outcome,
    target: Callable[[int], str],
    library: Path,
    photos: int,
    run: Callable[[str, float], bool],
    kills: int,
    rng: random.Random,
) -> tuple[str, dict[str, int]]:
    """Kill runs into `target(n)` until `kills` kills have landed (at most 3x as many
    tries); the last index's URL and what it holds."""
    committed: dict[str, int] = {}
    url = target(0)
    for _ in range(3 * kills):
        if outcome.kills >= kills:
            break
        delay = rng.uniform(0.5, 5.0)
        killed = run(url, delay)
        now, repeated = indexed(url, library)
        outcome.duplicated += repeated
        outcome.integrity.add(integrity(url))
        outcome.lost |= {p for p, i in committed.items() if now.get(p) != i}
        outcome.saved_nothing += killed and len(now) <= len(committed)
        committed = now
        print(f"  {outcome.store}: kill {outcome.kills}/{kills} after {delay:.1f} s "
              f"({'killed' if killed else 'ended first'}): {len(now)} indexed",
              file=sys.stderr)  # fmt: skip
        if not killed and len(now) == photos and outcome.kills < kills:
            url, committed = target(outcome.indexes), {}
            outcome.indexes += 1
    outcome.after_kills = len(committed)
    return url, committed


def killed_run(
    outcome: Outcome, command: list[str], env: dict[str, str], log: Path, delay: float
) -> bool:
    """One run, SIGKILLed `delay` seconds after its start unless it ended first."""
    start = time.perf_counter()
    with log.open("a") as err:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            process.wait(timeout=delay)
            outcome.finished_before_kill += 1
            killed = False
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            outcome.kills += 1
            killed = True
    outcome.killed_s += time.perf_counter() - start
    return killed


def bench_store(
    store: str,
    work: Path,
    library: Path,
    expected: dict[str, str],
    checkpoint: Path,
    env: dict[str, str],
    kills: int,
    seed: int,
) -> Outcome:
    def url(name: str) -> str:
        return f"sqlite://{work / f'{name}.db'}" if store == "sqlite" else f"qdrant://{work / name}"

    outcome = Outcome(store)
    log = work / f"{store}.log"
    print(f"{store}: uninterrupted run ...", file=sys.stderr)
    outcome.uninterrupted_s = run_to_the_end(
        index_command(library, url(f"{store}-whole"), checkpoint), env, log
    )

    def run(target: str, delay: float) -> bool:
        return killed_run(outcome, index_command(library, target, checkpoint), env, log, delay)

    target, committed = kill_again_and_again(
        outcome,
        lambda n: url(f"{store}-killed-{n}"),
        library,
        len(expected),
        run,
        kills,
        random.Random(seed),
    )
    command = index_command(library, target, checkpoint)
    print(f"{store}: last run ...", file=sys.stderr)
    outcome.last_run_s = run_to_the_end(command, env, log)
    final, repeated = indexed(target, library)
    outcome.duplicated += repeated
    outcome.integrity.add(integrity(target))
    outcome.lost |= {p for p, i in committed.items() if final.get(p) != i}
    outcome.missing_at_end = len(set(expected) - set(final))
    return outcome


def table(outcomes: list[Outcome], photos: int) -> str:
    lines = [
        "| store | kills | indexed after the kills | killed runs that saved nothing | lost | "
        "duplicated | integrity_check | missing after the last run | time to finish "
        "(killed runs + last run) | uninterrupted run |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for o in outcomes:
        total = o.killed_s + o.last_run_s
        ratio = total / o.uninterrupted_s if o.uninterrupted_s else float("nan")
        indexes = "1 index" if o.indexes == 1 else f"{o.indexes} indexes"
        kills = f"{o.kills} in {indexes}" + (
            f" ({o.finished_before_kill} runs ended first)" if o.finished_before_kill else ""
        )
        lines.append(
            f"| {o.store} | {kills} | {o.after_kills}/{photos} | {o.saved_nothing} | "
            f"{len(o.lost)} | {o.duplicated} | {', '.join(sorted(o.integrity))} | "
            f"{o.missing_at_end} | {total:.0f} s ({o.killed_s:.0f} + {o.last_run_s:.0f}), "
            f"{ratio:.2f}x | {o.uninterrupted_s:.0f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=150)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the photos")
    parser.add_argument("--stores", default="sqlite,qdrant")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    stores = [s for s in args.stores.split(",") if s]

    from tests.support.checkpoints import VIT_B32, write_sentence_transformers_clip

    with tempfile.TemporaryDirectory(prefix="kill-resume-") as tmp:
        work = Path(tmp)
        env = dict(os.environ, HANDSPRING_CACHE=str(work / "cache"), HF_HUB_OFFLINE="1")
        print(f"making {args.photos} photos of {width}x{height} ...", file=sys.stderr)
        library = work / "photos"
        expected = make_library(library, args.photos, width, height)
        checkpoint = write_sentence_transformers_clip(work / "st-clip", VIT_B32, seed=0)
        # Build the int8 graph once, so no run pays for it.
        code = (
            f"import handspring; handspring.load({str(checkpoint)!r}, modalities=('image',),"
            " precision='int8')"
        )
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        outcomes = [
            bench_store(store, work, library, expected, checkpoint, env, args.kills, args.seed)
            for store in stores
        ]
    print(
        f"\nSIGKILL during `photos index`: {args.photos} JPEGs of {width}x{height} (q90), "
        f"clip-ViT-B-32 random weights, int8, {os.cpu_count()} CPUs; kills 0.5-5 s after "
        f"each start (seed {args.seed}), then one uninterrupted run\n"
    )
    print(table(outcomes, args.photos))


if __name__ == "__main__":
    main()
