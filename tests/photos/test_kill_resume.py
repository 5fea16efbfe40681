"""An indexer killed mid-run (SIGKILL) or interrupted (Ctrl-C) loses nothing it
committed, and the next run completes the index: every photo exactly once."""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from handspring.photos.stores.store import open_store
from tests.photos.conftest import PhotoModels
from tests.support.photo_library import age, write_photo

PHOTOS = 300
DEADLINE_S = 120  # only a hung indexer gets near this
COMMIT_EVERY = 5
# Photos written before the indexer is held and signalled: mid-run, and not at a commit.
KILLED_AFTER = 24
INTERRUPTED_AFTER = 14
ROOT = Path(__file__).resolve().parents[2]


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
        "--commit-every", str(COMMIT_EVERY), "--batch-size", "4", *extra,
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


def _held_index(
    root: Path, url: str, models: PhotoModels, hold_after: int, held: Path
) -> subprocess.Popen:
    """The index command, held once `hold_after` photos are written (see held_index): the
    signal then comes mid-run however fast or slow the machine is."""
    _, _, _, command, *args = _index_command(root, url, models, "--no-progress")
    assert command == "index"
    launcher = [sys.executable, "-m", "tests.photos.held_index", str(hold_after), str(held)]
    return subprocess.Popen([*launcher, *args], stderr=subprocess.PIPE, text=True, cwd=ROOT)


@pytest.mark.parametrize("kind", ["sqlite", "qdrant"])
def test_sigkill_then_resume(kind: str, tmp_path: Path, photo_models: PhotoModels) -> None:
    expected = _library(tmp_path / "lib")
    db_path = tmp_path / "index.db"
    url = f"sqlite://{db_path}" if kind == "sqlite" else f"qdrant://{tmp_path / 'qdrant'}"
    held = tmp_path / "held"
    process = _held_index(tmp_path / "lib", url, photo_models, KILLED_AFTER, held)
    try:
        _wait_until(process, held.exists)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=DEADLINE_S)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    if kind == "sqlite":
        committed = _sqlite_rows(db_path)
        # Killed mid-run: what was written since the last commit is lost, no more.
        assert KILLED_AFTER - COMMIT_EVERY <= committed < KILLED_AFTER
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
    held = tmp_path / "held"
    process = _held_index(tmp_path / "lib", url, photo_models, INTERRUPTED_AFTER, held)
    try:
        _wait_until(process, held.exists)
        assert _sqlite_rows(db_path) < INTERRUPTED_AFTER  # the last photo is not committed
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=DEADLINE_S)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted: the work done so far is saved" in stderr
    saved = _sqlite_rows(db_path)
    assert saved == INTERRUPTED_AFTER  # committed or not, every photo written was kept
    store = open_store(url, read_only=True)
    try:
        last = store.stats().last_run
    finally:
        store.close()
    assert last is not None and not last.completed and last.added == saved
    resumed = _resume(tmp_path / "lib", url, photo_models)
    assert f"{PHOTOS - saved} added" in resumed.stderr
    _check_complete(url, expected)
