"""`handspring photos ...`: index photo folders, search them, and look at the index.

Run it alone with `python -m handspring.photos.cli`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from handspring.default_precision import resolve_precision
from handspring.errors import HandspringError
from handspring.photos.cli_library import duplicates, list_photos, search, status
from handspring.photos.cli_options import (
    DEFAULT_IMAGE_MODEL,
    db_option,
    model_option,
    open_index,
    precision_option,
)
from handspring.photos.output import (
    format_index_report,
)
from handspring.photos.scanning.scan import DEFAULT_EXCLUDES, ScanOptions

if TYPE_CHECKING:  # the Qdrant store is imported when a command needs it
    from handspring.photos.stores.qdrant.cluster import ClusterSettings

EXIT_ROOT_REFUSED = 1  # a root missing, empty or unreadable: nothing deleted under it
EXIT_DELETIONS_HELD = 3  # deletions need --allow-deletions (2 is click's usage error)


@click.group("photos")
def photos() -> None:
    """Photo search: index folders of photos, then search them by text in any
    language, by example photos, or both."""


@photos.command()
@click.argument("roots", nargs=-1, required=True, type=click.Path(file_okay=False))
@db_option
@model_option(
    "Image model: alias, folder or HF repo id (default: the index's model, else "
    f"{DEFAULT_IMAGE_MODEL})."
)
@precision_option(DEFAULT_IMAGE_MODEL)
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help="ONNX Runtime threads.")
@click.option("--exclude", multiple=True, help="Folder name or pattern to skip (repeatable).")
@click.option(
    "--no-default-excludes", is_flag=True, help=f"Walk {', '.join(sorted(DEFAULT_EXCLUDES))} too."
)
@click.option("--include-hidden", is_flag=True, help="Index dot-files and dot-folders too.")
@click.option(
    "--follow-external-links", is_flag=True, help="Follow symlinks whose targets leave the roots."
)
@click.option(
    "--allow-empty-root",
    is_flag=True,
    help="Delete the photos of a root that is now empty (refused by default: unmounted?).",
)
@click.option(
    "--allow-deletions",
    is_flag=True,
    help="Apply the deletions held back for confirmation: a root losing more than "
    "--max-deleted-share or --max-deleted of its photos, or a folder (or a symlinked "
    "folder's target) that is missing or unreadable.",
)
@click.option(
    "--max-deleted-share",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="Share of a root's indexed photos a run may delete without --allow-deletions.",
)
@click.option(
    "--max-deleted",
    type=click.IntRange(0),
    default=1000,
    show_default=True,
    help="Photos per root a run may delete without --allow-deletions (the smaller limit wins).",
)
@click.option("--retry-errors", is_flag=True, help="Read files that failed before again.")
@click.option(
    "--commit-every",
    type=click.IntRange(1),
    default=64,
    show_default=True,
    help="Photos per commit once a run is under way (its first commits come after 1, 2, "
    "4, ... photos, so a run killed early keeps its first photos).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Photos saved, rate and time left. Default: a progress bar when stderr is a "
    "terminal, else a line every 10 s.",
)
@click.option(
    "--ray",
    default=None,
    metavar="ADDRESS",
    callback=lambda ctx, param, value: _ray_address(value),
    help="Read, decode and embed on a Ray cluster (pip install 'handspring[ray]'); the "
    "scan and the commits stay here. ADDRESS: auto ($RAY_ADDRESS, else a cluster running "
    "on this machine), local:N (start one of N CPUs for this run), ray://host:10001 (Ray "
    "Client) or host:port. Every worker must see ROOTS at the same paths.",
)
@click.option(
    "--shards",
    type=click.IntRange(1),
    default=None,
    help="Qdrant cluster: shards of a new collection, spread over the nodes (fixed once "
    "it exists; a later run only checks it). Default: Qdrant's (one per node).",
)
@click.option(
    "--replication-factor",
    type=click.IntRange(1),
    default=None,
    help="Qdrant cluster: copies of each shard on different nodes (set on a new "
    "collection, updated on an existing one). Default: Qdrant's (1).",
)
@click.option(
    "--write-consistency",
    type=click.IntRange(1),
    default=None,
    help="Qdrant cluster: replicas that must confirm each commit, at most the "
    "replication factor (set or updated like it). Default: Qdrant's (1).",
)
def index(
    roots: tuple[str, ...],
    db: str | None,
    image_model: str | None,
    precision: str,
    batch_size: int,
    threads: int | None,
    exclude: tuple[str, ...],
    no_default_excludes: bool,
    include_hidden: bool,
    follow_external_links: bool,
    allow_empty_root: bool,
    allow_deletions: bool,
    max_deleted_share: float,
    max_deleted: int,
    retry_errors: bool,
    commit_every: int,
    progress: bool | None,
    ray: str | None,
    shards: int | None,
    replication_factor: int | None,
    write_consistency: int | None,
) -> None:
    """Index the photos under ROOTS, incrementally: new and changed files are
    embedded, moved ones keep their vectors, deleted ones leave the index.

    \b
    Exit status:
      0  done
      1  a root is missing, empty or unreadable: nothing deleted under it
      3  deletions held back (a root shrank past the limits, or a folder vanished):
         everything else was indexed; run again with --allow-deletions to apply them
    1 wins when both apply."""
    from handspring.photos.indexing.index_progress import progress_for
    from handspring.photos.indexing.indexer import Indexer, IndexOptions

    excludes = frozenset(exclude) | (frozenset() if no_default_excludes else DEFAULT_EXCLUDES)
    cluster = _cluster_settings(shards, replication_factor, write_consistency)
    with open_index(db) as store:
        if cluster is not None:
            _configure_cluster(store, cluster)
        recorded = store.model()
        image_model = image_model or (recorded.name if recorded else DEFAULT_IMAGE_MODEL)
        options = IndexOptions(
            image_model=image_model,
            precision=resolve_precision(precision, image_model, ["image"]),
            batch_size=batch_size,
            commit_every=commit_every,
            allow_empty_root=allow_empty_root,
            allow_deletions=allow_deletions,
            max_deleted_share=max_deleted_share,
            max_deleted=max_deleted,
            retry_errors=retry_errors,
            threads=threads,
            scan=ScanOptions(
                exclude=excludes,
                include_hidden=include_hidden,
                follow_external_links=follow_external_links,
            ),
        )
        shown = progress_for(sys.stderr, progress)
        indexer = (
            Indexer(store, options, progress=shown)
            if ray is None
            else _ray_indexer(ray, store, options, shown)
        )
        try:
            report = indexer.run(roots)
        except KeyboardInterrupt:
            click.echo("interrupted: the work done so far is saved; run again to go on", err=True)
            sys.exit(130)
        except (HandspringError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(format_index_report(report), err=True)
    if ray is not None and report.processed:
        click.echo(indexer.stats.describe(), err=True)  # type: ignore[attr-defined]
    if report.refused_roots or report.scan.missing_roots:
        sys.exit(EXIT_ROOT_REFUSED)
    if report.held:
        sys.exit(EXIT_DELETIONS_HELD)


def _ray_address(value: str | None) -> str | None:
    """--ray's ADDRESS checked, as given (ray is imported only once a run needs it)."""
    if value is None:
        return None
    from handspring.photos.indexing.ray_cluster import parse_ray_address

    try:
        parse_ray_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ray") from exc
    return value


