"""Reading files for the indexer: each file read once, hashed and described (size,
mtime, EXIF), on a thread pool a bounded window ahead of the model."""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from handspring.photos.scanning.metadata import read_metadata
from handspring.photos.scanning.scan import FileChangedError, ScannedFile, read_stable
from handspring.photos.stores.records import IndexedFile, PhotoRecord

RACY_NS = 2_000_000_000  # files modified this close to their reading are checked again


@dataclass
class Prepared:
    """A file read and hashed, ready to settle."""

    scanned: ScannedFile
    known: IndexedFile | None
    data: bytes = b""
    record: PhotoRecord | None = None
    problem: str | None = None  # could not read it at all
    vanished: bool = False


def read_ahead(
    work: Iterable[tuple[ScannedFile, IndexedFile | None]], window: int, workers: int
) -> Iterator[Prepared]:
    """Files read and hashed on a thread pool, in order, at most `window` ahead."""
    with ThreadPoolExecutor(workers, thread_name_prefix="read") as pool:
        futures: deque[Future[Prepared]] = deque()
        items = iter(work)
        for scanned, old in itertools.islice(items, window):
            futures.append(pool.submit(prepare, scanned, old))
        while futures:
            done = futures.popleft().result()
            nxt = next(items, None)
            if nxt is not None:
                futures.append(pool.submit(prepare, *nxt))
            yield done


def prepare(scanned: ScannedFile, known: IndexedFile | None) -> Prepared:
    """Read, hash and describe one file (runs on the reading pool)."""
    path = scanned.path
    started_ns = time.time_ns()
    try:
        data, info = read_stable(path)
    except FileNotFoundError:
        return Prepared(scanned, known, vanished=True)
    except FileChangedError:
        # Recorded with an impossible size, so the next run reads it again.
        reason = "kept changing while being read; it is read again on the next run"
        record = PhotoRecord(path, -1, scanned.mtime_ns, "", error=reason)
        return Prepared(scanned, known, record=record, problem=reason)
    except OSError as exc:
        reason = f"cannot read the file ({exc.strerror or exc})"
        record = PhotoRecord(path, scanned.size, scanned.mtime_ns, "", error=reason)
        return Prepared(scanned, known, record=record, problem=reason)
    if not data:
        reason = "empty file (0 bytes)"
        record = PhotoRecord(
            path, 0, info.st_mtime_ns, hashlib.sha256(b"").hexdigest(), error=reason
        )
        return Prepared(scanned, known, record=record, problem=reason)
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
    return Prepared(scanned, known, data=data, record=record)
