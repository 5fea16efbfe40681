"""Walking photo folders: which files are photos, without loops or surprises.

- Symlinks are followed, each directory (by device and inode) only once, so a
  link back up the tree ends the walk there. A link whose target lies outside
  every root is skipped unless `follow_external_links` is set.
- One file reached by several paths (links, hard links) is listed once: by
  its first path in walk order that is not a symlink, if it has one.
- Hidden files and folders, and excluded folder names, are skipped.
- Folders that cannot be listed, and symlinks whose target is gone, are
  reported, so the indexer never takes their photos for deleted.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

PHOTO_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp", ".heic", ".heif"}
)
# rclip's defaults, and the recycle bins of NAS systems and Windows.
DEFAULT_EXCLUDES = frozenset(
    {".git", "node_modules", "@eaDir", "System Volume Information", "#recycle", "$RECYCLE.BIN"}
)


@dataclass(frozen=True)
class ScanOptions:
    exclude: frozenset[str] = DEFAULT_EXCLUDES  # folder names or fnmatch patterns
    include_hidden: bool = False
    follow_external_links: bool = False
    suffixes: frozenset[str] = PHOTO_SUFFIXES


@dataclass(frozen=True)
class ScannedFile:
    path: str  # absolute, as walked (links not resolved)
    size: int
    mtime_ns: int


@dataclass
class ScanReport:
    roots: list[str]  # absolute
    files: list[ScannedFile] = field(default_factory=list)
    missing_roots: list[str] = field(default_factory=list)
    external_links: list[str] = field(default_factory=list)  # skipped: target outside the roots
    repeated_folders: list[str] = field(default_factory=list)  # already walked: loops, aliases
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (folder, reason)
    broken_links: list[tuple[str, str]] = field(default_factory=list)  # (link, reason)
    seconds: float = 0.0

    def files_under(self, root: str) -> int:
        prefix = root.rstrip("/") + "/"
        return sum(1 for f in self.files if f.path.startswith(prefix))


def scan_roots(roots: Sequence[str], options: ScanOptions = ScanOptions()) -> ScanReport:
    """Every photo file under the roots, sorted by path."""
    start = time.perf_counter()
    absolute = list(dict.fromkeys(os.path.abspath(os.path.expanduser(r)) for r in roots))
    report = ScanReport(roots=absolute)
    real_roots = [os.path.realpath(r) for r in absolute if os.path.isdir(r)]
    walker = _Walker(options, real_roots, report)
    for root in absolute:
        if not os.path.isdir(root):
            report.missing_roots.append(root)
            continue
        walker.walk(root)
    report.files.sort(key=lambda f: f.path)
    report.seconds = time.perf_counter() - start
    return report


def _inside(real: str, real_roots: list[str]) -> bool:
    return any(real == r or real.startswith(r.rstrip("/") + "/") for r in real_roots)


class _Walker:
    def __init__(self, options: ScanOptions, real_roots: list[str], report: ScanReport) -> None:
        self.options = options
        self.real_roots = real_roots
        self.report = report
        self.seen_folders: set[tuple[int, int]] = set()
        # (device, inode) -> (position in report.files, reached through a link)
        self.seen_files: dict[tuple[int, int], tuple[int, bool]] = {}

    def _skipped_name(self, name: str, is_dir: bool) -> bool:
        if name.startswith(".") and not self.options.include_hidden:
            return True
        return is_dir and any(fnmatch.fnmatchcase(name, p) for p in self.options.exclude)

    def _external(self, path: str) -> bool:
        """A link whose target leaves every root, when such links are not followed."""
        if self.options.follow_external_links:
            return False
        if _inside(os.path.realpath(path), self.real_roots):
            return False
        self.report.external_links.append(path)
        return True

    def walk(self, root: str) -> None:
        # An explicit stack, not recursion: deep trees cannot overflow it.
        stack = [root]
        while stack:
            folder = stack.pop()
            try:
                info = os.stat(folder)
            except OSError as exc:
                self.report.unreadable.append((folder, exc.strerror or str(exc)))
                continue
            key = (info.st_dev, info.st_ino)
            if key in self.seen_folders:
                self.report.repeated_folders.append(folder)
                continue
            self.seen_folders.add(key)
            try:
                with os.scandir(folder) as listing:
                    entries = sorted(listing, key=lambda e: e.name)
            except OSError as exc:
                self.report.unreadable.append((folder, exc.strerror or str(exc)))
                continue
            subfolders = []
            for entry in entries:
                sub = self._visit(entry)
                if sub:
                    subfolders.append(sub)
            stack.extend(reversed(subfolders))  # popped in sorted order

    def _visit(self, entry: os.DirEntry[str]) -> str | None:
        """Record a photo file; return the path of a folder to walk."""
        try:
            is_link = entry.is_symlink()
            is_dir = entry.is_dir()  # follows links
        except OSError:  # a link that loops: unreadable, and so never taken as deleted
            if entry.is_symlink():
                self.report.broken_links.append((entry.path, broken_link_reason(entry.path)))
            return None
        if self._skipped_name(entry.name, is_dir):
            return None
        if is_link and not os.path.exists(entry.path):
            self.report.broken_links.append((entry.path, broken_link_reason(entry.path)))
            return None
        if is_link and self._external(entry.path):
            return None
        if is_dir:
            return entry.path
        if os.path.splitext(entry.name)[1].lower() not in self.options.suffixes:
            return None
        try:
            info = entry.stat()  # follows links; a dangling link raises
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        key = (info.st_dev, info.st_ino)
        found = ScannedFile(entry.path, info.st_size, info.st_mtime_ns)
        if key not in self.seen_files:
            self.seen_files[key] = (len(self.report.files), is_link)
            self.report.files.append(found)
        elif self.seen_files[key][1] and not is_link:  # the real path beats a link to it
            position = self.seen_files[key][0]
            self.report.files[position] = found
            self.seen_files[key] = (position, False)
        return None


def broken_link_reason(path: str) -> str:
    """Why a symlink leads nowhere, naming its target."""
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    try:
        os.stat(path)
    except FileNotFoundError:
        return f"symlink target is missing (-> {target})"
    except OSError as exc:
        return f"symlink target cannot be reached: {exc.strerror or exc} (-> {target})"
    return f"symlink target was missing during the scan (-> {target})"


class FileChangedError(OSError):
    """A file kept changing while it was read."""


def read_stable(path: str, attempts: int = 3, pause: float = 0.05) -> tuple[bytes, os.stat_result]:
    """The file's bytes with the stat they belong to. A file that changes while it
    is read (still being copied, edited, replaced) is read again; FileChangedError
    if it never holds still. OSError (FileNotFoundError...) as the file system says."""
    for attempt in range(attempts):
        with open(path, "rb") as f:
            before = os.fstat(f.fileno())
            data = f.read()
        after = os.stat(path)  # by path: a file replaced by a rename shows here
        same = (before.st_ino, before.st_size, before.st_mtime_ns) == (
            after.st_ino,
            after.st_size,
            after.st_mtime_ns,
        )
        if same and len(data) == after.st_size:
            return data, after
        time.sleep(pause * (attempt + 1))
    raise FileChangedError(f"{path}: kept changing while being read ({attempts} tries)")
