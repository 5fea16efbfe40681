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
much work, and the next run picks it up: paths are unique, nothing doubles.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from handspring.embedder import Model
from handspring.photos.deletions import DeletionPolicy, HeldDeletions, plan_deletions
from handspring.photos.metadata import enable_heif, read_metadata
from handspring.photos.records import IndexedFile, ModelInfo, PhotoRecord
from handspring.photos.scan import (
    FileChangedError,
    ScannedFile,
    ScanOptions,
    ScanReport,
    read_stable,
    scan_roots,
)
from handspring.photos.store import StoreError, WritableStore

log = logging.getLogger("handspring.photos")

DEFAULT_IMAGE_MODEL = "st-clip-vit-b-32"
RACY_NS = 2_000_000_000  # files modified this close to their reading are checked again


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


@dataclass
class _Prepared:
    """A file read and hashed, ready to settle."""

    scanned: ScannedFile
    known: IndexedFile | None
    data: bytes = b""
    record: PhotoRecord | None = None
    problem: str | None = None  # could not read it at all
    vanished: bool = False


class Indexer:
    def __init__(
        self,
        store: WritableStore,
        options: IndexOptions = IndexOptions(),
        model: Model | None = None,
        progress: bool = False,
    ) -> None:
        self.store = store
        self.options = options
        self._model = model
        self.progress = progress
        self._since_commit = 0
        self._last_commit = time.monotonic()
        self._gone_by_hash: dict[str, list[IndexedFile]] = {}
        self._moved_ids: set[int] = set()

    # ----------------------------------------------------------------- model

    def _check_model_name(self) -> None:
        recorded = self.store.model()
        if recorded is not None and recorded.name != self.options.image_model:
            raise StoreError(
                f"this index was built with image model {recorded.name!r}; this run asks for "
                f"{self.options.image_model!r}. One index never mixes models: use "
                f"--image-model {recorded.name}, or another --db for the other model"
            )

    def model(self) -> Model:
        """The image model, loaded on first need (an unchanged library never loads it)."""
        if self._model is None:
            import handspring

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
        recorded = self.store.model()
        if recorded is None:
            self.store.set_model(
                ModelInfo(self.options.image_model, self._model.dim, self.options.precision)
            )
        elif recorded.dim != self._model.dim:
            raise StoreError(
                f"the index holds {recorded.dim}-d vectors; {self.options.image_model} "
                f"gives {self._model.dim}-d"
            )
        return self._model

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
            self.model()  # a new index records its model before its first photo
        try:
            self._record_broken_links(broken, known, report)
            self._process(work, report)
            self._delete_gone(scan, known, gone, policy, report)
        finally:
            self.store.commit()
        report.seconds = time.perf_counter() - start
        return report

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
        from tqdm import tqdm

        pending: deque[_Prepared] = deque()
        with tqdm(
            total=len(work),
            unit="photos",
            desc="indexing",
            disable=not self.progress,
            file=sys.stderr,
            smoothing=0.1,
        ) as bar:

            def to_embed() -> Iterator[bytes]:
                for prepared in self._prepared(work):
                    if self._settle_without_model(prepared, report):
                        bar.update(1)
                        self._maybe_commit()
                        continue
                    pending.append(prepared)
                    yield prepared.data

            feed = to_embed()
            first = next(feed, None)
            if first is None:
                return
            model = self.model()
            batches = model.iter_embed_images(
                itertools.chain([first], feed), batch_size=self.options.batch_size
            )
            for part in batches:
                failures = dict(zip(part.error_index, part.errors, strict=True))
                for row in range(len(part)):
                    prepared = pending.popleft()
                    prepared.data = b""  # let the bytes go
                    error = failures.get(row)
                    reason = None if error is None else _reason(error)
                    self._write_embedded(prepared, part.embeddings[row], reason, report)
                    bar.update(1)
                    self._maybe_commit()

    def _prepared(self, work: list[tuple[ScannedFile, IndexedFile | None]]) -> Iterator[_Prepared]:
        """Files read and hashed on a thread pool, in order, a bounded window ahead."""
        window = max(2, self.options.batch_size)
        with ThreadPoolExecutor(self.options.read_workers, thread_name_prefix="read") as pool:
            futures: deque[Future[_Prepared]] = deque()
            items = iter(work)
            for scanned, old in itertools.islice(items, window):
                futures.append(pool.submit(_prepare, scanned, old))
            while futures:
                done = futures.popleft().result()
                nxt = next(items, None)
                if nxt is not None:
                    futures.append(pool.submit(_prepare, *nxt))
                yield done

    def _settle_without_model(self, prepared: _Prepared, report: IndexReport) -> bool:
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
        self, prepared: _Prepared, vector: np.ndarray, reason: str | None, report: IndexReport
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
        self._since_commit += 1
        now = time.monotonic()
        due = now - self._last_commit >= self.options.commit_seconds
        if self._since_commit >= self.options.commit_every or due:
            self.store.commit()
            self._since_commit = 0
            self._last_commit = now

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


def _prepare(scanned: ScannedFile, known: IndexedFile | None) -> _Prepared:
    """Read, hash and describe one file (runs on the reading pool)."""
    path = scanned.path
    started_ns = time.time_ns()
    try:
        data, info = read_stable(path)
    except FileNotFoundError:
        return _Prepared(scanned, known, vanished=True)
    except FileChangedError:
        # Recorded with an impossible size, so the next run reads it again.
        reason = "kept changing while being read; it is read again on the next run"
        record = PhotoRecord(path, -1, scanned.mtime_ns, "", error=reason)
        return _Prepared(scanned, known, record=record, problem=reason)
    except OSError as exc:
        reason = f"cannot read the file ({exc.strerror or exc})"
        record = PhotoRecord(path, scanned.size, scanned.mtime_ns, "", error=reason)
        return _Prepared(scanned, known, record=record, problem=reason)
    if not data:
        reason = "empty file (0 bytes)"
        record = PhotoRecord(
            path, 0, info.st_mtime_ns, hashlib.sha256(b"").hexdigest(), error=reason
        )
        return _Prepared(scanned, known, record=record, problem=reason)
    meta = read_metadata(data, path)
    mtime_ns = info.st_mtime_ns
    if mtime_ns >= started_ns - RACY_NS:
        # git's "racy clean" rule: file times tick coarsely (milliseconds), so a write in
        # the same tick as this read leaves size and mtime as they were read. A file that
        # changed this recently is recorded 1 ns off: the next run hashes it again, and
        # keeps its vector if the bytes are the same.
        mtime_ns -= 1
    record = PhotoRecord(
        path=path,
        size=info.st_size,
        mtime_ns=mtime_ns,
        sha256=hashlib.sha256(data).hexdigest(),
        width=meta.width,
        height=meta.height,
        taken_at=meta.taken_at,
        gps=meta.gps,
        exif=meta.exif,
    )
    return _Prepared(scanned, known, data=data, record=record)


def _reason(error: Exception) -> str:
    reason = getattr(error, "reason", None) or str(error)
    detail = getattr(error, "detail", None)
    return f"{reason} ({detail})" if detail else reason
