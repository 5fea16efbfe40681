"""Options the photo commands share with the rest of the command line: `-m/--model` for
the image model (the old `--image-model` still works, unlisted) and `--precision` with
one default everywhere ("auto": int8 where the model's measured gate passed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from handspring.default_precision import CHOICES, auto_help

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
