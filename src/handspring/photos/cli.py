"""`handspring photos ...`: index photo folders, search them, and look at the index.

Run it alone with `python -m handspring.photos.cli`.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from handspring.default_precision import resolve_precision
from handspring.errors import HandspringError
from handspring.photos.cli_options import (
    DEFAULT_IMAGE_MODEL,
    DEFAULT_THRESHOLD,
    model_option,
    precision_option,
)
from handspring.photos.output import (
    format_duplicates,
    format_hits,
    format_index_report,
    format_photos,
    format_status,
)
from handspring.photos.scanning.scan import DEFAULT_EXCLUDES, ScanOptions
from handspring.photos.stores.records import SearchFilter
from handspring.photos.stores.store import DEFAULT_STORE_ENV, default_store_url, open_store

if TYPE_CHECKING:  # qdrant_store is imported when a command needs it
    from handspring.photos.stores.qdrant_store import ClusterSettings

EXIT_ROOT_REFUSED = 1  # a root missing, empty or unreadable: nothing deleted under it
EXIT_DELETIONS_HELD = 3  # deletions need --allow-deletions (2 is click's usage error)

DB_HELP = (
    "The index: a file path or sqlite:///abs/path.db (SQLite, the default), "
    "qdrant:///abs/folder (Qdrant, embedded) or qdrant+http(s)://host:port. "
    f"Default: ${DEFAULT_STORE_ENV}, else ~/.local/share/handspring/photos.db."
)


def _db_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--db", default=None, metavar="URL", help=DB_HELP)(command)


@click.group("photos")
def photos() -> None:
    """Photo search: index folders of photos, then search them by text in any
    language, by example photos, or both."""


@photos.command()
@click.argument("roots", nargs=-1, required=True, type=click.Path(file_okay=False))
@_db_option
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
    with _open(db) as store:
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
    from handspring.photos.stores.qdrant_store import ClusterSettings

    try:
        return ClusterSettings(shards, replication_factor, write_consistency)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def _configure_cluster(store: Any, cluster: ClusterSettings) -> None:
    from handspring.photos.stores.qdrant_store import QdrantStore

    if not isinstance(store, QdrantStore) or not store.remote:
        raise click.UsageError(
            f"--shards, --replication-factor and --write-consistency shape a collection on "
            f"a Qdrant server (--db qdrant+http(s)://host:6333); {store!r} is not one"
        )
    try:
        store.configure_cluster(cluster)
    except HandspringError as exc:
        raise click.ClickException(str(exc)) from exc


def _parse_day(value: str | None) -> datetime.date | None:
    if value is None:
        return None
    if value == "today":
        return datetime.date.today()
    for pattern in ("%Y-%m-%d", "%m-%d"):
        try:
            parsed = datetime.datetime.strptime(value, pattern)
        except ValueError:
            continue
        # A month-day alone goes in a leap year, so Feb 29 is a valid day.
        return (
            parsed.date()
            if pattern == "%Y-%m-%d"
            else datetime.date(2000, parsed.month, parsed.day)
        )
    raise click.BadParameter(f"{value!r}: expected YYYY-MM-DD or MM-DD", param_hint="--on-this-day")


@photos.command()
@click.argument("query", nargs=-1)
@_db_option
@click.option("-a", "--add", "added", multiple=True, help="Another term to add (repeatable).")
@click.option("-s", "--subtract", multiple=True, help="A term to subtract (repeatable).")
@click.option(
    "--similar",
    type=int,
    default=None,
    metavar="ID",
    help="Photos like this indexed photo, which is left out (as for a QUERY of just #ID).",
)
@click.option(
    "--audio",
    "sounds",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Photos that sound like this file (WAV, FLAC, OGG, MP3; an ImageBind index).",
)
@click.option(
    "--text-model",
    default=None,
    help="Text model for queries (default: the multilingual model for st-clip-vit-b-32, "
    "else the image model's own text tower).",
)
@click.option("--from", "not_before", type=click.DateTime(["%Y-%m-%d"]), help="Taken on or after.")
@click.option("--to", "not_after", type=click.DateTime(["%Y-%m-%d"]), help="Taken on or before.")
@click.option(
    "--on-this-day",
    is_flag=False,
    flag_value="today",
    default=None,
    metavar="[YYYY-MM-DD|MM-DD]",
    help="Taken on this month and day, any year; without a value, today (put it after "
    "QUERY). With no QUERY, lists those photos newest first, as `photos list` does.",
)
@click.option("--min-score", type=float, default=None, help="Keep cosine >= this.")
@click.option("--folder", type=click.Path(file_okay=False), help="Only photos under this folder.")
@click.option("-k", "--top", type=click.IntRange(0), default=10, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "paths", "json"]),
    default="table",
    show_default=True,
)
def search(
    query: tuple[str, ...],
    db: str | None,
    added: tuple[str, ...],
    subtract: tuple[str, ...],
    similar: int | None,
    sounds: tuple[str, ...],
    text_model: str | None,
    not_before: datetime.datetime | None,
    not_after: datetime.datetime | None,
    on_this_day: str | None,
    min_score: float | None,
    folder: str | None,
    top: int,
    offset: int,
    output: str,
) -> None:
    """Search by QUERY, rclip style: "horse + stripes", "./beach.jpg - 0.5:people",
    "2:golden retriever + #42" (#42: an indexed photo's id). A QUERY of just #42 is
    --similar 42: photos like it, itself left out."""
    import os

    from handspring.photos.search.searcher import (
        QueryModels,
        QueryTerm,
        Searcher,
        default_text_model,
        parse_query,
    )

    text = " ".join(query)
    if similar is not None and (text or added or subtract or sounds):
        raise click.UsageError("--similar takes no query terms")
    if similar is None and not text and not added and not sounds:
        if on_this_day is None:
            raise click.UsageError(
                "give a QUERY, --add terms, --audio FILE or --similar ID (or --on-this-day "
                "alone; `photos list` lists photos without a query)"
            )
        ctx = click.get_current_context()
        ctx.invoke(
            list_photos,
            db=db,
            not_before=not_before,
            not_after=not_after,
            on_this_day=on_this_day,
            folder=folder,
            top=top or None,
            output=output,
        )
        return
    try:
        flt = SearchFilter(
            not_before=not_before.date() if not_before else None,
            not_after=not_after.date() if not_after else None,
            on_this_day=_parse_day(on_this_day),
            min_score=min_score,
            folder=os.path.abspath(folder) if folder else None,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    with _open(db, read_only=True) as store:
        model = store.model()
        if model is None:
            raise click.ClickException("the index is empty: run `handspring photos index` first")
        models = QueryModels(
            model.name, text_model or default_text_model(model.name), precision=model.precision
        )
        searcher = Searcher(store, models, allow_paths=True)
        try:
            if similar is not None:
                hits = searcher.similar(similar, flt, top, offset)
            else:
                terms = parse_query(text) if text else []
                terms += [QueryTerm("audio_path", sound) for sound in sounds]
                for extra, sign in [(t, "+") for t in added] + [(t, "-") for t in subtract]:
                    terms += parse_query(f"{sign} {_quoted(extra)}")
                hits = searcher.search(terms, flt, top, offset)
        except KeyError as exc:
            raise click.ClickException(str(exc.args[0])) from exc
        except (HandspringError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(format_hits(hits, output))


def _quoted(term: str) -> str:
    # A term given as an option is one term, even with " + " inside.
    return term if term.startswith('"') or " " not in term else f'"{term}"'


@photos.command()
@_db_option
@click.option("--errors", "list_errors", is_flag=True, help="List the files that failed.")
def status(db: str | None, list_errors: bool) -> None:
    """What the index holds: photos, model, size on disk, last change, files that could
    not be read."""
    with _open(db) as store:
        click.echo(format_status(store, list_errors))


@photos.command("list")
@_db_option
@click.option("--from", "not_before", type=click.DateTime(["%Y-%m-%d"]), help="Taken on or after.")
@click.option("--to", "not_after", type=click.DateTime(["%Y-%m-%d"]), help="Taken on or before.")
@click.option(
    "--on-this-day",
    is_flag=False,
    flag_value="today",
    default=None,
    metavar="[YYYY-MM-DD|MM-DD]",
    help="Taken on this month and day, any year; without a value, today.",
)
@click.option("--folder", type=click.Path(file_okay=False), help="Only photos under this folder.")
@click.option("-k", "--top", type=click.IntRange(1), default=None, help="At most this many.")
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "paths", "json"]),
    default="table",
    show_default=True,
)
def list_photos(
    db: str | None,
    not_before: datetime.datetime | None,
    not_after: datetime.datetime | None,
    on_this_day: str | None,
    folder: str | None,
    top: int | None,
    output: str,
) -> None:
    """The indexed photos, newest first by the time taken, then those without a date
    (newest file first). Date filters leave undated photos out, and say how many."""
    import os

    from handspring.photos.stores.browsing import BrowseKey

    try:
        flt = SearchFilter(
            not_before=not_before.date() if not_before else None,
            not_after=not_after.date() if not_after else None,
            on_this_day=_parse_day(on_this_day),
            folder=os.path.abspath(folder) if folder else None,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    photos_listed = []
    with _open(db, read_only=True) as store:
        after: BrowseKey | None = None
        while top is None or len(photos_listed) < top:
            want = 500 if top is None else min(500, top - len(photos_listed))
            page = store.browse(flt, after, want)
            photos_listed += page.photos
            if page.next is None:
                break
            after = page.next
        hidden = store.timeline(flt).undated if flt.needs_taken_at else 0
    click.echo(format_photos(photos_listed, output))
    if hidden and output == "table":
        click.echo(f"({hidden} photos without a date left out by the date filters)", err=True)


@photos.command()
@_db_option
@click.option(
    "--threshold",
    type=click.FloatRange(0.5, 1.0),
    default=DEFAULT_THRESHOLD,
    show_default=True,
    help="Cosine similarity at or above which two photos are near-duplicates.",
)
@click.option("--folder", type=click.Path(file_okay=False), help="Only photos under this folder.")
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
)
def duplicates(db: str | None, threshold: float, folder: str | None, output: str) -> None:
    """Groups of near-duplicate photos, with sizes and dates, to choose what to keep.
    It only lists them: nothing is deleted. Every pair is compared exactly (an int8
    pass, then float32 for the pairs near the threshold)."""
    import os

    from handspring.photos.search.duplicates import find_duplicates

    flt = SearchFilter(folder=os.path.abspath(folder) if folder else None)
    with _open(db, read_only=True) as store:
        groups = find_duplicates(store, threshold, flt)
        found = [(group, [store.get(i) for i in group.photo_ids]) for group in groups]
        compared = store.count(flt)
    click.echo(format_duplicates(found, compared, threshold, output))


class _open:
    """open_store for a command: errors as clean messages, closed on the way out."""

    def __init__(self, db: str | None, read_only: bool = False) -> None:
        self.url = db or default_store_url()
        self.read_only = read_only

    def __enter__(self) -> Any:
        try:
            self.store = open_store(self.url, read_only=self.read_only)
        except HandspringError as exc:
            raise click.ClickException(str(exc)) from exc
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()


if __name__ == "__main__":
    photos()
