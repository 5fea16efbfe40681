"""`photos index --ray`: on a real local Ray cluster (a head without CPUs and 2 worker
nodes, as the Kubernetes overlay has it), the index equals a local one vector for
vector; an embedding actor killed mid-run costs nothing; a driver killed with SIGKILL
keeps its commits and the next run completes the index. Also: a plain run never
imports ray, ADDRESS is checked, and loaders starting together build a graph once.

The Ray tests are marked `ray` (select them with -m ray); one cluster serves the module.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handspring.photos.indexing.indexer import Indexer, IndexReport
from handspring.photos.indexing.ray_cluster import RayAddress, parse_ray_address
from handspring.photos.stores.store import WritableStore, open_store
from tests.photos.conftest import PhotoModels, index_options
from tests.photos.test_kill_resume import _sqlite_rows
from tests.support.photo_library import age, build_library, touch_later, write_photo

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 900  # only a hung run gets near this: Ray under 2 CPU hogs took 5 min
BATCH = 4
COMMIT_EVERY = 5
KILLED_AFTER = 24  # photos the driver writes before it is held and killed


# ------------------------------------------------------------------ without Ray


def test_addresses() -> None:
    assert parse_ray_address("auto") == RayAddress("auto")
    assert parse_ray_address("local:4") == RayAddress("local:4", local_cpus=4)
    assert parse_ray_address("ray://photos-ray-head-svc:10001").local_cpus is None
    assert parse_ray_address("10.0.0.5:6379").text == "10.0.0.5:6379"
    for bad in ("local:0", "local:x", "ray://nohost", "somewhere", ""):
        with pytest.raises(ValueError, match=r"expected|local:N"):
            parse_ray_address(bad)


def test_a_bad_address_is_refused_before_any_work(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "handspring.photos.cli", "index", str(tmp_path),
         "--db", str(tmp_path / "i.db"), "--ray", "nowhere"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "--ray" in result.stderr and "expected auto, local:N" in result.stderr
    assert not (tmp_path / "i.db").exists()


def test_a_plain_run_never_imports_ray(tmp_path: Path, photo_models: PhotoModels) -> None:
    for i in range(3):
        age(write_photo(tmp_path / "lib" / f"p{i}.jpg", seed=i), i)
    code = textwrap.dedent(
        f"""
        import sys
        from handspring.photos.cli import photos
        assert "ray" not in sys.modules
        try:
            photos.main(["index", {str(tmp_path / "lib")!r}, "--db", {str(tmp_path / "i.db")!r},
                         "--image-model", {str(photo_models.image)!r},
                         "--precision", "fp32", "--no-progress"])
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
        print(sorted(m for m in sys.modules if m == "ray" or m.startswith("ray.")))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert "3 added" in result.stderr
    assert result.stdout.strip() == "[]"


