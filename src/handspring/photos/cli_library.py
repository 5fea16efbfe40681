"""`handspring photos search|list|status|duplicates`: the commands that read the index."""

from __future__ import annotations

import datetime

import click

from handspring.errors import HandspringError
from handspring.photos.cli_options import (
    DEFAULT_THRESHOLD,
    date_options,
    db_option,
    folder_option,
    format_option,
    open_index,
    parse_day,
)
from handspring.photos.output import format_duplicates, format_hits, format_photos, format_status
from handspring.photos.stores.records import SearchFilter


@click.command()
@click.argument("query", nargs=-1)
@db_option
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
@date_options(
    "Taken on this month and day, any year; without a value, today (put it after QUERY). "
    "With no QUERY, lists those photos newest first, as `photos list` does."
)
@click.option("--min-score", type=float, default=None, help="Keep cosine >= this.")
@folder_option
@click.option("-k", "--top", type=click.IntRange(0), default=10, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@format_option("table", "paths", "json")
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
            on_this_day=parse_day(on_this_day),
            min_score=min_score,
            folder=os.path.abspath(folder) if folder else None,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    with open_index(db, read_only=True) as store:
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


@click.command()
@db_option
@click.option("--errors", "list_errors", is_flag=True, help="List the files that failed.")
def status(db: str | None, list_errors: bool) -> None:
    """What the index holds: photos, model, size on disk, last change, files that could
    not be read."""
    with open_index(db) as store:
        click.echo(format_status(store, list_errors))


@click.command("list")
@db_option
@date_options("Taken on this month and day, any year; without a value, today.")
@folder_option
@click.option("-k", "--top", type=click.IntRange(1), default=None, help="At most this many.")
@format_option("table", "paths", "json")
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
            on_this_day=parse_day(on_this_day),
            folder=os.path.abspath(folder) if folder else None,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    photos_listed = []
    with open_index(db, read_only=True) as store:
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


@click.command()
@db_option
@click.option(
    "--threshold",
    type=click.FloatRange(0.5, 1.0),
    default=DEFAULT_THRESHOLD,
    show_default=True,
    help="Cosine similarity at or above which two photos are near-duplicates.",
)
@folder_option
@format_option("table", "json")
def duplicates(db: str | None, threshold: float, folder: str | None, output: str) -> None:
    """Groups of near-duplicate photos, with sizes and dates, to choose what to keep.
    It only lists them: nothing is deleted. Every pair is compared exactly (an int8
    pass, then float32 for the pairs near the threshold)."""
    import os

    from handspring.photos.search.duplicates import find_duplicates

    flt = SearchFilter(folder=os.path.abspath(folder) if folder else None)
    with open_index(db, read_only=True) as store:
        groups = find_duplicates(store, threshold, flt)
        found = [(group, [store.get(i) for i in group.photo_ids]) for group in groups]
        compared = store.count(flt)
    click.echo(format_duplicates(found, compared, threshold, output))
