"""Incremental indexing: scan the roots, then bring the index in line with them.

- Unchanged files (same size and mtime) are not opened.
- A changed file is hashed: the same content keeps its vector (only size/mtime
  change), new content is embedded again.
- A file whose content is already indexed under a path that is gone was moved or
  renamed: that row takes the new path and keeps its id and vector.
- Files that cannot be read are recorded with the reason, and retried only when
  they change (or with `retry_errors`).
- A symlink whose target is gone is recorded as unreadable, like a broken file.
- Rows of vanished files are deleted last; losses that look like a mount or a link
  gone wrong are held back for confirmation (see photos/deletions.py).

Files are read and hashed on a thread pool while the model decodes (JPEG draft
mode) and embeds earlier ones in batches. Writes are committed every
`commit_every` photos or `commit_seconds`, so a killed run loses at most that
much work, and the next run picks it up: paths are unique, nothing doubles. A
run starts with small batches and commits (see photos/pacing.py), so even a run
killed within seconds keeps its first photos.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from handspring.embedder import Model
from handspring.photos.indexing.index_progress import IndexProgress, NoProgress, ProgressBar
from handspring.photos.indexing.pacing import CommitPace, embed_in_growing_batches
from handspring.photos.scanning.deletions import DeletionPolicy, HeldDeletions, plan_deletions
from handspring.photos.scanning.metadata import enable_heif
from handspring.photos.scanning.reading import Prepared, read_ahead
from handspring.photos.scanning.scan import ScannedFile, ScanOptions, ScanReport, scan_roots
from handspring.photos.stores.browsing import LastRun
from handspring.photos.stores.records import IndexedFile, ModelInfo, PhotoRecord
from handspring.photos.stores.store import StoreError, WritableStore

log = logging.getLogger("handspring.photos")

DEFAULT_IMAGE_MODEL = "st-clip-vit-b-32"


@dataclass(frozen=True)
class IndexOptions:
    image_model: str = DEFAULT_IMAGE_MODEL
    precision: str = "int8"  # DESIGN: int8 image tower, cosine >= 0.9999 to fp32
    batch_size: int = 16
    commit_every: int = 64
    commit_seconds: float = 5.0
    allow_empty_root: bool = False
    allow_deletions: bool = False  # apply deletions the policy would hold back
    max_deleted_share: float = 0.5
    max_deleted: int = 1000
    retry_errors: bool = False
    read_workers: int = 2
    threads: int | None = None
    scan: ScanOptions = field(default_factory=ScanOptions)

    @property
    def deletion_policy(self) -> DeletionPolicy:
        return DeletionPolicy(
            allow_empty_root=self.allow_empty_root,
            allow_deletions=self.allow_deletions,
            max_deleted_share=self.max_deleted_share,
            max_deleted=self.max_deleted,
        )


@dataclass
class IndexReport:
    scan: ScanReport
    added: int = 0  # new rows with a vector
    updated: int = 0  # rows embedded again (content changed, or an error retried)
    moved: int = 0  # moved or renamed: vector reused
    touched: int = 0  # new mtime, same content
    reused: int = 0  # new path, content already indexed elsewhere: vector copied
    unchanged: int = 0
    deleted: int = 0
    vanished: int = 0  # gone between the scan and the read
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) this run
    refused_roots: list[tuple[str, str]] = field(default_factory=list)  # (root, why)
    held: list[HeldDeletions] = field(default_factory=list)  # kept until allow_deletions
    held_files: int = 0  # rows those hold back, each counted once
    seconds: float = 0.0

    @property
    def processed(self) -> int:
        return (
            self.added + self.updated + self.moved + self.touched + self.reused + len(self.failed)
        )


class Indexer:
    def __init__(
        self,
        store: WritableStore,
        options: IndexOptions = IndexOptions(),
        model: Model | None = None,
        progress: bool | IndexProgress = False,
    ) -> None:
        """`progress`: what to show while indexing (photos/index_progress.py); True is
        a progress bar on stderr."""
        self.store = store
        self.options = options
        self._model = model
        if isinstance(progress, bool):
            progress = ProgressBar() if progress else NoProgress()
        self.progress: IndexProgress = progress
        self._pace = CommitPace(options.commit_every, options.commit_seconds)
        self._done = 0  # photos of this run's work settled (written, or found vanished)
        self._gone_by_hash: dict[str, list[IndexedFile]] = {}
        self._moved_ids: set[int] = set()

    # ----------------------------------------------------------------- model

    def _check_model_name(self) -> None:
        recorded = self.store.model()
        if recorded is not None and recorded.name != self.options.image_model:
            raise StoreError(
                f"this index was built with image model {recorded.name!r}; this run asks for "
                f"{self.options.image_model!r}. One index never mixes models: use "
                f"--model {recorded.name}, or another --db for the other model"
            )

    def model(self) -> Model:
        """The image model, loaded on first need (an unchanged library never loads it)."""
        if self._model is None:
            import handspring

            self.progress.model_loading()
            loaded = handspring.load(
                self.options.image_model,
                modalities=("image",),
                precision=self.options.precision,
                threads=self.options.threads,
                fast_decode=True,
                # Decoding threads need the cores between runs; spinning ORT threads
                # took them (15-28 photos/s with spinning, 30-35 without, in noisy runs).
                spinning=False,
            )
            if "image" not in loaded.modalities:
                raise StoreError(f"{self.options.image_model} is a text model, not an image model")
            self._model = loaded
            self.progress.model_loaded()
        self._record_model(self._model.dim)
        return self._model

    def _record_model(self, dim: int) -> None:
        """A new index records its model; an existing one must hold vectors of `dim`."""
        recorded = self.store.model()
        if recorded is None:
            self.store.set_model(ModelInfo(self.options.image_model, dim, self.options.precision))
        elif recorded.dim != dim:
            raise StoreError(
                f"the index holds {recorded.dim}-d vectors; {self.options.image_model} "
                f"gives {dim}-d"
            )

    def _start_model(self) -> None:
        """Get the model ready and recorded before the first photo is written (a Ray run
        loads it on the cluster instead: see ray_pipeline.py)."""
        self.model()

    # ----------------------------------------------------------------- runs

    def run(self, roots: Iterable[str]) -> IndexReport:
        return self.index_scanned(scan_roots(list(roots), self.options.scan))

    def index_scanned(self, scan: ScanReport) -> IndexReport:
        """Bring the index in line with a finished scan (see the module notes)."""
        start = time.perf_counter()
        enable_heif()
        self._check_model_name()
        policy = self.options.deletion_policy  # a bad threshold fails before any work
        report = IndexReport(scan=scan)
        present = [r for r in scan.roots if r not in scan.missing_roots]
        known = {f.path: f for f in self.store.files_under(present)}
        seen = {f.path for f in scan.files}
        broken = self._broken_links(scan, known)
        gone = {p: f for p, f in known.items() if p not in seen and p not in broken}
        self._gone_by_hash, self._moved_ids = {}, set()
        for f in gone.values():
            if f.has_vector:
                self._gone_by_hash.setdefault(f.sha256, []).append(f)
        work: list[tuple[ScannedFile, IndexedFile | None]] = []
        for scanned in scan.files:
            old = known.get(scanned.path)
            if old is not None and self._unchanged(old, scanned):
                report.unchanged += 1
                continue
            work.append((scanned, old))
        if (work or broken) and self.store.model() is None:
            self._start_model()  # a new index records its model before its first photo
        self._pace = CommitPace(self.options.commit_every, self.options.commit_seconds)
        self._done = 0
        if work:
            self.progress.start(len(scan.files), len(scan.files) - len(work))
        completed = False
        try:
            self._record_broken_links(broken, known, report)
            self._process(work, report)
            self._delete_gone(scan, known, gone, policy, report)
            completed = True
        finally:
            try:
                self._commit()
                report.seconds = time.perf_counter() - start
                self._record_run(report, completed)
            finally:
                self.progress.close()
        return report

    def _record_run(self, report: IndexReport, completed: bool) -> None:
        """What `photos status` says of the last run; an interrupted run says so."""
        self.store.record_run(
            LastRun(
                finished=time.time(),
                seconds=round(report.seconds, 3),
                added=report.added,
                updated=report.updated + report.moved + report.touched + report.reused,
                deleted=report.deleted,
                failed=len(report.failed),
                unchanged=report.unchanged,
                completed=completed,
            )
        )

    def _broken_links(self, scan: ScanReport, known: dict[str, IndexedFile]) -> dict[str, str]:
        """Symlinks leading nowhere that stand for a photo file: path -> reason."""
        suffixes = self.options.scan.suffixes
        return {
            path: reason
            for path, reason in scan.broken_links
            if path in known or os.path.splitext(path)[1].lower() in suffixes
        }

    def _record_broken_links(
        self, broken: dict[str, str], known: dict[str, IndexedFile], report: IndexReport
    ) -> None:
        for path, reason in broken.items():
            old = known.get(path)
            if old is not None and old.error == reason:
                report.unchanged += 1
                continue
            try:
                mtime_ns = os.lstat(path).st_mtime_ns
            except OSError:
                mtime_ns = 0
            # An impossible size, so the file is read again once the link leads somewhere.
            self.store.put(PhotoRecord(path, -1, mtime_ns, "", error=reason), None)
            report.failed.append((path, reason))
            self._maybe_commit()

    def _unchanged(self, old: IndexedFile, scanned: ScannedFile) -> bool:
        if self.options.retry_errors and old.error is not None:
            return False
        return (old.size, old.mtime_ns) == (scanned.size, scanned.mtime_ns)

    def _process(
        self, work: list[tuple[ScannedFile, IndexedFile | None]], report: IndexReport
    ) -> None:
        pending: deque[Prepared] = deque()

        def to_embed() -> Iterator[bytes]:
            reading = read_ahead(work, max(2, self.options.batch_size), self.options.read_workers)
            for prepared in reading:
                if self._settle_without_model(prepared, report):
                    self._done += 1
                    self._maybe_commit()
                    continue
                pending.append(prepared)
                yield prepared.data

        feed = to_embed()
        first = next(feed, None)
        if first is None:
            return
        model = self.model()
        batches = embed_in_growing_batches(
            model, itertools.chain([first], feed), self.options.batch_size
        )
        for part in batches:
            failures = dict(zip(part.error_index, part.errors, strict=True))
            for row in range(len(part)):
                prepared = pending.popleft()
                prepared.data = b""  # let the bytes go
                error = failures.get(row)
                reason = None if error is None else failure_reason(error)
                self._write_embedded(prepared, part.embeddings[row], reason, report)
                self._done += 1
                self._maybe_commit()

    def _settle_without_model(self, prepared: Prepared, report: IndexReport) -> bool:
        """Write what needs no embedding; False if the file must be embedded."""
        if prepared.vanished:
            report.vanished += 1
            return True
        record, old = prepared.record, prepared.known
        assert record is not None
        if prepared.problem is not None:
            self.store.put(replace(record, error=prepared.problem), None)
            report.failed.append((record.path, prepared.problem))
            return True
        if old is not None and old.has_vector and old.sha256 == record.sha256:
            self.store.move(old.id, record)  # same content, new mtime: keep the vector
            report.touched += 1
            return True
        if old is None and (moved_from := self._take_gone(record.sha256)) is not None:
            self.store.move(moved_from.id, record)
            report.moved += 1
            return True
        vector = self.store.vector_for_sha256(record.sha256)
        if vector is not None and (old is None or old.sha256 != record.sha256):
            self.store.put(record, vector)  # a copy of an indexed photo
            report.reused += 1
            return True
        return False

    def _take_gone(self, sha256: str) -> IndexedFile | None:
        candidates = self._gone_by_hash.get(sha256)
        if not candidates:
            return None
        taken = candidates.pop(0)
        self._moved_ids.add(taken.id)
        return taken

    def _write_embedded(
        self, prepared: Prepared, vector: np.ndarray, reason: str | None, report: IndexReport
    ) -> None:
        record = prepared.record
        assert record is not None
        if reason is not None:
            self.store.put(replace(record, error=reason), None)
            report.failed.append((record.path, reason))
            return
        self.store.put(record, vector)
        if prepared.known is None:
            report.added += 1
        else:
            report.updated += 1

    def _maybe_commit(self) -> None:
        if self._pace.wrote():
            self._commit()

    def _commit(self) -> None:
        self.store.commit()
        self._pace.committed()
        self.progress.saved(self._done)

    def _delete_gone(
        self,
        scan: ScanReport,
        known: dict[str, IndexedFile],
        gone: dict[str, IndexedFile],
        policy: DeletionPolicy,
        report: IndexReport,
    ) -> None:
        for root in scan.missing_roots:
            if next(iter(self.store.files_under([root])), None) is not None:
                report.refused_roots.append((root, "missing (unmounted?): nothing deleted"))
        candidates = (f for f in gone.values() if f.id not in self._moved_ids)
        plan = plan_deletions(scan, known, candidates, policy)
        report.refused_roots += plan.refused_roots
        report.held, report.held_files = plan.held, plan.held_files
        if plan.delete:
            self.store.delete(plan.delete)
            report.deleted = len(plan.delete)


def failure_reason(error: Exception) -> str:
    """What the index records for a photo that could not be embedded."""
    reason = getattr(error, "reason", None) or str(error)
    detail = getattr(error, "detail", None)
    return f"{reason} ({detail})" if detail else reason
