"""Indexing end to end on libraries the tests make, into both stores: what is
recorded for each photo, incremental runs (unchanged, changed, touched, moved,
copied, deleted, broken), the deletion safety rules, and files that change
while a run reads them."""

from __future__ import annotations

import datetime
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from handspring.embedder import Model
from handspring.photos.indexing.indexer import Indexer
from handspring.photos.scanning.scan import scan_roots
from handspring.photos.stores.store import StoreError, WritableStore, open_store
from tests.photos.conftest import PhotoModels, index_options, run_index
from tests.support.photo_library import (
    Library,
    age,
    build_library,
    scan_unprivileged,
    shared_tmp,
    touch_later,
    write_photo,
)


@pytest.fixture
def store(empty_store: WritableStore) -> WritableStore:
    return empty_store


@pytest.fixture
def library(tmp_path: Path) -> Library:
    return build_library(tmp_path / "photos")


_run = run_index


def _embedding(model: Model, path: Path) -> np.ndarray:
    result = model.embed_images([str(path)])
    assert not result.errors
    return result.embeddings[0]


def _indexed(store: WritableStore, path: Path):
    photo = store.get_by_path(str(path))
    assert photo is not None, f"{path} is not indexed"
    return photo


def test_first_run_records_every_photo(
    store: WritableStore, library: Library, photo_models: PhotoModels, image_model: Model
) -> None:
    report = _run(store, photo_models, image_model, [library.root])
    assert (report.added, report.unchanged, report.deleted) == (len(library.photos), 0, 0)
    assert store.count() == len(library.photos)
    model = store.model()
    assert model is not None and (model.name, model.dim) == (str(photo_models.image), 40)
    for name, spec in library.photos.items():
        photo = _indexed(store, spec.path)
        data = spec.path.read_bytes()
        assert photo.sha256 == hashlib.sha256(data).hexdigest(), name
        assert (photo.size, photo.mtime) == (len(data), pytest.approx(spec.path.stat().st_mtime))
        assert photo.taken_at == spec.taken_at, name
        assert (photo.width, photo.height) == spec.displayed, name
        if spec.gps:
            assert photo.gps == pytest.approx(spec.gps, abs=1e-4), name
        else:
            assert photo.gps is None, name
        assert photo.error is None
        # The vector is the model's own embedding of the file, EXIF rotation included.
        vector = store.vector(photo.id)
        np.testing.assert_allclose(vector, _embedding(image_model, spec.path), atol=1e-6)
    assert _indexed(store, library.path("misc/all_dates.jpg")).exif["Make"] == "Acme"
    failed = dict(report.failed)
    assert sorted(failed) == sorted(str(library.root / name) for name in library.broken)
    for name, word in library.broken.items():
        photo = _indexed(store, library.root / name)
        assert word in (photo.error or ""), (name, photo.error)
        assert store.vector(photo.id) is None
    indexed = {f.path for f in store.files_under([str(library.root)])}
    assert not indexed & {str(p) for p in library.skipped}
    assert report.scan.repeated_folders == [str(library.root / "2023" / "loop")]


def test_incremental_runs(
    store: WritableStore,
    library: Library,
    photo_models: PhotoModels,
    image_model: Model,
    tmp_path: Path,
) -> None:
    _run(store, photo_models, image_model, [library.root])
    before = {f.path: f for f in store.files_under([str(library.root)])}

    # Nothing changed: nothing is read, and the model is never even loaded.
    idle = Indexer(store, index_options(photo_models), model=None)
    report = idle.run([str(library.root)])
    assert report.unchanged == len(library.photos) + len(library.broken)
    assert report.processed == 0 and idle._model is None

    changed = library.path("2023/beach.jpg")
    write_photo(changed, seed=77)
    age(changed, 3600)
    touched = library.path("misc/old.bmp")
    touch_later(touched)
    moved_from = library.path("2021/IMG_20210704_101500.jpg")
    moved_to = library.root / "misc" / "IMG_20200101_000000.jpg"
    moved_from.rename(moved_to)
    copy = library.root / "copies" / "scan copy.tiff"
    copy.parent.mkdir()
    shutil.copy2(library.path("misc/scan.tiff"), copy)
    deleted = library.path("misc/undated.gif")
    deleted.unlink()
    fixed = library.root / "broken" / "notes.jpg"
    write_photo(fixed, seed=78)
    age(fixed, 7200)

    report = _run(store, photo_models, image_model, [library.root])
    assert (report.updated, report.touched, report.moved, report.reused, report.deleted) == (
        2,  # beach.jpg, and notes.jpg now that it is a photo
        1,
        1,
        1,
        1,
    )
    assert report.added == 0 and report.failed == []  # broken files left alone until they change
    after = {f.path: f for f in store.files_under([str(library.root)])}

    beach = _indexed(store, changed)
    assert beach.id == before[str(changed)].id  # same photo, new content
    assert beach.taken_at is None  # the new file has no EXIF date and no date in its name
    np.testing.assert_allclose(store.vector(beach.id), _embedding(image_model, changed), atol=1e-6)

    assert after[str(touched)].mtime_ns == touched.stat().st_mtime_ns
    assert after[str(touched)].id == before[str(touched)].id

    moved = _indexed(store, moved_to)
    assert moved.id == before[str(moved_from)].id  # the vector went with it
    assert moved.taken_at == datetime.datetime(2020, 1, 1)  # from its new name
    np.testing.assert_allclose(store.vector(moved.id), _embedding(image_model, moved_to), atol=1e-6)

    copied = _indexed(store, copy)
    original = _indexed(store, library.path("misc/scan.tiff"))
    assert copied.id != original.id and copied.sha256 == original.sha256
    np.testing.assert_allclose(store.vector(copied.id), store.vector(original.id), atol=1e-6)

    assert str(deleted) not in after and str(moved_from) not in after
    assert _indexed(store, fixed).error is None

    # Broken files are read again when asked to.
    retry = _run(store, photo_models, image_model, [library.root], retry_errors=True)
    assert sorted(p for p, _ in retry.failed) == sorted(
        str(library.root / n) for n in library.broken if n != "broken/notes.jpg"
    )


