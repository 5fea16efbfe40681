"""Walking photo folders: formats, hidden and excluded folders, symlink loops,
links that leave the root, files reached twice, unlistable folders, and reading
a file that changes underneath."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from handspring.photos.scanning.scan import (
    FileChangedError,
    ScanOptions,
    ScanReport,
    read_stable,
    scan_roots,
)
from tests.support.photo_library import (
    build_library,
    scan_unprivileged,
    shared_tmp,
    symlink_loop,
    write_photo,
)


def _names(report: ScanReport, root: Path) -> list[str]:
    return [os.path.relpath(f.path, root) for f in report.files]


def test_library_scan(tmp_path: Path) -> None:
    library = build_library(tmp_path / "lib")
    report = scan_roots([str(library.root)])
    expected = sorted([*library.photos, *library.broken])
    assert sorted(_names(report, library.root)) == expected
    assert report.repeated_folders == [str(library.root / "2023" / "loop")]
    for skipped in library.skipped:
        assert str(skipped) not in {f.path for f in report.files}
    first = report.files[0]
    info = os.stat(first.path)
    assert (first.size, first.mtime_ns) == (info.st_size, info.st_mtime_ns)


def test_hidden_and_excluded_on_request(tmp_path: Path) -> None:
    library = build_library(tmp_path / "lib", with_heic=False)
    options = ScanOptions(exclude=frozenset({"mis*"}), include_hidden=True)
    names = set(_names(scan_roots([str(library.root)], options), library.root))
    assert {".hidden/secret.jpg", "node_modules/pkg/icon.png", "@eaDir/thumb.jpg"} <= names
    assert not any(n.startswith("misc/") for n in names)


def test_symlinks_loops_aliases_and_external_targets(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    write_photo(root / "a" / "one.jpg", 1)
    write_photo(outside / "two.jpg", 2)
    symlink_loop(root / "a", "back_to_a")
    (root / "a" / "up").symlink_to(root, target_is_directory=True)  # a loop through the root
    (root / "alias").symlink_to(root / "a", target_is_directory=True)  # a seen twice
    (root / "same.jpg").symlink_to(root / "a" / "one.jpg")  # one file, two paths
    (root / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (root / "elsewhere").symlink_to(outside, target_is_directory=True)
    (root / "far.jpg").symlink_to(outside / "two.jpg")

    report = scan_roots([str(root)])
    assert _names(report, root) == ["a/one.jpg"]
    assert sorted(report.external_links) == [str(root / "elsewhere"), str(root / "far.jpg")]
    assert len(report.repeated_folders) == 3  # back_to_a, up, and a again through alias

    followed = scan_roots([str(root)], ScanOptions(follow_external_links=True))
    assert _names(followed, root) == ["a/one.jpg", "elsewhere/two.jpg"]
    assert followed.external_links == []


def test_missing_roots_and_overlapping_roots(tmp_path: Path) -> None:
    write_photo(tmp_path / "lib" / "sub" / "x.png", 3)
    report = scan_roots([str(tmp_path / "lib"), str(tmp_path / "lib" / "sub"), "/no/such/dir"])
    assert report.missing_roots == ["/no/such/dir"]
    assert [f.path for f in report.files] == [str(tmp_path / "lib" / "sub" / "x.png")]


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    with shared_tmp() as folder:
        yield folder


def test_unlistable_folders_are_reported(shared_folder: Path) -> None:
    write_photo(shared_folder / "lib" / "open" / "a.jpg", 1)
    write_photo(shared_folder / "lib" / "locked" / "b.jpg", 2)
    (shared_folder / "lib" / "locked").chmod(0o000)
    report = scan_unprivileged([str(shared_folder / "lib")])
    assert [f.path for f in report.files] == [str(shared_folder / "lib" / "open" / "a.jpg")]
    assert report.unreadable == [(str(shared_folder / "lib" / "locked"), "Permission denied")]


def test_read_stable_returns_the_bytes_with_their_stat(tmp_path: Path) -> None:
    path = write_photo(tmp_path / "p.jpg", 1)
    data, info = read_stable(str(path))
    assert data == path.read_bytes() and info.st_size == len(data)


def test_read_stable_gives_up_on_a_file_that_never_holds_still() -> None:
    # A file whose bytes never match its stat: /proc files report size 0 and are
    # made afresh on every read. (A photo being rewritten mid-read is the same case,
    # but no test can time that race; test_indexer covers files written during a run.)
    with pytest.raises(FileChangedError, match="kept changing while being read"):
        read_stable("/proc/self/status", attempts=3, pause=0.001)