def test_loaders_starting_together_build_a_graph_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two loaders of one graph: the second waits on the build lock while the first
    builds (its build waits until the second is at the lock), then loads that graph."""
    import fcntl

    import onnx
    from onnx import TensorProto, helper

    from handspring.runtime import graph_cache

    monkeypatch.setenv("HANDSPRING_CACHE", str(tmp_path / "cache"))
    second_at_lock = threading.Event()
    builds: list[str] = []
    flock = fcntl.flock

    def flock_noting_the_second(handle: Any, operation: int) -> None:
        if threading.current_thread().name == "second":
            second_at_lock.set()
        flock(handle, operation)

    monkeypatch.setattr(fcntl, "flock", flock_noting_the_second)

    def build() -> onnx.ModelProto:
        builds.append(threading.current_thread().name)
        if threading.current_thread().name == "first":
            second.start()
            assert second_at_lock.wait(DEADLINE_S)
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
        return helper.make_model(graph)

    results: dict[str, tuple[Path, bool]] = {}

    def load() -> None:
        results[threading.current_thread().name] = graph_cache.cached_graph("k" * 32, build)

    second = threading.Thread(target=load, name="second")
    first = threading.Thread(target=load, name="first")
    first.start()
    first.join(DEADLINE_S)
    second.join(DEADLINE_S)
    assert builds == ["first"]
    assert results["first"][1] is True and results["second"][1] is False
    assert results["first"][0] == results["second"][0]
    assert results["first"][0].is_file()
    assert not list((tmp_path / "cache" / "graphs").glob(".*"))  # no lock or staging left


# ------------------------------------------------------------------ the cluster


@dataclass(frozen=True)
class RayCluster:
    address: str  # the GCS address (the driver in this process is connected to it)
    client: str  # ray://127.0.0.1:port, as a driver outside the cluster uses it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    port = _free_port()
    saved = dict(os.environ)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,  # the head only coordinates, as in deploy/k8s
                "include_dashboard": False,
                "ray_client_server_port": port,
            },
        )
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield RayCluster(cluster.address, f"ray://127.0.0.1:{port}")
    finally:
        ray.shutdown()
        cluster.shutdown()


def _ray_index(
    store: WritableStore,
    models: PhotoModels,
    cluster: RayCluster,
    root: Path,
    actor_class: type | None = None,
    **changes: object,
) -> tuple[IndexReport, Any]:
    from handspring.photos.indexing.ray_pipeline import RayIndexer, RayOptions

    extra = {} if actor_class is None else {"actor_class": actor_class}
    indexer = RayIndexer(
        store,
        index_options(models, batch_size=BATCH, **changes),
        RayOptions(RayAddress(cluster.address)),
        **extra,
    )
    return indexer.run([str(root)]), indexer.stats


def _local_index(url: str, models: PhotoModels, root: Path) -> IndexReport:
    store = open_store(url)
    try:
        return Indexer(store, index_options(models, batch_size=BATCH)).run([str(root)])
    finally:
        store.close()


def _max_abs_difference(a: WritableStore, b: WritableStore, root: Path) -> float:
    """The two indexes hold the same files, alike; the largest difference of a vector."""
    left = {f.path: f for f in a.files_under([str(root)])}
    right = {f.path: f for f in b.files_under([str(root)])}
    assert left.keys() == right.keys()
    worst = 0.0
    for path, f in left.items():
        g = right[path]
        assert (f.size, f.mtime_ns, f.sha256, f.has_vector, f.error) == (
            g.size, g.mtime_ns, g.sha256, g.has_vector, g.error,
        ), path  # fmt: skip
        pa, pb = a.get(f.id), b.get(g.id)
        assert pa is not None and pb is not None
        assert (pa.taken_at, pa.width, pa.height, pa.gps) == (
            pb.taken_at, pb.width, pb.height, pb.gps,
        ), path  # fmt: skip
        if f.has_vector:
            va, vb = a.vector(f.id), b.vector(g.id)
            assert va is not None and vb is not None
            worst = max(worst, float(np.abs(va - vb).max()))
    return worst


@pytest.mark.ray
def test_the_index_equals_a_local_one(
    ray_cluster: RayCluster, photo_models: PhotoModels, tmp_path: Path
) -> None:
    library = build_library(tmp_path / "photos")
    # Names that are not UTF-8 cross Arrow's UTF-8 strings: a photo, and a damaged file
    # whose error names it.
    odd = library.root / os.fsdecode(b"odd-\xe9t\xe9")
    age(write_photo(odd / os.fsdecode(b"caf\xe9.jpg"), seed=91), 7200)
    whole = age(write_photo(odd / "whole.jpg", seed=92), 7200)
    cut = odd / os.fsdecode(b"cut-\xff.jpg")
    cut.write_bytes(whole.read_bytes()[:300])
    age(cut, 7200)  # not "racy" (see scanning/reading.py): recorded alike by both runs
    local_report = _local_index(f"sqlite://{tmp_path / 'local.db'}", photo_models, library.root)
    assert any("cut-" in path for path, _ in local_report.failed)
    store = open_store(f"sqlite://{tmp_path / 'ray.db'}")
    local = open_store(f"sqlite://{tmp_path / 'local.db'}", read_only=True)
    try:
        report, stats = _ray_index(store, photo_models, ray_cluster, library.root)
        assert (report.added, sorted(report.failed)) == (
            local_report.added,
            sorted(local_report.failed),
        )  # bad files recorded with the same reasons
        assert store.model() == local.model()
        worst = _max_abs_difference(local, store, library.root)
        print(f"\nRay vs local index: {report.added} vectors, max abs difference {worst:.3g}")
        assert worst == 0.0
        assert stats.embedded == report.added and len(stats.nodes) >= 1
        assert not stats.graphs_built  # the workers load the graph the local run built

        # Incremental: a moved and a touched file keep their vectors without the model;
        # only the changed one is embedded again.
        moved_from = library.path("2021/IMG_20210704_101500.jpg")
        moved_to = library.root / "misc" / "IMG_20200101_000000.jpg"
        old_id = store.get_by_path(str(moved_from)).id  # type: ignore[union-attr]
        old_vector = store.vector(old_id)
        moved_from.rename(moved_to)
        touch_later(library.path("misc/old.bmp"))
        changed = library.path("2023/beach.jpg")
        write_photo(changed, seed=77)
        age(changed, 3600)
        again, stats = _ray_index(store, photo_models, ray_cluster, library.root)
        assert (again.moved, again.touched, again.updated, again.added) == (1, 1, 1, 0)
        assert stats.embedded == 1 and stats.passes == 1
        moved = store.get_by_path(str(moved_to))
        assert moved is not None and moved.id == old_id
        np.testing.assert_array_equal(store.vector(old_id), old_vector)
    finally:
        store.close()
        local.close()


def _small_library(root: Path, count: int) -> dict[str, str]:
    """path -> sha256 of `count` small JPEGs."""
    out = {}
    for i in range(count):
        path = age(write_photo(root / f"d{i % 5}" / f"p{i:03}.jpg", seed=i, size=(48, 40)), i)
        out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _check_complete(store: WritableStore, expected: dict[str, str], root: Path) -> None:
    """Every photo once, with its content's hash and a vector."""
    files = list(store.files_under([str(root)]))
    paths = [f.path for f in files]
    assert len(paths) == len(set(paths)) == len(expected)  # none lost, none twice
    assert {f.path: f.sha256 for f in files} == expected
    assert all(f.has_vector and f.error is None for f in files)
    assert store.count() == len(expected)


