"""Deletions held back for confirmation, on both stores: a root that shrinks past the
limits (a remount onto the wrong disk), a folder or a symlinked folder's target that
vanished, dangling links recorded as unreadable, the limits' boundaries, and the
runs with --allow-deletions and after it, through the indexer and the command line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from handspring.embedder import Model
from handspring.photos.cli import EXIT_DELETIONS_HELD, EXIT_ROOT_REFUSED, photos
from handspring.photos.scanning.deletions import DeletionPolicy
from handspring.photos.scanning.scan import ScanOptions
from handspring.photos.stores.store import WritableStore
from tests.photos.conftest import PhotoModels, run_index
from tests.support.photo_library import age, write_photo

LIBRARY_SIZE = 30  # as in the reliability issue's measurements
FOLLOW = ScanOptions(follow_external_links=True)


def _photos(folder: Path, count: int, first_seed: int = 0) -> list[Path]:
    """`count` old photos p00.jpg... in `folder`."""
    return [
        age(write_photo(folder / f"p{i:02d}.jpg", seed=first_seed + i), i) for i in range(count)
    ]


def _rows(store: WritableStore, root: Path) -> set[str]:
    return {f.path for f in store.files_under([str(root)])}


def _stash(paths: list[Path], stash: Path) -> list[Path]:
    """Move files away (mtime kept), so they can come back unchanged."""
    stash.mkdir(exist_ok=True)
    return [Path(shutil.move(p, stash / p.name)) for p in paths]


def test_a_root_replaced_by_a_folder_of_one_photo_deletes_nothing(
    empty_store: WritableStore, photo_models: PhotoModels, image_model: Model, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    _photos(root, LIBRARY_SIZE)
    store = empty_store
    assert run_index(store, photo_models, image_model, [root]).added == LIBRARY_SIZE
    root.rename(tmp_path / "the right disk")
    age(write_photo(root / "p00.jpg", seed=1000))  # the wrong disk: one photo, a known name

    report = run_index(store, photo_models, image_model, [root])
    assert (report.updated, report.deleted, report.held_files) == (1, 0, LIBRARY_SIZE - 1)
    (held,) = report.held
    assert held.under == str(root) and held.files == LIBRARY_SIZE - 1
    assert "29 of its 30 indexed files are gone, more than the limit of 15" in held.why
    assert len(_rows(store, root)) == LIBRARY_SIZE  # new content indexed, no row lost
    assert store.get_by_path(str(root / "p00.jpg")).sha256 != ""

    confirmed = run_index(store, photo_models, image_model, [root], allow_deletions=True)
    assert (confirmed.deleted, confirmed.held) == (LIBRARY_SIZE - 1, [])
    assert _rows(store, root) == {str(root / "p00.jpg")}

    after = run_index(store, photo_models, image_model, [root])
    assert (after.unchanged, after.deleted, after.held, after.processed) == (1, 0, [], 0)


def test_a_symlinked_folder_whose_target_vanished(
    empty_store: WritableStore, photo_models: PhotoModels, image_model: Model, tmp_path: Path
) -> None:
    root, outside = tmp_path / "photos", tmp_path / "usb" / "trip"
    _photos(root / "home", 20)
    _photos(outside, 10, first_seed=20)
    (root / "trip").symlink_to(outside, target_is_directory=True)
    store = empty_store
    first = run_index(store, photo_models, image_model, [root], scan=FOLLOW)
    assert first.added == LIBRARY_SIZE
    shutil.rmtree(outside)

    report = run_index(store, photo_models, image_model, [root], scan=FOLLOW)
    link = str(root / "trip")
    assert (report.deleted, report.held_files, report.failed) == (0, 10, [])
    (held,) = report.held
    assert (held.under, held.files) == (link, 10)
    assert f"is unreadable: symlink target is missing (-> {outside})" in held.why
    assert [path for path, _ in report.scan.broken_links] == [link]
    assert len(_rows(store, root)) == LIBRARY_SIZE

    confirmed = run_index(
        store, photo_models, image_model, [root], scan=FOLLOW, allow_deletions=True
    )
    assert (confirmed.deleted, confirmed.held) == (10, [])
    assert not any(path.startswith(link + "/") for path in _rows(store, root))

    after = run_index(store, photo_models, image_model, [root], scan=FOLLOW)
    assert (after.unchanged, after.deleted, after.held) == (20, 0, [])


def test_a_deleted_folder_is_held_while_single_deletions_go_ahead(
    empty_store: WritableStore, photo_models: PhotoModels, image_model: Model, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    kept = _photos(root / "a", 10)
    _photos(root / "b", 10, first_seed=10)
    _photos(root / "c", 10, first_seed=20)
    store = empty_store
    run_index(store, photo_models, image_model, [root])
    shutil.rmtree(root / "b")
    kept[0].unlink()

    report = run_index(store, photo_models, image_model, [root])
    assert (report.deleted, report.held_files) == (1, 10)  # 11 of 30: within the limits
    (held,) = report.held
    assert (held.under, held.files) == (str(root / "b"), 10)
    assert "is missing" in held.why
    assert len(_rows(store, root)) == LIBRARY_SIZE - 1

    confirmed = run_index(store, photo_models, image_model, [root], allow_deletions=True)
    assert (confirmed.deleted, confirmed.held) == (10, [])
    after = run_index(store, photo_models, image_model, [root])
    assert (after.unchanged, after.deleted, after.held) == (19, 0, [])


def test_a_dangling_file_link_is_unreadable_never_deleted(
    empty_store: WritableStore, photo_models: PhotoModels, image_model: Model, tmp_path: Path
) -> None:
    root, target = tmp_path / "photos", tmp_path / "elsewhere" / "cover.jpg"
    _photos(root, 3)
    age(write_photo(target, seed=50))
    link = root / "cover.jpg"
    link.symlink_to(target)
    store = empty_store
    assert run_index(store, photo_models, image_model, [root], scan=FOLLOW).added == 4
    target.unlink()

    report = run_index(store, photo_models, image_model, [root], scan=FOLLOW)
    reason = f"symlink target is missing (-> {target})"
    assert (report.failed, report.deleted, report.held) == ([(str(link), reason)], 0, [])
    row = store.get_by_path(str(link))
    assert row is not None and row.error == reason and store.vector(row.id) is None

    again = run_index(store, photo_models, image_model, [root], scan=FOLLOW)
    assert (again.failed, again.unchanged, again.deleted) == ([], 4, 0)

    age(write_photo(target, seed=50))  # the target is back
    back = run_index(store, photo_models, image_model, [root], scan=FOLLOW)
    assert (back.updated, back.failed) == (1, [])
    row = store.get_by_path(str(link))
    assert row is not None and row.error is None and store.vector(row.id) is not None


def test_the_limits_allow_exactly_their_value(
    empty_store: WritableStore, photo_models: PhotoModels, image_model: Model, tmp_path: Path
) -> None:
    """A root may lose exactly 50% of its rows (or exactly max_deleted); one more is held."""
    root, stash = tmp_path / "photos", tmp_path / "stash"
    photos_ = _photos(root, 10)
    store = empty_store
    run_index(store, photo_models, image_model, [root])

    away = _stash(photos_[:6], stash)
    over = run_index(store, photo_models, image_model, [root])
    assert (over.deleted, over.held_files) == (0, 6)
    assert "6 of its 10 indexed files are gone, more than the limit of 5" in over.held[0].why
    shutil.move(away[0], photos_[0])  # back unchanged: now exactly half is gone
    at = run_index(store, photo_models, image_model, [root])
    assert (at.deleted, at.held, at.unchanged) == (5, [], 5)

    counted = {"max_deleted_share": 1.0, "max_deleted": 2}
    away = _stash([photos_[0], photos_[6], photos_[7]], stash)  # 3 of the 5 left
    over = run_index(store, photo_models, image_model, [root], **counted)
    assert (over.deleted, over.held_files) == (0, 3)
    assert "more than the limit of 2" in over.held[0].why
    shutil.move(away[0], photos_[0])
    at = run_index(store, photo_models, image_model, [root], **counted)
    assert (at.deleted, at.held) == (2, [])
    assert _rows(store, root) == {str(p) for p in [photos_[0], *photos_[8:]]}


def test_the_smaller_limit_wins() -> None:
    policy = DeletionPolicy()
    assert (policy.max_deleted_share, policy.max_deleted) == (0.5, 1000)
    assert [policy.limit(n) for n in (0, 1, 30, 31, 1999, 2000, 2001, 10**6)] == [
        0,
        0,
        15,
        15,
        999,
        1000,
        1000,
        1000,
    ]
    assert DeletionPolicy(max_deleted_share=0.29).limit(100) == 29  # not 28.999...
    with pytest.raises(ValueError, match="max_deleted_share must lie in"):
        DeletionPolicy(max_deleted_share=1.5)


def test_an_empty_root_still_needs_allow_empty_root(
    empty_store: WritableStore, photo_models: PhotoModels, image_model: Model, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    _photos(root, 4)
    store = empty_store
    run_index(store, photo_models, image_model, [root])
    shutil.rmtree(root)
    root.mkdir()
    report = run_index(store, photo_models, image_model, [root], allow_deletions=True)
    assert report.deleted == 0 and "is empty" in report.refused_roots[0][1]
    emptied = run_index(store, photo_models, image_model, [root], allow_empty_root=True)
    assert (emptied.deleted, emptied.held) == (4, [])


# ------------------------------------------------------------------ command line


def _index(root: Path, url: str, *options: str) -> Result:
    return CliRunner().invoke(photos, ["index", str(root), "--db", url, *options])


@pytest.mark.parametrize("kind", ["sqlite", "qdrant"])
def test_the_command_line_exits_3_until_confirmed(
    kind: str, photo_models: PhotoModels, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    _photos(root, LIBRARY_SIZE)
    url = f"sqlite://{tmp_path / 'i.db'}" if kind == "sqlite" else f"qdrant://{tmp_path / 'q'}"
    first = _index(root, url, "--image-model", str(photo_models.image))
    assert first.exit_code == 0, first.output
    root.rename(tmp_path / "the right disk")
    age(write_photo(root / "p00.jpg", seed=1000))

    held = _index(root, url)
    assert held.exit_code == EXIT_DELETIONS_HELD == 3, held.output
    assert "1 updated" in held.stderr and "0 deleted" in held.stderr
    assert "deletions held back: 29 indexed files would be deleted and were kept" in held.stderr
    assert "--allow-deletions" in held.stderr
    assert f"{root}: 29 of its 30 indexed files are gone" in held.stderr

    still = _index(root, url, "--max-deleted-share", "1", "--max-deleted", "28")
    assert still.exit_code == EXIT_DELETIONS_HELD and "0 deleted" in still.stderr
    wrong = _index(root, url, "--max-deleted-share", "1.5")
    assert wrong.exit_code == 2 and "--max-deleted-share" in wrong.stderr

    confirmed = _index(root, url, "--allow-deletions")
    assert confirmed.exit_code == 0, confirmed.output
    assert "29 deleted" in confirmed.stderr and "held back" not in confirmed.stderr
    after = _index(root, url)
    assert after.exit_code == 0 and "1 unchanged" in after.stderr and "0 deleted" in after.stderr


def test_the_command_line_names_a_vanished_link_target(
    photo_models: PhotoModels, tmp_path: Path
) -> None:
    root, outside = tmp_path / "photos", tmp_path / "usb" / "trip"
    _photos(root / "home", 20)
    _photos(outside, 10, first_seed=20)
    (root / "trip").symlink_to(outside, target_is_directory=True)
    url = f"sqlite://{tmp_path / 'i.db'}"
    options = ("--follow-external-links", "--image-model", str(photo_models.image))
    assert _index(root, url, *options).exit_code == 0
    shutil.rmtree(outside)

    held = _index(root, url, *options)
    assert held.exit_code == EXIT_DELETIONS_HELD, held.output
    assert "0 deleted" in held.stderr
    assert f"{root / 'trip'}: is unreadable: symlink target is missing" in held.stderr
    assert f"unreadable link {root / 'trip'}: symlink target is missing" in held.stderr
    # A missing root wins over held deletions: exit 1.
    both = CliRunner().invoke(
        photos, ["index", str(root), str(tmp_path / "gone"), "--db", url, *options]
    )
    assert both.exit_code == EXIT_ROOT_REFUSED, both.output


def test_a_photo_replaced_by_a_looping_link_is_unreadable_never_deleted(
    empty_store: WritableStore, photo_models: PhotoModels, image_model: Model, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    _photos(root, 3)
    store = empty_store
    assert run_index(store, photo_models, image_model, [root]).added == 3
    photo = sorted(root.rglob("*.jpg"))[0]
    photo.unlink()
    photo.symlink_to(photo.name)  # a link to itself: following it loops (ELOOP)

    report = run_index(store, photo_models, image_model, [root])
    assert report.deleted == 0 and report.held == []
    assert [path for path, _ in report.failed] == [str(photo)]
    assert "Too many levels of symbolic links" in report.failed[0][1]
    assert store.get_by_path(str(photo)) is not None
