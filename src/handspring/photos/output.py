"""Text the photo commands print: search results (table, paths, JSON), the index
run's summary, and the index's status."""

from __future__ import annotations

import json
from typing import Any

from handspring.photos.indexing.indexer import IndexReport
from handspring.photos.stores.records import Hit, Photo
from handspring.photos.stores.store import WritableStore

_LISTED_ERRORS = 10  # per run summary; `photos status --errors` lists them all


def hit_json(hit: Hit) -> dict[str, Any]:
    photo = hit.photo
    return {
        "id": photo.id,
        "score": round(hit.score, 6),
        "path": photo.path,
        "taken_at": photo.taken_at.isoformat() if photo.taken_at else None,
        "width": photo.width,
        "height": photo.height,
        "size": photo.size,
        "gps": list(photo.gps) if photo.gps else None,
        "sha256": photo.sha256,
    }


def format_hits(hits: list[Hit], output: str) -> str:
    if output == "json":
        return json.dumps([hit_json(h) for h in hits], ensure_ascii=False, indent=1)
    if output == "paths":
        return "\n".join(h.photo.path for h in hits)
    rows = [("score", "id", "taken", "size", "path")]
    for hit in hits:
        photo = hit.photo
        taken = photo.taken_at.strftime("%Y-%m-%d %H:%M") if photo.taken_at else "-"
        size = f"{photo.width}x{photo.height}" if photo.width else "-"
        rows.append((f"{hit.score:.3f}", str(photo.id), taken, size, photo.path))
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


def format_status(store: WritableStore, list_errors: bool) -> str:
    model = store.model()
    errors: list[Photo] = store.errors()
    lines = [
        f"index: {store!r}",
        f"image model: {model.name} ({model.dim}-d, {model.precision})" if model else "empty",
        f"searchable photos: {store.count()}",
        f"files that could not be read: {len(errors)}",
    ]
    if list_errors:
        lines += [f"  {photo.path}: {photo.error}" for photo in errors]
    return "\n".join(lines)
