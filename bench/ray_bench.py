"""Indexing on Ray against the local engine, and the driver's commit ceiling.

(a) Photos/s of `photos index` on the same photo-like JPEGs (tests/support/images,
EXIF dates), a random-weight full-size clip-ViT-B-32 (int8), graph built beforehand:
- the local engine, on every core, and pinned to one core;
- on Ray (`RayIndexer`, Ray Data), a head without CPUs and 1 then 2 worker nodes of
  one CPU each, each worker pinned to its own core (`taskset`), so a worker is a core.
  Each Ray run includes starting its actor pool (the model loads in each actor), as
  every real run does; the run's fixed cost is measured apart on a handful of photos.
(b) The driver's commit ceiling: pre-computed vectors written through the indexer's
own path (the duplicate-content lookup, the write, commits every 64) as fast as the
store takes them, for SQLite and Qdrant's embedded mode (no Qdrant server here).

Rounds alternate between the engines; the best round of each is reported (other
processes share this machine's cores).

    python bench/ray_bench.py [--photos 96] [--megapixels 12] [--rounds 2]
        [--commit-photos 2000]
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from handspring.photos.indexing.indexer import Indexer, IndexOptions  # noqa: E402
from handspring.photos.scanning.reading import Prepared  # noqa: E402
from handspring.photos.scanning.scan import ScannedFile  # noqa: E402
from handspring.photos.stores.records import PhotoRecord  # noqa: E402
from handspring.photos.stores.store import open_store  # noqa: E402

RAY_BIN = Path(sys.executable).with_name("ray")


def make_photos(folder: Path, count: int, megapixels: float) -> None:
    """`count` distinct photo-like JPEGs (q90, EXIF dates): four made by the tests' photo
    generator, the others shifted copies of them (making each costs ~30 s here)."""
    from PIL import Image

    from tests.support.images import photo_array
    from tests.support.photo_library import age, exif_block

    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = width * 3 // 4
    bases = [photo_array(height, width, seed) for seed in range(min(4, count))]
    for i in range(count):
        pixels = np.roll(bases[i % len(bases)], (i * 97 % height, i * 131 % width), (0, 1))
        path = folder / f"{i % 4}" / f"photo_{i:03}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        taken = datetime.datetime(2020, 1 + i % 12, 1 + i % 28, 12)
        Image.fromarray(pixels).save(path, quality=90, exif=exif_block(taken=taken).tobytes())
        age(path, i)


def timed_run(make_indexer: Callable[[object], Indexer], photos: Path, db: Path) -> float:
    """Seconds of one index run of `photos` into a new SQLite index."""
    shutil.rmtree(db, ignore_errors=True)
    db.mkdir()
    store = open_store(str(db / "index.db"))
    try:
        start = time.perf_counter()
        report = make_indexer(store).run([str(photos)])
        seconds = time.perf_counter() - start
    finally:
        store.close()
    assert not report.failed and report.added > 0, report
    return seconds


# ------------------------------------------------------------------ Ray cluster


@contextmanager
def ray_head(tmp: Path) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """A head node (no CPUs) started with `ray start --block`, ended by its pid."""
    port = 6300 + os.getpid() % 500
    command = [str(RAY_BIN), "start", "--head", "--block", f"--port={port}", "--num-cpus=0"]
    command += [
        "--include-dashboard=false",
        "--node-ip-address=127.0.0.1",
        "--object-store-memory=1000000000",
    ]
    log = (tmp / "ray-head.log").open("w")
    head = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    workers: list[subprocess.Popen] = []
    try:
        yield f"127.0.0.1:{port}", workers
    finally:
        for process in [*workers, head]:
            process.terminate()
        for process in [*workers, head]:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def add_worker(address: str, core: int, workers: list[subprocess.Popen]) -> None:
    """A worker node of one CPU, pinned to `core`."""
    import ray

    before = sum(1 for n in ray.nodes() if n.get("Alive"))
    command = ["taskset", "-c", str(core), str(RAY_BIN), "start", "--block"]
    command += [
        f"--address={address}",
        "--num-cpus=1",
        "--node-ip-address=127.0.0.1",
        "--object-store-memory=1000000000",
    ]
    workers.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.monotonic() + 300
    while sum(1 for n in ray.nodes() if n.get("Alive")) <= before:
        if time.monotonic() > deadline:
            raise RuntimeError("the worker node did not join")
        time.sleep(0.5)


def connect(address: str, head_log: Path) -> None:
    """The driver connected, once the head's GCS port answers (ray.init gives up on a GCS
    that is not up within 60 s, and a busy machine can take longer)."""
    import socket

    import ray

    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + 600
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no Ray head:\n{head_log.read_text()}") from None
            time.sleep(1)
    ray.init(address=address, log_to_driver=False, logging_level="ERROR")


# ------------------------------------------------------------------ commit ceiling


def commit_ceiling(url: str, count: int, dim: int = 512) -> tuple[float, float]:
    """Photos/s over `count` pre-computed photos written as the Ray driver writes its
    results, and over the last fifth of them (an embedded Qdrant slows as it fills)."""
    store = open_store(url)
    indexer = Indexer(store, IndexOptions(image_model="bench", commit_every=64))
    indexer._record_model(dim)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((count, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    from handspring.photos.indexing.indexer import IndexReport
    from handspring.photos.scanning.scan import ScanReport

    report = IndexReport(scan=ScanReport(roots=["/library"]))
    marks = []
    start = time.perf_counter()
    for i in range(count):
        path = f"/library/{i % 10}/{i:07}.jpg"
        taken = datetime.datetime(2000, 1, 1) + datetime.timedelta(days=i % 9000)
        record = PhotoRecord(path, 4_000_000, i, f"{i:064x}", 4000, 3000, taken)
        prepared = Prepared(ScannedFile(path, 4_000_000, i), None, record=record)
        if not indexer._settle_without_model(prepared, report):
            indexer._write_embedded(prepared, vectors[i], None, report)
        indexer._maybe_commit()
        if i + 1 == count - count // 5:
            marks.append(time.perf_counter())
    indexer._commit()
    end = time.perf_counter()
    store.close()
    return count / (end - start), (count // 5) / (end - marks[0])


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=96)
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--commit-photos", type=int, default=2000)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    sys.excepthook = _print_now
    os.environ["HANDSPRING_CACHE"] = str(tmp / "cache")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # A cluster on loopback for one run: no token to share between its processes.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    try:
        run_bench(args, tmp)
    except BaseException:
        _print_now(*sys.exc_info())
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _print_now(*exc_info: object) -> None:
    # Before Ray's shutdown, which can end the process on its own before Python prints.
    import traceback

    traceback.print_exception(*exc_info)  # type: ignore[arg-type]
    sys.stderr.flush()


def run_bench(args: argparse.Namespace, tmp: Path) -> None:
    import handspring
    from handspring.photos.indexing.ray_cluster import RayAddress
    from handspring.photos.indexing.ray_pipeline import RayIndexer, RayOptions
    from tests.support.checkpoints import VIT_B32, write_sentence_transformers_clip

    print(f"making {args.photos} photos of {args.megapixels:g} MP ...", file=sys.stderr)
    photos, few = tmp / "photos", tmp / "few"
    make_photos(photos, args.photos, args.megapixels)
    make_photos(few, 4, args.megapixels)
    checkpoint = str(write_sentence_transformers_clip(tmp / "st-clip", VIT_B32, seed=0))
    model = handspring.load(
        checkpoint, modalities=("image",), precision="int8", fast_decode=True, spinning=False
    )  # builds the graph once, outside every timing
    options = IndexOptions(image_model=checkpoint, precision="int8")

    def local(store: object) -> Indexer:
        return Indexer(store, options, model=model)  # type: ignore[arg-type]

    ray_options = RayOptions(RayAddress("bench"), actor_cpus=0.5, decode_cpus=0.5)

    def on_ray(store: object) -> Indexer:
        return RayIndexer(store, options, ray_options)  # type: ignore[arg-type]

    results: dict[str, list[float]] = {}
    overhead: dict[str, float] = {}
    one_core = [
        sys.executable, __file__, "--local-one-core", str(photos), checkpoint, str(tmp / "db1"),
    ]  # fmt: skip
    with ray_head(tmp) as (address, workers):
        connect(address, tmp / "ray-head.log")
        for workers_wanted in (1, 2):
            add_worker(address, workers_wanted - 1, workers)
            label = f"Ray, {workers_wanted} worker(s) of 1 core"
            print(f"{label} ...", file=sys.stderr)
            timed_run(on_ray, few, tmp / "db-warm")  # worker processes started, caches warm
            overhead[label] = min(timed_run(on_ray, few, tmp / "db-few") for _ in range(2))
            for _ in range(args.rounds):
                results.setdefault(label, []).append(timed_run(on_ray, photos, tmp / "db"))
                results.setdefault("local engine, 2 cores", []).append(
                    timed_run(local, photos, tmp / "db")
                )
                out = subprocess.run(one_core, capture_output=True, text=True, check=True)
                results.setdefault("local engine, 1 core", []).append(float(out.stdout))
        import ray

        ray.shutdown()

    print(f"committing {args.commit_photos} pre-computed photos ...", file=sys.stderr)
    ceilings = {
        "SQLite": commit_ceiling(f"sqlite://{tmp / 'ceiling.db'}", args.commit_photos),
        "Qdrant, embedded": commit_ceiling(f"qdrant://{tmp / 'ceiling-q'}", args.commit_photos),
    }
    print(
        f"\n{args.photos} JPEGs of {args.megapixels:g} MP, clip-ViT-B-32 int8 (random weights), "
        f"{os.cpu_count()} cores shared with other work; best of {args.rounds} rounds\n"
    )
    print("| engine | photos/s | s | fixed cost of a run (4 photos) |")
    print("|---|---:|---:|---:|")
    for label, times in sorted(results.items()):
        best = min(times)
        cost = f"{overhead[label]:.1f} s" if label in overhead else "model preloaded"
        print(f"| {label} | {args.photos / best:.2f} | {best:.1f} | {cost} |")
    print(f"\nDriver commit ceiling, {args.commit_photos} photos, commits every 64\n")
    print("| store | photos/s, whole run | photos/s, last fifth |")
    print("|---|---:|---:|")
    for name, (whole, last) in ceilings.items():
        print(f"| {name} | {whole:.0f} | {last:.0f} |")


def local_one_core(photos: str, checkpoint: str, db: str) -> None:
    import handspring

    os.sched_setaffinity(0, {0})
    model = handspring.load(
        checkpoint, modalities=("image",), precision="int8", fast_decode=True, spinning=False
    )
    options = IndexOptions(image_model=checkpoint, precision="int8")
    seconds = timed_run(lambda store: Indexer(store, options, model=model), Path(photos), Path(db))  # type: ignore[arg-type]
    print(seconds)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--local-one-core":
        local_one_core(*sys.argv[2:])
    else:
        main()
