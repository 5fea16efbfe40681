"""An indexer killed mid-run (SIGKILL) or interrupted (Ctrl-C) loses nothing it
committed, and the next run completes the index: every photo exactly once."""

from __future__ import annotations

import hashlib
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from handspring.photos.store import open_store
from tests.photos.conftest import PhotoModels
from tests.support.photo_library import age, write_photo

PHOTOS = 300
DEADLINE_S = 120  # only a hung indexer gets near this


def _library(root: Path) -> dict[str, str]:
    """path -> sha256 of PHOTOS small JPEGs."""
    out = {}
    for i in range(PHOTOS):
        path = age(write_photo(root / f"d{i % 7}" / f"p{i:03}.jpg", seed=i, size=(48, 40)), i)
        out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _index_command(root: Path, url: str, models: PhotoModels, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "handspring.photos.cli", "index", str(root),
        "--db", url, "--image-model", str(models.image), "--precision", "fp32",
        "--commit-every", "5", "--batch-size", "4", *extra,
    ]  # fmt: skip


def _sqlite_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return int(db.execute("SELECT count(*) FROM photos").fetchone()[0])
        finally:
            db.close()
    except sqlite3.OperationalError:  # created but no schema yet
        return 0


def _wait_until(process: subprocess.Popen, done) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        if process.poll() is not None:
            pytest.fail(
                f"the indexer ended (status {process.returncode}) before the test could stop it"
            )
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the indexer made no progress")
        time.sleep(0.01)


def _check_complete(url: str, expected: dict[str, str]) -> dict[str, int]:
    """Every photo once, with its content's hash and a vector; returns path -> id."""
    store = open_store(url, read_only=True)
    try:
        roots = sorted({str(Path(p).parent.parent) for p in expected})
        files = list(store.files_under(roots))
        paths = [f.path for f in files]
        assert len(paths) == len(set(paths)) == len(expected)  # none lost, none twice
        assert {f.path: f.sha256 for f in files} == expected
        assert all(f.has_vector and f.error is None for f in files)
        assert store.count() == len(expected)
        return {f.path: f.id for f in files}
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["sqlite", "qdrant"])
def test_sigkill_then_resume(kind: str, tmp_path: Path, photo_models: PhotoModels) -> None:
    expected = _library(tmp_path / "lib")
    db_path = tmp_path / "index.db"
    url = f"sqlite://{db_path}" if kind == "sqlite" else f"qdrant://{tmp_path / 'qdrant'}"
    extra = ("--progress",) if kind == "qdrant" else ("--no-progress",)
    process = subprocess.Popen(
        _index_command(tmp_path / "lib", url, photo_models, *extra), stderr=subprocess.PIPE
    )
    if kind == "sqlite":
        _wait_until(process, lambda: _sqlite_rows(db_path) >= 20)
    else:
        # The embedded Qdrant folder is locked by its one client: watch the progress bar.
        seen = bytearray()

        def collect() -> None:
            while chunk := process.stderr.read1(4096):  # type: ignore[union-attr]
                seen.extend(chunk)

        threading.Thread(target=collect, daemon=True).start()

        def progressed() -> bool:
            counts = [int(n) for n in re.findall(rb"\| *(\d+)/300", bytes(seen))]
            return bool(counts) and max(counts) >= 20

        _wait_until(process, progressed)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    if kind == "sqlite":
        committed = _sqlite_rows(db_path)
        assert 20 <= committed < PHOTOS  # killed mid-run
        db = sqlite3.connect(db_path)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        before = dict(db.execute("SELECT path, id FROM photos").fetchall())
        db.close()

    resumed = _resume(tmp_path / "lib", url, photo_models)
    ids = _check_complete(url, expected)
    if kind == "sqlite":
        assert {p: ids[p] for p in before} == before  # committed rows kept as they were
        assert f"{len(before)} unchanged" in resumed.stderr


def _resume(library: Path, url: str, photo_models: PhotoModels) -> subprocess.CompletedProcess:
    resumed = subprocess.run(
        _index_command(library, url, photo_models, "--no-progress"),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert resumed.returncode == 0, resumed.stderr
    return resumed


def test_ctrl_c_saves_the_work_done(tmp_path: Path, photo_models: PhotoModels) -> None:
    expected = _library(tmp_path / "lib")
    db_path = tmp_path / "index.db"
    url = f"sqlite://{db_path}"
    process = subprocess.Popen(
        _index_command(tmp_path / "lib", url, photo_models, "--no-progress"),
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_until(process, lambda: _sqlite_rows(db_path) >= 12)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=DEADLINE_S)
    assert process.returncode == 130, stderr
    assert "interrupted: the work done so far is saved" in stderr
    saved = _sqlite_rows(db_path)
    assert 12 <= saved < PHOTOS
    resumed = _resume(tmp_path / "lib", url, photo_models)
    assert f"{PHOTOS - saved} added" in resumed.stderr
    _check_complete(url, expected)
