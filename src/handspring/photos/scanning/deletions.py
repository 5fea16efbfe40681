"""Which index rows of files gone from the scan a run deletes, and which it holds back.

A file missing from the scan was usually deleted by someone. Some losses look more
like a mount, a disk or a link gone wrong, and deleting their rows would throw away
every vector of a library that is merely out of reach. Those are held back (kept,
and reported) unless the run is given `allow_deletions`:

- a root that would lose more than `max_deleted_share` of the files indexed under it
  or more than `max_deleted` of them, whichever is smaller (exactly at the limit is
  allowed): a root remounted onto the wrong disk, or replaced by another folder;
- a vanished subtree: the rows under a folder that is now missing, no longer a
  folder, a symlink whose target is gone, or that could not be listed.

A root that is empty keeps its rows unless `allow_empty_root` (`allow_deletions` does
not cover it); a root that is missing or cannot be listed is never touched.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction

from handspring.photos.scanning.scan import ScanReport, broken_link_reason
from handspring.photos.stores.records import IndexedFile


@dataclass(frozen=True)
class DeletionPolicy:
    allow_empty_root: bool = False
    allow_deletions: bool = False
    max_deleted_share: float = 0.5  # of the rows indexed under a root
    max_deleted: int = 1000

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_deleted_share <= 1.0:
            raise ValueError(
                f"max_deleted_share must lie in [0, 1], got {self.max_deleted_share!r}"
            )
        if self.max_deleted < 0:
            raise ValueError(f"max_deleted must be >= 0, got {self.max_deleted!r}")

    def limit(self, indexed: int) -> int:
        """The most rows a root holding `indexed` rows may lose in one run."""
        # Fraction of the decimal the user wrote: 0.29 * 100 is 29, not 28.999999999999996.
        share = Fraction(repr(self.max_deleted_share)) * indexed
        return min(math.floor(share), self.max_deleted)


@dataclass(frozen=True)
class HeldDeletions:
    """Rows kept because deleting them needs `allow_deletions`."""

    under: str  # a root, or a folder that vanished
    files: int  # rows that would have been deleted
    why: str


@dataclass
class DeletionPlan:
    delete: list[int] = field(default_factory=list)  # row ids
    held: list[HeldDeletions] = field(default_factory=list)
    held_files: int = 0  # rows kept in all (a row is counted once, though listed twice)
    refused_roots: list[tuple[str, str]] = field(default_factory=list)  # (root, why)


def plan_deletions(
    scan: ScanReport,
    known: dict[str, IndexedFile],
    gone: Iterable[IndexedFile],
    policy: DeletionPolicy,
) -> DeletionPlan:
    """Sort the rows of gone files into deleted and held (see the module notes).
    `known`: every row under the present roots; `gone`: those to delete if nothing
    speaks against it (moved rows and broken links already taken out)."""
    present = sorted((r for r in scan.roots if r not in scan.missing_roots), key=len, reverse=True)
    indexed: dict[str, int] = dict.fromkeys(present, 0)
    for path in known:
        if (root := _deepest_root(path, present)) is not None:
            indexed[root] += 1
    doomed: dict[str, list[IndexedFile]] = {root: [] for root in present}
    for row in gone:
        if (root := _deepest_root(row.path, present)) is not None:
            doomed[root].append(row)
    plan = DeletionPlan()
    folders = _VanishedFolders(scan)
    for root in scan.roots:
        if root in present and doomed[root]:
            _plan_root(root, doomed[root], indexed[root], scan, folders, policy, plan)
    return plan


def _plan_root(
    root: str,
    doomed: list[IndexedFile],
    indexed: int,
    scan: ScanReport,
    folders: _VanishedFolders,
    policy: DeletionPolicy,
    plan: DeletionPlan,
) -> None:
    ids = [row.id for row in doomed]
    root_why = folders.why(root)
    if root_why is not None:  # out of reach as a whole, like a missing root
        plan.refused_roots.append((root, f"{root_why}: nothing deleted"))
        return
    if scan.files_under(root) == 0:
        if policy.allow_empty_root:
            plan.delete += ids
        else:
            why = (
                "is empty but the index holds photos under it: nothing deleted "
                "(--allow-empty-root to delete them)"
            )
            plan.refused_roots.append((root, why))
        return
    if policy.allow_deletions:
        plan.delete += ids
        return
    by_folder: dict[tuple[str, str], list[int]] = {}
    plain: list[int] = []
    for row in doomed:
        vanished = folders.vanished_ancestor(root, row.path)
        if vanished is None:
            plain.append(row.id)
        else:
            by_folder.setdefault(vanished, []).append(row.id)
    limit = policy.limit(indexed)
    if len(doomed) > limit:
        share = f"{policy.max_deleted_share:.0%}"
        why = (
            f"{len(doomed)} of its {indexed} indexed files are gone, more than the limit of "
            f"{limit} ({share} of them or {policy.max_deleted}, whichever is smaller): "
            "remounted onto another disk, or replaced?"
        )
        plan.held.append(HeldDeletions(root, len(doomed), why))
        plan.held_files += len(doomed)
    else:
        plan.delete += plain
        plan.held_files += len(doomed) - len(plain)
    for (folder, why), rows in by_folder.items():
        plan.held.append(HeldDeletions(folder, len(rows), why))


def _deepest_root(path: str, roots_longest_first: list[str]) -> str | None:
    for root in roots_longest_first:
        if path.startswith(root.rstrip("/") + "/"):
            return root
    return None


class _VanishedFolders:
    """Whether a folder on the way to a gone file is out of reach, asked of the file
    system once per folder."""

    def __init__(self, scan: ScanReport) -> None:
        self._unlisted = {folder: reason for folder, reason in scan.unreadable}
        self._answers: dict[str, str | None] = {}

    def vanished_ancestor(self, root: str, path: str) -> tuple[str, str] | None:
        """The highest folder below `root`, down to `path`'s own, that is out of
        reach, with why; None if they all are still there."""
        folder = root.rstrip("/")
        for part in path[len(folder) + 1 :].split("/")[:-1]:
            folder = f"{folder}/{part}"
            why = self.why(folder)
            if why is not None:
                return folder, why
        return None

    def why(self, folder: str) -> str | None:
        if folder not in self._answers:
            self._answers[folder] = self._ask(folder)
        return self._answers[folder]

    def _ask(self, folder: str) -> str | None:
        if folder in self._unlisted:
            return f"is unreadable: cannot be listed ({self._unlisted[folder]})"
        try:
            info = os.stat(folder)
        except FileNotFoundError:
            if os.path.islink(folder):
                return f"is unreadable: {broken_link_reason(folder)}"
            return "is missing (deleted, moved away or unmounted?)"
        except OSError as exc:
            return f"is unreadable: {exc.strerror or exc}"
        if not stat.S_ISDIR(info.st_mode):
            return "is no longer a folder"
        return None