def _ray_indexer(address: str, store: Any, options: Any, progress: Any) -> Any:
    from handspring.photos.indexing.ray_cluster import parse_ray_address

    try:
        from handspring.photos.indexing.ray_pipeline import RayIndexer, RayOptions
    except ImportError as exc:
        raise click.ClickException(
            f"--ray needs Ray ({exc.name} is missing): pip install 'handspring[ray]'"
        ) from exc
    return RayIndexer(
        store,
        options,
        RayOptions(parse_ray_address(address)),
        progress=progress,
        notice=lambda line: click.echo(line, err=True),
    )


def _cluster_settings(
    shards: int | None, replication_factor: int | None, write_consistency: int | None
) -> ClusterSettings | None:
    """The Qdrant cluster flags as ClusterSettings, or None when none is given."""
    if shards is None and replication_factor is None and write_consistency is None:
        return None
    from handspring.photos.stores.qdrant.cluster import ClusterSettings

    try:
        return ClusterSettings(shards, replication_factor, write_consistency)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def _configure_cluster(store: Any, cluster: ClusterSettings) -> None:
    from handspring.photos.stores.qdrant.store import QdrantStore

    if not isinstance(store, QdrantStore) or not store.remote:
        raise click.UsageError(
            f"--shards, --replication-factor and --write-consistency shape a collection on "
            f"a Qdrant server (--db qdrant+http(s)://host:6333); {store!r} is not one"
        )
    try:
        store.configure_cluster(cluster)
    except HandspringError as exc:
        raise click.ClickException(str(exc)) from exc


for _command in (search, status, list_photos, duplicates):
    photos.add_command(_command)


if __name__ == "__main__":
    photos()
