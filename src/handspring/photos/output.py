"""Text the photo commands print: search results (table, paths, JSON), the index
run's summary, and the index's status. Paths on stdout go through `display_path`: a
name that is not valid UTF-8 would stop the print (stdout is strict UTF-8), and JSON
cannot carry it."""

from __future__ import annotations

import datetime
import json
import time
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from handspring.photos.stores.browsing import LastRun
from handspring.photos.stores.records import Hit, Photo
from handspring.photos.stores.store import WritableStore
from handspring.photos.stores.stored_paths import display_path

if TYPE_CHECKING:  # the indexer's imports are heavy; only its report's type is needed
    from handspring.photos.indexing.indexer import IndexReport
    from handspring.photos.search.duplicates import DuplicateGroup

_LISTED_ERRORS = 10  # per run summary; `photos status --errors` lists them all


def hit_json(hit: Hit) -> dict[str, Any]:
    return {"id": hit.photo.id, "score": round(hit.score, 6), **photo_json(hit.photo)}


def photo_json(photo: Photo) -> dict[str, Any]:
    return {
        "id": photo.id,
        "path": display_path(photo.path),
        "taken_at": photo.taken_at.isoformat() if photo.taken_at else None,
        "width": photo.width,
        "height": photo.height,
        "size": photo.size,
        "gps": list(photo.gps) if photo.gps else None,
        "sha256": photo.sha256,
    }


def _table(rows: list[tuple[str, ...]]) -> str:
    """Aligned columns, the last (a path) left as it is."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
        + "  "
        + row[-1]
        for row in rows
    )


def _shown(photo: Photo) -> str:
    return display_path(photo.path)


def _taken(photo: Photo) -> str:
    return photo.taken_at.strftime("%Y-%m-%d %H:%M") if photo.taken_at else "-"


def _pixels(photo: Photo) -> str:
    return f"{photo.width}x{photo.height}" if photo.width else "-"


def megabytes(n_bytes: int) -> str:
    if n_bytes >= 10**9:
        return f"{n_bytes / 10**9:.1f} GB"
    if n_bytes >= 10**6:
        return f"{n_bytes / 10**6:.1f} MB"
    return f"{max(1, round(n_bytes / 1000))} kB"


def format_photos(photos: list[Photo], output: str) -> str:
    """`photos list`: newest first, as the store gave them."""
    if output == "json":
        return json.dumps([photo_json(p) for p in photos], ensure_ascii=False, indent=1)
    if output == "paths":
        return "\n".join(_shown(p) for p in photos)
    if not photos:
        return "no photos match"
    rows = [("id", "taken", "pixels", "size", "path")]
    rows += [(str(p.id), _taken(p), _pixels(p), megabytes(p.size), _shown(p)) for p in photos]
    return _table(rows)


def format_duplicates(
    found: list[tuple[DuplicateGroup, list[Photo | None]]],
    compared: int,
    threshold: float,
    output: str,
) -> str:
    """`photos duplicates`: each group's photos largest first (most pixels, then bytes)."""
    groups = [
        (group, sorted((p for p in photos if p), key=_largest_first)) for group, photos in found
    ]
    if output == "json":
        document = {
            "threshold": threshold,
            "photos_compared": compared,
            "groups": [
                {
                    "closest": round(group.closest, 6),
                    "loosest": round(group.loosest, 6),
                    "pairs": [[a, b, round(score, 6)] for a, b, score in group.pairs],
                    "photos": [photo_json(p) for p in photos],
                }
                for group, photos in groups
            ],
        }
        return json.dumps(document, ensure_ascii=False, indent=1)
    listed = sum(len(photos) for _, photos in groups)
    lines = [
        f"{len(groups)} groups of near-duplicates ({listed} photos) among {compared} photos "
        f"compared at similarity >= {threshold:g}; nothing was deleted."
        if groups
        else f"no near-duplicates among {compared} photos at similarity >= {threshold:g}"
    ]
    for number, (group, photos) in enumerate(groups, 1):
        similarity = (
            f"{group.closest:.3f}"
            if round(group.closest, 3) == round(group.loosest, 3)
            else f"{group.loosest:.3f}-{group.closest:.3f}"
        )
        lines += ["", f"group {number}: {len(photos)} photos, similarity {similarity}"]
        rows = [("id", "taken", "pixels", "size", "path")]
        rows += [(str(p.id), _taken(p), _pixels(p), megabytes(p.size), _shown(p)) for p in photos]
        lines += ["  " + line for line in _table(rows).splitlines()]
    return "\n".join(lines)


def _largest_first(photo: Photo) -> tuple[int, int, str]:
    return (-(photo.width or 0) * (photo.height or 0), -photo.size, photo.path)


