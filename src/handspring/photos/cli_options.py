"""What the photo commands share: `-m/--model` for the image model (the old
`--image-model` still works, unlisted) and `--precision` with one default everywhere
("auto": int8 where the model's measured gate passed), `--db`, days as the filters take
them, and opening the index with clean errors."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import click

from handspring.default_precision import CHOICES, auto_help
from handspring.errors import HandspringError
from handspring.photos.stores.store import DEFAULT_STORE_ENV, default_store_url, open_store

# As indexing/indexer.py's and search/duplicates.py's (a test checks), without their imports.
DEFAULT_IMAGE_MODEL = "st-clip-vit-b-32"  # the original photo-search tool's image model
DEFAULT_THRESHOLD = 0.97


def model_option(help_text: str, dest: str = "image_model") -> Callable[[Any], Any]:
    """-m/--model into `dest`, and the hidden alias --image-model into the same parameter
    (the command's signature is unchanged); both given and different is a usage error."""

    def main(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        earlier = ctx.params.get(dest)
        if value is not None and earlier is not None and earlier != value:
            raise click.UsageError("--model and --image-model name different models")
        return value if value is not None else earlier

    def alias(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is None:
            return
        earlier = ctx.params.get(dest)
        if earlier is not None and earlier != value:
            raise click.UsageError("--model and --image-model name different models")
        ctx.params[dest] = value

    def decorate(command: Any) -> Any:
        command = click.option(
            "--image-model", "image_model_alias", hidden=True, expose_value=False, callback=alias
        )(command)
        return click.option(
            "-m", "--model", dest, default=None, metavar="MODEL", callback=main, help=help_text
        )(command)

    return decorate


def precision_option(model: str, tower: str = "image") -> Callable[[Any], Any]:
    return click.option(
        "--precision",
        type=click.Choice(CHOICES),
        default="auto",
        show_default=True,
        help=auto_help(model, tower),
    )


DB_HELP = (
    "The index: a file path or sqlite:///abs/path.db (SQLite, the default), "
    "qdrant:///abs/folder (Qdrant, embedded) or qdrant+http(s)://host:port. "
    f"Default: ${DEFAULT_STORE_ENV}, else ~/.local/share/handspring/photos.db."
)


def db_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--db", default=None, metavar="URL", help=DB_HELP)(command)


folder_option = click.option(
    "--folder", type=click.Path(file_okay=False), help="Only photos under this folder."
)


def format_option(*formats: str) -> Callable[[Any], Any]:
    """--format into `output`, the first of `formats` by default."""
    return click.option(
        "--format", "output", type=click.Choice(formats), default=formats[0], show_default=True
    )


def date_options(on_this_day_help: str) -> Callable[[Any], Any]:
    """--from, --to and --on-this-day [DAY], as the search filters take them."""
    dates = click.DateTime(["%Y-%m-%d"])
    options = (
        click.option("--from", "not_before", type=dates, help="Taken on or after."),
        click.option("--to", "not_after", type=dates, help="Taken on or before."),
        click.option(
            "--on-this-day",
            is_flag=False,
            flag_value="today",
            default=None,
            metavar="[YYYY-MM-DD|MM-DD]",
            help=on_this_day_help,
        ),
    )

    def add(command: Any) -> Any:
        for option in reversed(options):
            command = option(command)
        return command

    return add


def parse_day(value: str | None) -> datetime.date | None:
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


class open_index:
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