def held_actor(after_batches: int, claim: Path, held: Path) -> type:
    """An EmbedActor that, in the run's first actor to reach its batch `after_batches`
    + 1, writes its pid to `held` and waits there, holding that batch, for a signal. The
    actor Ray starts in its place goes on (the claim is taken)."""
    from handspring.photos.indexing.ray_workers import EmbedActor

    class HeldEmbedActor(EmbedActor):
        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            if self.batches == after_batches:
                try:
                    os.close(os.open(claim, os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    pass
                else:
                    held.with_suffix(".tmp").write_text(str(os.getpid()))
                    held.with_suffix(".tmp").rename(held)
                    while True:  # until a signal ends this process
                        time.sleep(0.05)
            return super().__call__(batch)

    return HeldEmbedActor


def _wait_for(done: Any, alive: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        assert alive(), f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {DEADLINE_S} s"
        time.sleep(0.02)


@pytest.mark.ray
def test_an_actor_killed_mid_run_costs_nothing(
    ray_cluster: RayCluster, photo_models: PhotoModels, tmp_path: Path
) -> None:
    expected = _small_library(tmp_path / "lib", 48)
    claim, held = tmp_path / "claim", tmp_path / "held"
    url = f"qdrant://{tmp_path / 'ray'}"
    store = open_store(url)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["report"], outcome["stats"] = _ray_index(
                store, photo_models, ray_cluster, tmp_path / "lib", held_actor(2, claim, held)
            )
        except BaseException as exc:
            outcome["error"] = exc

    driver = threading.Thread(target=run)
    driver.start()
    try:
        _wait_for(held.exists, driver.is_alive, "an actor held mid-run")
        os.kill(int(held.read_text()), signal.SIGKILL)  # holding a batch, with more queued
    finally:
        driver.join(DEADLINE_S)
        store.close()
    assert not driver.is_alive()
    assert "error" not in outcome, outcome.get("error")
    report = outcome["report"]
    assert (report.added, report.failed, report.vanished) == (len(expected), [], 0)
    # Both indexes read as a search would, from disk: Qdrant's embedded mode normalises
    # cosine vectors again as it loads them, which can move one by an ulp.
    _local_index(f"qdrant://{tmp_path / 'local'}", photo_models, tmp_path / "lib")
    with open_store(url, read_only=True) as ray_index:
        _check_complete(ray_index, expected, tmp_path / "lib")
        with open_store(f"qdrant://{tmp_path / 'local'}", read_only=True) as local:
            worst = _max_abs_difference(local, ray_index, tmp_path / "lib")
    print(f"\nactor killed mid-run: {len(expected)} photos, 0 lost, 0 twice, max abs {worst:.3g}")
    assert worst == 0.0


def _index_args(root: Path, url: str, models: PhotoModels, address: str) -> list[str]:
    return [
        "index", str(root), "--db", url, "--image-model", str(models.image),
        "--precision", "fp32", "--commit-every", str(COMMIT_EVERY),
        "--batch-size", str(BATCH), "--no-progress", "--ray", address,
    ]  # fmt: skip


@pytest.mark.ray
def test_a_driver_killed_with_sigkill_resumes(
    ray_cluster: RayCluster, photo_models: PhotoModels, tmp_path: Path
) -> None:
    """Through Ray Client (ray://), as the Kubernetes CronJob runs it."""
    expected = _small_library(tmp_path / "lib", 60)
    db_path = tmp_path / "index.db"
    url = f"sqlite://{db_path}"
    held = tmp_path / "held"
    args = _index_args(tmp_path / "lib", url, photo_models, ray_cluster.client)
    launcher = [sys.executable, "-m", "tests.photos.held_index", str(KILLED_AFTER), str(held)]
    # A killed client's work is given back after this grace period (Ray's default: 30 s).
    env = dict(os.environ, RAY_CLIENT_RECONNECT_GRACE_PERIOD="2")
    process = subprocess.Popen(
        [*launcher, *args[1:]], stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
    )
    try:
        _wait_for(held.exists, lambda: process.poll() is None, "the driver held mid-run")
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None and not held.exists():
            process.kill()
        _, stderr = process.communicate(timeout=DEADLINE_S)
        print(stderr[-3000:])
    assert process.returncode == -signal.SIGKILL, stderr
    committed = _sqlite_rows(db_path)
    # What was written since the last commit is lost, no more.
    assert KILLED_AFTER - COMMIT_EVERY <= committed < KILLED_AFTER
    db = sqlite3.connect(db_path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    before = dict(db.execute("SELECT path, id FROM photos").fetchall())
    db.close()

    resumed = subprocess.run(
        [sys.executable, "-m", "handspring.photos.cli", *args],
        capture_output=True, text=True, timeout=DEADLINE_S, cwd=ROOT,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(before)} unchanged" in resumed.stderr
    assert f"{len(expected) - len(before)} added" in resumed.stderr
    assert "ray: " in resumed.stderr  # the cluster line and the run's line
    store = open_store(url, read_only=True)
    try:
        _check_complete(store, expected, tmp_path / "lib")
        ids = {f.path: f.id for f in store.files_under([str(tmp_path / "lib")])}
    finally:
        store.close()
    assert {p: ids[p] for p in before} == before  # committed rows kept as they were