def format_hits(hits: list[Hit], output: str) -> str:
    if output == "json":
        return json.dumps([hit_json(h) for h in hits], ensure_ascii=False, indent=1)
    if output == "paths":
        return "\n".join(_shown(h.photo) for h in hits)
    rows = [("score", "id", "taken", "size", "path")]
    for hit in hits:
        photo = hit.photo
        taken = photo.taken_at.strftime("%Y-%m-%d %H:%M") if photo.taken_at else "-"
        size = f"{photo.width}x{photo.height}" if photo.width else "-"
        rows.append((f"{hit.score:.3f}", str(photo.id), taken, size, _shown(photo)))
    if len(rows) == 1:
        return "no photos match"
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        + "  "
        + row[4]
        for row in rows
    )


def format_index_report(report: IndexReport) -> str:
    scan = report.scan
    rate = report.processed / report.seconds if report.seconds > 0 else 0.0
    lines = [
        f"{len(scan.files)} photos found in {scan.seconds:.1f} s; "
        f"{report.added} added, {report.updated} updated, {report.moved} moved, "
        f"{report.touched + report.reused} kept their vectors, {report.unchanged} unchanged, "
        f"{report.deleted} deleted, {len(report.failed)} could not be read "
        f"({report.seconds:.1f} s, {rate:.1f} photos/s)"
    ]
    for path, reason in report.failed[:_LISTED_ERRORS]:
        lines.append(f"  error: {path}: {reason}")
    if len(report.failed) > _LISTED_ERRORS:
        lines.append(
            f"  ... and {len(report.failed) - _LISTED_ERRORS} more (photos status --errors)"
        )
    if report.vanished:
        lines.append(f"  {report.vanished} files vanished while indexing")
    for root in scan.missing_roots:
        lines.append(f"  missing root: {root}")
    for root, why in report.refused_roots:
        lines.append(f"  refused to delete under {root}: {why}")
    if report.held:
        lines.append(
            f"  deletions held back: {report.held_files} indexed files would be deleted and "
            "were kept; if they really are gone, run again with --allow-deletions"
        )
        for held in report.held:
            lines.append(f"    {held.under}: {held.why} ({held.files} indexed files)")
    for folder, reason in scan.unreadable:
        lines.append(f"  cannot list {folder}: {reason} (its photos are kept)")
    recorded = {path for path, _ in report.failed}
    links = [(path, why) for path, why in scan.broken_links if path not in recorded]
    for path, reason in links[:_LISTED_ERRORS]:
        lines.append(f"  unreadable link {path}: {reason}")
    if len(links) > _LISTED_ERRORS:
        lines.append(f"  ... and {len(links) - _LISTED_ERRORS} more links that lead nowhere")
    if scan.external_links:
        lines.append(
            f"  {len(scan.external_links)} links leave the roots and were not followed "
            "(--follow-external-links), e.g. " + scan.external_links[0]
        )
    if scan.repeated_folders:
        lines.append(
            f"  {len(scan.repeated_folders)} folders reached twice (symlink loops or aliases) "
            "were walked once, e.g. " + scan.repeated_folders[0]
        )
    return "\n".join(lines)


def format_status(store: WritableStore, list_errors: bool, now: float | None = None) -> str:
    """`photos status`: what a person asks of an index, one fact a line."""
    stats = store.stats()
    model = store.model()
    size = f", {megabytes(stats.bytes_on_disk)}" if stats.bytes_on_disk is not None else ""
    rows = [
        ("index", f"{stats.location} ({stats.kind}{size})"),
        ("photos", f"{stats.photos:,} searchable"),
        (
            "image model",
            f"{model.name} ({model.dim}-d, {model.precision})" if model else "none yet (empty)",
        ),
        ("last change", _when(stats.last_change, time.time() if now is None else now)),
        ("last run", _last_run(stats.last_run, time.time() if now is None else now)),
        (
            "unreadable",
            f"{stats.errors:,} files" + ("" if list_errors or not stats.errors else
                                          " (photos status --errors lists them)"),
        ),
    ]  # fmt: skip
    width = max(len(label) for label, _ in rows)
    lines = [f"{label.ljust(width)}  {value}" for label, value in rows]
    if list_errors:
        lines += [display_path(f"  {photo.path}: {photo.error}") for photo in store.errors()]
    return "\n".join(lines)


def _last_run(run: LastRun | None, now: float) -> str:
    """'2026-11-25 14:02 (2 minutes ago), 1 min 5 s: 12 added, 1 deleted, 3 unreadable'."""
    if run is None:
        return "none recorded"
    counts = [(run.added, "added"), (run.updated, "updated"), (run.deleted, "deleted"),
              (run.failed, "unreadable"), (run.unchanged, "unchanged")]  # fmt: skip
    did = ", ".join(f"{n:,} {what}" for n, what in counts if n) or "nothing to do"
    took = tqdm.format_interval(run.seconds)
    stopped = "" if run.completed else " (interrupted; what it saved is kept)"
    return f"{_when(run.finished, now)}, took {took}: {did}{stopped}"


def _when(moment: float | None, now: float) -> str:
    if moment is None:
        return "never"
    stamp = datetime.datetime.fromtimestamp(moment).strftime("%Y-%m-%d %H:%M")
    seconds = max(0.0, now - moment)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{stamp} ({n} {unit}{'s' if n != 1 else ''} ago)"
    return f"{stamp} (just now)"
