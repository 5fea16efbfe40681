"""Photo search: indexing speed on real-size photos, and search latency over 1M vectors.

(a) Indexing: 12-megapixel JPEGs (quality 90, EXIF orientations mixed in), a
random-weight full-size clip-ViT-B-32 in sentence-transformers' layout. Our
indexer (scan, read, hash, EXIF, JPEG draft decode, int8 ViT, SQLite writes)
against the original tool's Python approach on the same files in the same run:
PIL open + exif_transpose, then sentence-transformers `encode` on the images.
Each engine runs in a fresh process; model loading is timed apart; our indexer's
time is the median of 3 runs, each into a new index.

(b) Search: 1M random unit 512-d vectors with dates and folders in the SQLite
store, then top-10 latency (p50/p99) as a server sees it (read-only store,
in-memory int8 scan + exact re-scoring), with and without filters, checked
against a float32 brute force in numpy.

(c) The same search in Qdrant's embedded local mode (qdrant-client's own engine, what
`qdrant:///folder` opens): the same vectors with the store's own payloads, written
through the client in batches (the store's `put` looks each path up first, a scan
per photo in this mode). Written to a folder, each point is committed on its own, so
that write rate is measured for 30 s; the search runs on the same engine in memory,
over as many vectors as it takes in --qdrant-seconds, without and with a date filter.
It scans every vector, so a size short of --vectors is scaled to it linearly, and the
table says so.

    python bench/photos_bench.py [--photos 40] [--vectors 1000000] [--queries 100]
        [--qdrant-seconds 300] [--skip-qdrant]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import peak_rss_mib, spawn_worker  # noqa: E402

ST_BATCH = 16  # the reference loads and encodes this many photos at a time
HANDSPRING_RUNS = 3
WARM_UP_QUERIES = 5


def _make_photos(folder: Path, count: int) -> list[Path]:
    from PIL import Image

    from tests.support.images import photo_array

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = Image.fromarray(photo_array(3000, 4000, seed=i))
        exif = Image.Exif()
        exif[0x0112] = (1, 6, 3, 8)[i % 4]
        exif[0x0132] = f"2023:07:{i % 28 + 1:02} 12:00:00"
        path = folder / f"photo_{i:03}.jpg"
        image.save(path, quality=90, exif=exif)
        os.utime(path, (1.7e9, 1.7e9 + i))
        paths.append(path)
    return paths


# ---------------------------------------------------------------- workers


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def index_worker(engine: str, checkpoint: str, photos: str, db: str) -> dict:
    paths = sorted(str(p) for p in Path(photos).glob("*.jpg"))
    if engine == "sentence-transformers":
        from PIL import Image, ImageOps
        from sentence_transformers import SentenceTransformer

        start = time.perf_counter()
        model = SentenceTransformer(checkpoint, device="cpu")
        load_s = time.perf_counter() - start

        def opened(path: str) -> Image.Image:
            with Image.open(path) as image:
                return ImageOps.exif_transpose(image).convert("RGB")

        model.encode([opened(paths[0])])  # warm-up, not timed
        start = time.perf_counter()
        for i in range(0, len(paths), ST_BATCH):
            model.encode([opened(p) for p in paths[i : i + ST_BATCH]], batch_size=ST_BATCH)
        seconds = time.perf_counter() - start
    else:
        import handspring
        from handspring.photos.indexing.indexer import Indexer, IndexOptions
        from handspring.photos.stores.store import open_store

        start = time.perf_counter()
        model = handspring.load(
            checkpoint, modalities=("image",), precision=engine, fast_decode=True
        )
        load_s = time.perf_counter() - start
        model.embed_images(paths[:1])  # warm-up, not timed
        runs = []
        for run in range(HANDSPRING_RUNS):  # short runs: the median of a few, each from scratch
            store = open_store(f"{db}.{run}")
            options = IndexOptions(image_model=checkpoint, precision=engine)
            start = time.perf_counter()
            report = Indexer(store, options, model=model).run([photos])
            runs.append(time.perf_counter() - start)
            assert report.added == len(paths) and not report.failed, report
            store.close()
        seconds = sorted(runs)[len(runs) // 2]
    return {
        "engine": engine,
        "photos": len(paths),
        "seconds": seconds,
        "load_s": load_s,
        "peak_rss_mib": peak_rss_mib(),
    }


def search_worker(count: int, queries: int, db: str) -> dict:
    import numpy as np

    from handspring.photos.stores.records import ModelInfo, PhotoRecord, SearchFilter
    from handspring.photos.stores.store import open_store

    dim, chunk = 512, 20_000
    first_day = datetime.datetime(2000, 1, 1, 12)

    def vector_chunks() -> Iterator[np.ndarray]:
        rng = np.random.default_rng(0)  # the same vectors each time it is called
        for begin in range(0, count, chunk):
            rows = rng.standard_normal((min(chunk, count - begin), dim), dtype=np.float32)
            yield rows / np.linalg.norm(rows, axis=1, keepdims=True)

    store = open_store(db)
    store.set_model(ModelInfo("bench-random-512", dim, "int8"))
    days = np.random.default_rng(1).integers(0, 25 * 365, count)
    start = time.perf_counter()
    i = 0
    for rows in vector_chunks():
        for vector in rows:
            taken = None if i % 10 == 9 else first_day + datetime.timedelta(days=int(days[i]))
            path = f"/library/{i % 10}/{i:07}.jpg"
            store.put(PhotoRecord(path, 4_000_000, i, f"{i:064x}", 4000, 3000, taken), vector)
            i += 1
        store.commit()
    build_s = time.perf_counter() - start
    store.close()

    reader = open_store(db, read_only=True)  # a fresh process would see the same
    rng = np.random.default_rng(2)
    queries_ = rng.standard_normal((queries, dim), dtype=np.float32)
    queries_ /= np.linalg.norm(queries_, axis=1, keepdims=True)
    start = time.perf_counter()
    reader.search(queries_[0], SearchFilter(), 10, 0)
    load_s = time.perf_counter() - start
    for q in queries_[:WARM_UP_QUERIES]:
        reader.search(q, SearchFilter(), 10, 0)
    rss_loaded = _rss_mib()
    matrix = np.concatenate(list(vector_chunks()))  # the float32 reference, made again
    filters = {
        "no filter": SearchFilter(),
        "one year (not_before/not_after)": SearchFilter(
            not_before=datetime.date(2020, 1, 1), not_after=datetime.date(2020, 12, 31)
        ),
        "on this day": SearchFilter(on_this_day=datetime.date(2024, 7, 4)),
        "folder (10% of photos)": SearchFilter(folder="/library/3"),
    }
    latencies: dict[str, list[float]] = {}
    unfiltered: list[list[str]] = []
    for name, flt in filters.items():
        times = []
        for q in queries_:
            t = time.perf_counter()
            hits = reader.search(q, flt, 10, 0)
            times.append(1000 * (time.perf_counter() - t))
            if name == "no filter":
                unfiltered.append([h.photo.path for h in hits])
        latencies[name] = times
    # Checked after the timing: BLAS threads still spinning after a 2 GB product
    # would otherwise slow the next timed search.
    mismatches = 0
    for q, paths in zip(queries_, unfiltered, strict=True):
        top = np.argpartition(-(matrix @ q), 10)[:10]
        expected = sorted(top.tolist(), key=lambda r: -float(matrix[r] @ q))
        mismatches += paths != [f"/library/{r % 10}/{r:07}.jpg" for r in expected]
    numpy_ms = []
    for q in queries_[:20]:
        t = time.perf_counter()
        scores = matrix @ q
        np.argpartition(-scores, 10)[:10]
        numpy_ms.append(1000 * (time.perf_counter() - t))
    reader.close()
    return {
        "count": count,
        "build_s": build_s,
        "load_s": load_s,
        "rss_loaded_mib": rss_loaded,
        "latencies": latencies,
        "numpy_ms": numpy_ms,
        "mismatches": mismatches,
        "queries": queries,
        "db_bytes": Path(db).stat().st_size,
    }


def _bench_vectors(count: int, dim: int, chunk: int) -> Iterator[np.ndarray]:
    import numpy as np

    rng = np.random.default_rng(0)  # the same vectors as search_worker's
    for begin in range(0, count, chunk):
        rows = rng.standard_normal((min(chunk, count - begin), dim), dtype=np.float32)
        yield rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _qdrant_points(begin: int, rows: np.ndarray, days: np.ndarray) -> list:
    """Points as QdrantStore writes them: the named vector and the store's payload."""
    from qdrant_client import models

    from handspring.photos.stores.qdrant.payload import VECTOR, payload_of
    from handspring.photos.stores.records import PhotoRecord

    first_day = datetime.datetime(2000, 1, 1, 12)
    points = []
    for offset, vector in enumerate(rows):
        i = begin + offset
        taken = None if i % 10 == 9 else first_day + datetime.timedelta(days=int(days[i]))
        record = PhotoRecord(
            f"/library/{i % 10}/{i:07}.jpg", 4_000_000, i, f"{i:064x}", 4000, 3000, taken
        )
        payload = payload_of(record, True)
        points.append(
            models.PointStruct(id=i + 1, vector={VECTOR: vector.tolist()}, payload=payload)
        )
    return points