def test_missing_or_empty_roots_delete_nothing(
    library: Library, photo_models: PhotoModels, image_model: Model, tmp_path: Path
) -> None:
    store = open_store(str(tmp_path / "i.db"))
    try:
        _run(store, photo_models, image_model, [library.root])
        total = len(list(store.files_under([str(library.root)])))
        away = library.root.rename(tmp_path / "unmounted")

        report = _run(store, photo_models, image_model, [library.root])
        assert report.scan.missing_roots == [str(library.root)]
        assert report.deleted == 0 and "missing" in report.refused_roots[0][1]
        library.root.mkdir()  # an empty mount point
        report = _run(store, photo_models, image_model, [library.root])
        assert report.deleted == 0 and "is empty" in report.refused_roots[0][1]
        assert len(list(store.files_under([str(library.root)]))) == total

        report = _run(store, photo_models, image_model, [library.root], allow_empty_root=True)
        assert report.deleted == total and not list(store.files_under([str(library.root)]))
        assert away.is_dir()
    finally:
        store.close()


def test_photos_under_an_unlistable_folder_are_kept(
    photo_models: PhotoModels, image_model: Model, tmp_path: Path
) -> None:
    with shared_tmp() as shared:
        root = shared / "lib"
        for i, name in enumerate(["open/a.jpg", "locked/b.jpg", "locked/deeper/c.jpg"]):
            age(write_photo(root / name, seed=i))
        store = open_store(str(tmp_path / "i.db"))
        try:
            _run(store, photo_models, image_model, [root])
            (root / "locked").chmod(0o000)
            scan = scan_unprivileged([str(root)])
            assert [folder for folder, _ in scan.unreadable] == [str(root / "locked")]
            indexer = Indexer(store, index_options(photo_models), model=image_model)
            report = indexer.index_scanned(scan)
            assert report.deleted == 0
            assert len(list(store.files_under([str(root)]))) == 3
        finally:
            store.close()


def test_a_file_changed_between_scan_and_read(
    store: WritableStore, photo_models: PhotoModels, image_model: Model, tmp_path: Path
) -> None:
    root = tmp_path / "lib"
    path = age(write_photo(root / "a.jpg", seed=1))
    age(write_photo(root / "b.jpg", seed=2))
    scan = scan_roots([str(root)])
    write_photo(path, seed=3, size=(80, 60))  # after the scan saw the old file
    age(path, 60)
    report = Indexer(store, index_options(photo_models), model=image_model).index_scanned(scan)
    assert report.added == 2
    photo = _indexed(store, path)
    data = path.read_bytes()
    assert (photo.sha256, photo.size, photo.width) == (
        hashlib.sha256(data).hexdigest(),
        len(data),
        80,
    )
    np.testing.assert_allclose(store.vector(photo.id), _embedding(image_model, path), atol=1e-6)
    # The next run finds it as recorded: nothing to do.
    assert _run(store, photo_models, image_model, [root]).unchanged == 2


_GROWER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
print("ready", flush=True)
for _ in range(400):  # a photo still being copied in: 64 KiB a millisecond, 25 MiB at most
    os.write(fd, bytes(65536))
    time.sleep(0.001)
"""


def test_a_file_written_during_the_run(
    store: WritableStore, photo_models: PhotoModels, image_model: Model, tmp_path: Path
) -> None:
    """Whatever the race gives the first run, the run finishes, every other photo is
    indexed, and once the file holds still the next run records it as it is."""
    root = tmp_path / "lib"
    for i in range(6):
        age(write_photo(root / f"p{i}.jpg", seed=i))
    growing = write_photo(root / "copying.jpg", seed=9)
    writer = subprocess.Popen(
        [sys.executable, "-c", _GROWER, str(growing)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        first = _run(store, photo_models, image_model, [root])
    finally:
        writer.wait()
    assert first.added + len(first.failed) == 7
    assert all(store.get_by_path(str(root / f"p{i}.jpg")) for i in range(6))
    age(growing, 60)
    _run(store, photo_models, image_model, [root])
    photo = _indexed(store, growing)
    data = growing.read_bytes()
    assert (photo.size, photo.sha256) == (len(data), hashlib.sha256(data).hexdigest())


def test_a_new_index_of_broken_files(
    store: WritableStore, photo_models: PhotoModels, image_model: Model, tmp_path: Path
) -> None:
    root = tmp_path / "lib"
    root.mkdir()
    (root / "notes.jpg").write_text("not a photo")
    age(root / "notes.jpg")
    report = _run(store, photo_models, image_model, [root])
    assert [p for p, _ in report.failed] == [str(root / "notes.jpg")]
    assert store.model() is not None and store.count() == 0
    assert [p.path for p in store.errors()] == [str(root / "notes.jpg")]


def test_one_index_never_mixes_models(
    store: WritableStore, photo_models: PhotoModels, image_model: Model, tmp_path: Path
) -> None:
    root = tmp_path / "lib"
    age(write_photo(root / "a.jpg", seed=1))
    _run(store, photo_models, image_model, [root])
    with pytest.raises(StoreError, match=r"built with image model .*clip.*asks for 'other-model'"):
        _run(store, photo_models, None, [root], image_model="other-model")
