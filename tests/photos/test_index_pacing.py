"""A run's batches and commits start small and grow to the sizes asked for
(photos/pacing.py), and its progress reads right (photos/index_progress.py)."""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from handspring.embedder import Model
from handspring.photos.indexing.index_progress import ProgressBar, ProgressLines
from handspring.photos.indexing.indexer import Indexer
from handspring.photos.indexing.pacing import CommitPace, embed_in_growing_batches, growing
from handspring.photos.output import _last_run
from handspring.photos.stores.browsing import LastRun
from handspring.photos.stores.sqlite.store import SqliteStore
from tests.photos.conftest import PhotoModels, index_options
from tests.support.photo_library import age, encoded_photo, write_photo


@dataclass
class Clock:
    """Time that moves only when the test says so."""

    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def test_growing_sizes() -> None:
    assert list(itertools.islice(growing(16), 7)) == [1, 2, 4, 8, 16, 16, 16]
    assert list(itertools.islice(growing(12), 6)) == [1, 2, 4, 8, 12, 12]
    assert list(itertools.islice(growing(1), 2)) == [1, 1]
    with pytest.raises(ValueError, match="must be >= 1, got 0"):
        next(growing(0))


def test_commit_pace_grows_then_counts_and_times() -> None:
    clock = Clock()
    pace = CommitPace(every=8, seconds=5.0, clock=clock)
    commits_after = []
    for photo in range(1, 41):
        if pace.wrote():
            pace.committed()
            commits_after.append(photo)
    assert commits_after == [1, 3, 7, 15, 23, 31, 39]
    pace.wrote()
    clock.now += 5.0  # a slow photo: the time bound commits before the count
    assert pace.wrote()


def test_growing_batches_give_the_same_vectors(image_model: Model) -> None:
    images = [encoded_photo(i) for i in range(40)]
    parts = list(embed_in_growing_batches(image_model, images, batch_size=16))
    assert [len(p) for p in parts] == [1, 2, 4, 8, 16, 9]
    got = np.concatenate([p.embeddings for p in parts])
    expected = image_model.embed_images(images, batch_size=16).embeddings
    difference = float(np.abs(got - expected).max())
    print(f"growing batches vs batches of 16: max abs difference {difference:.2e}")
    assert difference < 1e-5


@dataclass
class CommitsSeen:
    """Photos searchable after each commit, as another reader sees them."""

    path: Path
    counts: list[int] = field(default_factory=list)

    def record(self) -> None:
        reader = SqliteStore(self.path, read_only=True)
        try:
            self.counts.append(reader.count())
        finally:
            reader.close()


class ObservedStore(SqliteStore):
    """A real SQLite index that notes what each of its commits made visible."""

    def __init__(self, path: Path, seen: CommitsSeen) -> None:
        super().__init__(path)
        self.seen = seen

    def commit(self) -> None:
        super().commit()
        self.seen.record()


def test_first_commit_holds_one_photo_then_commits_grow(
    tmp_path: Path, photo_models: PhotoModels, image_model: Model
) -> None:
    for i in range(40):
        age(write_photo(tmp_path / "lib" / f"p{i:02}.jpg", seed=i), i)
    seen = CommitsSeen(tmp_path / "index.db")
    store = ObservedStore(seen.path, seen)
    lines = io.StringIO()
    # No time bound, so the commit points depend on counts alone.
    options = index_options(photo_models, batch_size=8, commit_every=16, commit_seconds=1e9)
    try:
        report = Indexer(store, options, image_model, ProgressLines(lines, every_s=0.0)).run(
            [str(tmp_path / "lib")]
        )
    finally:
        store.close()
    assert report.added == 40
    assert seen.counts == [1, 3, 7, 15, 31, 40]
    shown = [line.split(" photos saved")[0] for line in lines.getvalue().splitlines()]
    assert shown == [f"indexing: {c}/40" for c in (1, 3, 7, 15, 31, 40)]


def test_progress_lines_at_most_every_interval() -> None:
    clock = Clock()
    out = io.StringIO()
    progress = ProgressLines(out, every_s=10.0, clock=clock)
    progress.saved(3)  # before start (a commit of broken links): nothing to show
    progress.start(total=100, indexed=40)
    clock.now = 2.0
    progress.saved(1)
    clock.now = 5.0
    progress.saved(4)  # within 10 s of the last line
    clock.now = 12.0
    progress.saved(30)
    progress.close()
    assert out.getvalue().splitlines() == [
        "resuming: 40 of 100 photos already indexed, 60 to go",
        "indexing: 41/100 photos saved (41%), 0.5 photos/s, 01:58 left",
        "indexing: 70/100 photos saved (70%), 2.5 photos/s, 00:12 left",
    ]


def test_progress_bar_counts_the_photos_already_indexed() -> None:
    out = io.StringIO()
    bar = ProgressBar(out)
    bar.start(total=10, indexed=4)
    bar.saved(3)
    bar.saved(6)
    bar.close()
    text = out.getvalue()
    assert text.startswith("resuming: 4 of 10 photos already indexed, 6 to go\n")
    assert "| 4/10 [" in text and "| 10/10 [" in text and "photos/s" in text


def test_progress_lines_leave_the_model_load_out_of_the_rate() -> None:
    clock = Clock()
    out = io.StringIO()
    progress = ProgressLines(out, every_s=10.0, clock=clock)
    progress.start(total=100, indexed=0)
    progress.model_loading()
    clock.now = 90.0  # a slow first load: a graph build
    progress.model_loaded()
    clock.now = 100.0
    progress.saved(10)
    assert out.getvalue().splitlines() == [
        "loading the image model...",
        "indexing: 10/100 photos saved (10%), 1.0 photos/s, 01:30 left",
    ]


def test_progress_bar_says_the_model_is_loading() -> None:
    out = io.StringIO()
    bar = ProgressBar(out)
    bar.start(total=10, indexed=2)
    bar.model_loading()
    loading = out.getvalue()
    bar.model_loaded()
    bar.saved(8)
    bar.close()
    assert "indexing (loading the image model):" in loading and "| 2/10 [" in loading
    after = out.getvalue()[len(loading) :]
    assert "indexing: " in after and "| 10/10 [" in after


def test_status_says_what_the_last_run_did() -> None:
    run = LastRun(finished=1000.0, seconds=65.0, added=12, updated=2, failed=3, unchanged=40)
    assert _last_run(run, now=1000.0 + 120).endswith(
        "(2 minutes ago), took 01:05: 12 added, 2 updated, 3 unreadable, 40 unchanged"
    )
    stopped = LastRun(finished=1000.0, seconds=3.0, completed=False)
    assert _last_run(stopped, now=1000.0).endswith(
        "(just now), took 00:03: nothing to do (interrupted; what it saved is kept)"
    )
    assert _last_run(None, now=0.0) == "none recorded"