def _qdrant_fill(store: object, count: int, budget_s: float, chunk: int) -> tuple[int, float]:
    """Up to `count` points into `store`'s collection for at most `budget_s`: how many
    went in, and in how long."""
    import numpy as np

    days = np.random.default_rng(1).integers(0, 25 * 365, count)
    start = time.perf_counter()
    written = 0
    for rows in _bench_vectors(count, 512, chunk):
        points = _qdrant_points(written, rows, days)
        store.client.upsert(store.collection, points=points, wait=True)  # type: ignore[attr-defined]
        written += len(points)
        if time.perf_counter() - start > budget_s:
            break
    return written, time.perf_counter() - start


def qdrant_search_worker(count: int, queries: int, folder: str, budget_s: float) -> dict:
    """Qdrant's embedded mode: its write rate to a folder, then search latency over as
    many of the `count` vectors as an in-memory collection takes in `budget_s`. See (c)
    in the module notes."""
    import warnings

    import numpy as np
    from qdrant_client import QdrantClient

    from handspring.photos.stores.qdrant.store import DEFAULT_COLLECTION, QdrantStore
    from handspring.photos.stores.records import ModelInfo, SearchFilter

    warnings.simplefilter("ignore", UserWarning)  # "local mode is not recommended for..."
    dim, info = 512, ModelInfo("bench-random-512", 512, "int8")
    # On disk, as qdrant:///folder: every point is written and committed on its own.
    disk = QdrantStore.local(folder)
    disk.set_model(info)
    disk_written, disk_s = _qdrant_fill(disk, count, min(30.0, budget_s), 500)
    disk.close()
    # In memory: the same engine without the per-point writes, so more points fit.
    store = QdrantStore(QdrantClient(":memory:"), DEFAULT_COLLECTION, ":memory:", False, False)
    store.set_model(info)
    written, build_s = _qdrant_fill(store, count, budget_s, 5_000)
    rss_loaded = _rss_mib()
    rng = np.random.default_rng(2)
    queries_ = rng.standard_normal((queries, dim), dtype=np.float32)
    queries_ /= np.linalg.norm(queries_, axis=1, keepdims=True)
    filters = {
        "no filter": SearchFilter(),
        "one year (not_before/not_after)": SearchFilter(
            not_before=datetime.date(2020, 1, 1), not_after=datetime.date(2020, 12, 31)
        ),
    }
    matrix = np.concatenate(list(_bench_vectors(written, dim, 20_000)))
    latencies: dict[str, list[float]] = {}
    mismatches = 0
    for name, flt in filters.items():
        times = []
        for q in queries_:
            t = time.perf_counter()
            hits = store.search(q, flt, 10, 0)
            times.append(1000 * (time.perf_counter() - t))
            if name == "no filter":
                top = np.argpartition(-(matrix @ q), 10)[:10]
                expected = sorted(top.tolist(), key=lambda r: -float(matrix[r] @ q))
                got = [h.photo.path for h in hits]
                mismatches += got != [f"/library/{r % 10}/{r:07}.jpg" for r in expected]
        latencies[name] = times
    return {
        "count": count,
        "written": written,
        "build_s": build_s,
        "disk_written": disk_written,
        "disk_s": disk_s,
        "rss_loaded_mib": rss_loaded,
        "latencies": latencies,
        "mismatches": mismatches,
        "queries": queries,
    }


