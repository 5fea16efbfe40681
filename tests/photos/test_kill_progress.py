"""Indexing under frequent kills: every run, however soon it is killed, keeps its first
commits (the first holds one photo, not a batch), so each kill costs little and the
runs add up; nothing committed is lost or doubled. And the user sees the progress:
a bar on a terminal, plain lines elsewhere, and how much a resumed run found done."""

from __future__ import annotations

import fcntl
import hashlib
import os
import pty
import select
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from handspring.photos.stores.store import open_store
from tests.photos.conftest import PhotoModels
from tests.photos.test_kill_resume import ROOT, _check_complete, _wait_until
from tests.support.photo_library import age, write_photo

PHOTOS = 60
BATCH = 4
COMMIT_EVERY = 8
HOLDS = (1, 2, 3)  # killed runs, each once it has made this many commits of its own
DEADLINE_S = 120  # only a hung indexer gets near this


def _library(root: Path, count: int = PHOTOS) -> dict[str, str]:
    """path -> sha256 of `count` small JPEGs, laid out as test_kill_resume's."""
    out = {}
    for i in range(count):
        path = age(write_photo(root / f"d{i % 7}" / f"p{i:03}.jpg", seed=i, size=(48, 40)), i)
        out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _options(url: str, models: PhotoModels) -> list[str]:
    return [
        "--db", url, "--image-model", str(models.image), "--precision", "fp32",
        "--batch-size", str(BATCH), "--commit-every", str(COMMIT_EVERY),
    ]  # fmt: skip


def _killed_at_commit(root: Path, url: str, models: PhotoModels, commits: int, held: Path) -> None:
    """An index run, SIGKILLed once it has made `commits` commits (see held_commits)."""
    launcher = [sys.executable, "-m", "tests.photos.held_commits", str(commits), str(held)]
    command = [*launcher, str(root), *_options(url, models), "--no-progress"]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        _wait_until(process, held.exists)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=DEADLINE_S)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL


def _indexed(url: str, root: Path) -> dict[str, int]:
    """path -> id of what the store holds, checking that no path is there twice."""
    store = open_store(url, read_only=True)
    try:
        files = list(store.files_under([str(root)]))
    finally:
        store.close()
    paths = [f.path for f in files]
    assert len(paths) == len(set(paths)), "a photo indexed twice"
    assert all(f.has_vector and f.error is None for f in files)
    return {f.path: f.id for f in files}


@pytest.mark.parametrize("kind", ["sqlite", "qdrant"])
def test_every_killed_run_keeps_its_first_commits(
    kind: str, tmp_path: Path, photo_models: PhotoModels
) -> None:
    library = tmp_path / "lib"
    expected = _library(library)
    db_path = tmp_path / "index.db"
    url = f"sqlite://{db_path}" if kind == "sqlite" else f"qdrant://{tmp_path / 'qdrant'}"
    kept: dict[str, int] = {}
    for kill, commits in enumerate(HOLDS):
        _killed_at_commit(library, url, photo_models, commits, tmp_path / f"held{kill}")
        if kind == "sqlite":
            db = sqlite3.connect(db_path)
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            db.close()
        now = _indexed(url, library)
        assert {p: now.get(p) for p in kept} == kept  # committed rows kept, same ids
        added = len(now) - len(kept)
        print(f"{kind}: run {kill + 1}, killed after {commits} commits, added {added}")
        if kill == 0:
            assert added == 1 < BATCH  # the first commit waits for one photo, not a batch
        assert added >= commits  # every commit saved at least one photo
        kept = now

    resumed = subprocess.run(
        [sys.executable, "-m", "handspring.photos.cli", "index", str(library),
         *_options(url, photo_models)],
        capture_output=True, text=True, timeout=DEADLINE_S, cwd=ROOT,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    # Not a terminal: plain lines, the first at this run's first commit (one photo).
    done = len(kept)
    assert f"resuming: {done} of {PHOTOS} photos already indexed, {PHOTOS - done} to go" in (
        resumed.stderr
    )
    first_line = next(line for line in resumed.stderr.splitlines() if line.startswith("indexing: "))
    assert first_line.startswith(f"indexing: {done + 1}/{PHOTOS} photos saved"), first_line
    assert "photos/s" in first_line and "left" in first_line
    assert f"{done} unchanged" in resumed.stderr
    ids = _check_complete(url, expected)
    assert {p: ids[p] for p in kept} == kept


def test_progress_bar_on_a_terminal(tmp_path: Path, photo_models: PhotoModels) -> None:
    count = 20
    library = tmp_path / "lib"
    _library(library, count)
    command = [
        sys.executable, "-m", "handspring.photos.cli", "index", str(library),
        *_options(f"sqlite://{tmp_path / 'index.db'}", photo_models),
    ]  # fmt: skip
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower, cwd=ROOT
    )
    os.close(follower)
    shown = bytearray()
    deadline = time.monotonic() + DEADLINE_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the command ended and closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        assert process.wait(timeout=DEADLINE_S) == 0, shown.decode(errors="replace")
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
    text = shown.decode(errors="replace")
    assert "indexing:" in text and "photos/s" in text, text
    assert f"| 0/{count} [" in text and f"| {count}/{count} [" in text, text
    assert "\r" in text.replace("\r\n", "")  # redrawn in place, not a line per update
    assert f"{count} added" in text