# ---------------------------------------------------------------- tables


def _index_table(results: dict[str, dict]) -> str:
    reference = results["sentence-transformers"]
    ref_rate = reference["photos"] / reference["seconds"]
    lines = [
        "| engine | photos | s | photos/s | vs original | model load | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, res in results.items():
        rate = res["photos"] / res["seconds"]
        label = {
            "sentence-transformers": "original: PIL + exif_transpose, sentence-transformers encode",
            "int8": "handspring photos index, int8 (default)",
            "fp32": "handspring photos index, fp32",
        }[name]
        lines.append(
            f"| {label} | {res['photos']} | {res['seconds']:.1f} | {rate:.2f} | "
            f"{rate / ref_rate:.2f}x | {res['load_s']:.1f} s | {res['peak_rss_mib']:.0f} MiB |"
        )
    return "\n".join(lines)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _search_table(res: dict) -> str:
    lines = [
        f"{res['count']:,} vectors x 512, SQLite file {res['db_bytes'] / 2**30:.2f} GiB; "
        f"built in {res['build_s']:.0f} s; first search (load + int8 copy) {res['load_s']:.1f} s; "
        f"process RSS with the search copy loaded {res['rss_loaded_mib']:.0f} MiB; "
        f"top-10 equal to float32 brute force: {res['queries'] - res['mismatches']}/{res['queries']}",
        "",
        "| top 10 | p50 ms | p99 ms |",
        "|---|---:|---:|",
    ]
    for name, times in res["latencies"].items():
        lines.append(f"| {name} | {_percentile(times, 0.5):.1f} | {_percentile(times, 0.99):.1f} |")
    numpy_ms = res["numpy_ms"]
    lines.append(
        f"| numpy float32 matrix @ q + argpartition (reference, no filter) | "
        f"{_percentile(numpy_ms, 0.5):.1f} | {_percentile(numpy_ms, 0.99):.1f} |"
    )
    return "\n".join(lines)


def _qdrant_table(res: dict, sqlite: dict | None) -> str:
    scale = res["count"] / res["written"]
    scaled = scale > 1.001
    disk_rate = res["disk_written"] / res["disk_s"]
    lines = [
        f"Writing to a folder (qdrant:///folder, a commit per point): {disk_rate:.0f} points/s "
        f"({res['disk_written']:,} in {res['disk_s']:.0f} s), so {res['count']:,} would take "
        f"{res['count'] / disk_rate / 3600:.1f} h. Search measured on the same engine in "
        f"memory: {res['written']:,} of {res['count']:,} vectors x 512 in "
        f"{res['build_s']:.0f} s ({res['written'] / res['build_s']:.0f}/s); process RSS "
        f"{res['rss_loaded_mib']:.0f} MiB; top-10 equal to float32 brute force: "
        f"{res['queries'] - res['mismatches']}/{res['queries']}; {res['queries']} queries each.",
    ]
    if scaled:
        lines[0] += (
            f" The embedded mode scores every vector and, with a filter, checks every "
            f"payload in Python, so its latency grows with the count: the columns at "
            f"{res['count']:,} are the measured ones x {scale:.2f}, not measured."
        )
    lines.append("")
    head = "| top 10, Qdrant embedded | p50 ms | p99 ms |"
    if scaled:
        head = (
            f"| top 10, Qdrant embedded | p50 ms at {res['written']:,} | p99 ms at "
            f"{res['written']:,} | p50 ms at {res['count']:,} (scaled) | p99 ms (scaled) |"
        )
    head += " SQLite p50 / p99 ms |"
    lines += [head, "|---" + "|---:" * (head.count("|") - 2) + "|"]
    for name, times in res["latencies"].items():
        p50, p99 = _percentile(times, 0.5), _percentile(times, 0.99)
        beside = "-"
        if sqlite is not None and name in sqlite["latencies"]:
            other = sqlite["latencies"][name]
            beside = f"{_percentile(other, 0.5):.1f} / {_percentile(other, 0.99):.1f}"
        cells = [f"{p50:.0f}", f"{p99:.0f}"]
        if scaled:
            cells += [f"{p50 * scale:.0f}", f"{p99 * scale:.0f}"]
        lines.append(f"| {name} | {' | '.join(cells)} | {beside} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--skip-indexing", action="store_true")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-qdrant", action="store_true")
    parser.add_argument("--qdrant-seconds", type=float, default=300.0)
    parser.add_argument("--qdrant-queries", type=int, default=5)
    parser.add_argument("--worker")
    parser.add_argument("--checkpoint")
    parser.add_argument("--folder")
    parser.add_argument("--db")
    parser.add_argument("--spawned-at", type=float)
    args = parser.parse_args()
    if args.worker == "search":
        print(json.dumps(search_worker(args.vectors, args.queries, args.db)))
        return
    if args.worker == "qdrant-search":
        result = qdrant_search_worker(
            args.vectors, args.qdrant_queries, args.db, args.qdrant_seconds
        )
        print(json.dumps(result))
        return
    if args.worker:
        result = index_worker(args.worker, args.checkpoint, args.folder, args.db)
        print(json.dumps(result))
        return

    from tests.support.checkpoints import VIT_B32, write_sentence_transformers_clip

    with tempfile.TemporaryDirectory(prefix="photos-bench-") as tmp:
        env = dict(os.environ, HANDSPRING_CACHE=str(Path(tmp) / "cache"), HF_HUB_OFFLINE="1")
        if not args.skip_indexing:
            print(f"making {args.photos} 12 MP photos ...", file=sys.stderr)
            photos = Path(tmp) / "photos"
            _make_photos(photos, args.photos)
            checkpoint = write_sentence_transformers_clip(Path(tmp) / "st-clip", VIT_B32, seed=0)
            results: dict[str, dict] = {}
            for engine in ("sentence-transformers", "int8", "fp32"):
                if engine != "sentence-transformers":  # build the graph once, outside the timing
                    code = (
                        "import handspring; handspring.load("
                        f"{str(checkpoint)!r}, modalities=('image',), precision={engine!r})"
                    )
                    subprocess.run([sys.executable, "-c", code], check=True, env=env)
                print(f"indexing with {engine} ...", file=sys.stderr)
                worker_args = [
                    "--worker", engine, "--checkpoint", str(checkpoint), "--folder", str(photos),
                    "--db", str(Path(tmp) / f"index-{engine}.db"),
                ]  # fmt: skip
                results[engine] = spawn_worker(__file__, worker_args, env)
            print(
                f"\nIndexing {args.photos} JPEGs of 4000x3000 (q90), clip-ViT-B-32 random weights, "
                f"{os.cpu_count()} CPUs; model load not in the time\n"
            )
            print(_index_table(results))
        if not args.skip_search:
            print(f"building a store of {args.vectors:,} vectors ...", file=sys.stderr)
            worker_args = [
                "--worker", "search", "--vectors", str(args.vectors),
                "--queries", str(args.queries), "--db", str(Path(tmp) / "million.db"),
            ]  # fmt: skip
            search = spawn_worker(__file__, worker_args, env)
            print("\nSearch latency, SQLite store, exact top 10 (int8 scan + float32 re-scoring)\n")
            print(_search_table(search))
        if not args.skip_qdrant:
            print(
                f"writing up to {args.vectors:,} vectors to Qdrant's embedded mode "
                f"(at most {args.qdrant_seconds:.0f} s) ...",
                file=sys.stderr,
            )
            worker_args = [
                "--worker", "qdrant-search", "--vectors", str(args.vectors),
                "--qdrant-queries", str(args.qdrant_queries),
                "--qdrant-seconds", str(args.qdrant_seconds),
                "--db", str(Path(tmp) / "qdrant"),
            ]  # fmt: skip
            qdrant = spawn_worker(__file__, worker_args, env)
            print("\nSearch latency, Qdrant embedded local mode (qdrant:///folder), exact top 10\n")
            print(_qdrant_table(qdrant, None if args.skip_search else search))


if __name__ == "__main__":
    main()
