"""The `handspring` command line."""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import click
import numpy as np

from handspring.default_precision import CHOICES as PRECISION_CHOICES
from handspring.default_precision import auto_help, resolve_precision
from handspring.registry import DEFAULT_CLIP
from handspring.runtime.backends import BACKENDS

IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".gif",
    ".tif",
    ".tiff",
    ".bmp",
    ".heic",
    ".heif",
}


AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3"}
# Folders given for an array modality are walked for these (single files go as they are).
ARRAY_SUFFIXES = {
    "depth": {".npy"} | IMAGE_SUFFIXES,
    "thermal": {".npy"} | IMAGE_SUFFIXES,
    "imu": {".npy", ".csv"},
}


def _expand(paths: tuple[str, ...], suffixes: set[str]) -> list[str]:
    """Files as given; folders walked (sorted) for files with these suffixes."""
    out: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out += sorted(
                str(p) for p in path.rglob("*") if p.suffix.lower() in suffixes and p.is_file()
            )
        else:
            out.append(raw)  # missing files are reported per item by the embedder
    return out


def _expand_images(paths: tuple[str, ...]) -> list[str]:
    return _expand(paths, IMAGE_SUFFIXES)


def _read_texts(texts: tuple[str, ...], texts_file: str | None) -> list[str]:
    out = list(texts)
    if texts_file:
        stream = sys.stdin if texts_file == "-" else open(texts_file, encoding="utf-8")  # noqa: SIM115
        with stream:
            out += [line.rstrip("\n") for line in stream]
    return out


def _photos_group() -> click.Command:
    from handspring.photos.cli import photos
    from handspring.photos.web.command import serve

    photos.add_command(serve)
    return photos


class _LazyGroup(click.Group):
    """Commands imported on first use: `handspring embed` does not pay for the server's
    and the photo search's imports."""

    # name -> "module:attribute" of the command, or a function that makes it.
    LAZY: ClassVar[dict[str, str | Callable[[], click.Command]]] = {
        "serve": "handspring.server.command:serve",
        "photos": _photos_group,
        "cache": "handspring.cli_cache:cache_group",
        "models": "handspring.cli_catalog:models",
        "download": "handspring.cli_catalog:download",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY and cmd_name not in self.commands:
            source = self.LAZY[cmd_name]
            if isinstance(source, str):
                module, attribute = source.split(":")
                command = getattr(importlib.import_module(module), attribute)
            else:
                command = source()
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup)
@click.option("-v", "--verbose", is_flag=True, help="Log model loading and skipped items.")
def main(verbose: bool) -> None:
    """Handspring: image, text and audio embeddings on the CPU, exact to the reference."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@main.command()
@click.option(
    "-m", "--model", default=DEFAULT_CLIP, show_default=True, help="Alias, folder or HF repo id."
)
@click.option("-i", "--image", "images", multiple=True, help="Image file or folder (repeatable).")
@click.option(
    "-a", "--audio", "sounds", multiple=True, help="Sound file or folder (repeatable; ImageBind)."
)
@click.option(
    "--depth", "depths", multiple=True, help="Depth map: .npy [1,224,224] or an image (repeatable)."
)
@click.option(
    "--thermal",
    "thermals",
    multiple=True,
    help="Thermal: .npy [1,224,224] or an image (repeatable).",
)
@click.option("--imu", "imus", multiple=True, help="IMU window: .npy [6,2000] or CSV (repeatable).")
@click.option("-t", "--text", "texts", multiple=True, help="Text to embed (repeatable).")
@click.option(
    "--texts-file",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="File with one text per line ('-' for stdin).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help=".json or .npy (default: JSON on stdout).",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISION_CHOICES),
    default="auto",
    show_default=True,
    help=auto_help(DEFAULT_CLIP, "image"),
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="auto: ONNX Runtime, or OpenVINO where it was measured faster (and for bf16); "
    "openvino needs pip install 'handspring[openvino]'.",
)
@click.option("--threads", type=int, default=None, help="ONNX Runtime threads (default: all CPUs).")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--no-normalize", is_flag=True, help="Raw embeddings instead of unit length.")
@click.option("--fast-decode", is_flag=True, help="JPEG draft-mode decoding (faster, near-exact).")
@click.option(
    "--no-exif-orientation", is_flag=True, help="Ignore EXIF rotation, as CLIPImageProcessor does."
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar (default: when stderr is a terminal).",
)
def embed(
    model: str,
    images: tuple[str, ...],
    sounds: tuple[str, ...],
    depths: tuple[str, ...],
    thermals: tuple[str, ...],
    imus: tuple[str, ...],
    texts: tuple[str, ...],
    texts_file: str | None,
    output: str | None,
    precision: str,
    backend: str,
    threads: int | None,
    batch_size: int,
    no_normalize: bool,
    fast_decode: bool,
    no_exif_orientation: bool,
    progress: bool | None,
) -> None:
    """Embed images, sounds, arrays and texts. Rows come out in input order: images,
    audio, depth, thermal, IMU, then texts.

    An item that cannot be read is reported on stderr and its row is null
    (JSON) or NaN (.npy); the exit status is then 1.
    """
    from tqdm import tqdm

    import handspring

    inputs: dict[str, list[str]] = {
        "image": _expand_images(images),
        "audio": _expand(sounds, AUDIO_SUFFIXES),
        "depth": _expand(depths, ARRAY_SUFFIXES["depth"]),
        "thermal": _expand(thermals, ARRAY_SUFFIXES["thermal"]),
        "imu": _expand(imus, ARRAY_SUFFIXES["imu"]),
        "text": _read_texts(texts, texts_file),
    }
    inputs = {modality: items for modality, items in inputs.items() if items}
    if not inputs:
        raise click.UsageError(
            "nothing to embed: give --image, --audio, --depth, --thermal, --imu "
            "and/or --text/--texts-file"
        )
    try:
        loaded = handspring.load(
            model,
            modalities=list(inputs),
            precision=resolve_precision(precision, model, list(inputs)),
            backend=backend,
            threads=threads,
            fast_decode=fast_decode,
            exif_orientation=not no_exif_orientation,
        )
    except (handspring.HandspringError, ValueError) as exc:  # bad model, or options it lacks
        raise click.ClickException(str(exc)) from exc
    normalize = not no_normalize
    show = sys.stderr.isatty() if progress is None else progress
    rows: list[np.ndarray] = []
    errors: dict[int, str] = {}
    for modality, items in inputs.items():
        size = max(batch_size, 32) if modality == "text" else batch_size
        unit = {"image": "img", "audio": "sound"}.get(modality, modality)
        with tqdm(total=len(items), unit=unit, disable=not show, file=sys.stderr) as bar:
            for part in loaded.iter_embed(modality, items, batch_size=size, normalize=normalize):
                for index, error in zip(part.error_index, part.errors, strict=True):
                    errors[len(rows) + index] = error.reason
                    click.echo(f"skipped {error}", err=True)
                rows.extend(part.embeddings)
                bar.update(len(part))
    matrix = np.stack(rows).astype(np.float32)
    sources = [(modality, item) for modality, items in inputs.items() for item in items]
    if output and output.endswith(".npy"):
        np.save(output, matrix)
    else:
        document = {
            "model": loaded.name,
            "dim": loaded.dim,
            "normalized": normalize,
            "items": [
                {
                    "type": kind,
                    "input": value,
                    "embedding": None if i in errors else matrix[i].tolist(),
                }
                | ({"error": errors[i]} if i in errors else {})
                for i, (kind, value) in enumerate(sources)
            ],
        }
        text = json.dumps(document)
        if output:
            Path(output).write_text(text)
        else:
            click.echo(text)
    if errors:
        unread = len(sources) - len(inputs.get("text", []))
        noun = "images" if list(inputs) in (["image"], ["image", "text"]) else "items"
        click.echo(f"{len(errors)} of {unread} {noun} could not be read", err=True)
        sys.exit(1)


@main.command("export")
@click.argument("model")
@click.argument("outdir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--precision", type=click.Choice(["fp32", "int8"]), default="fp32", show_default=True)
@click.option(
    "--modalities", default=None, help="Comma-separated towers to export (default: all it has)."
)
@click.option(
    "--allow-ungated", is_flag=True, help="Export int8 for towers whose int8 was never measured."
)
def export_command(
    model: str, outdir: Path, precision: str, modalities: str | None, allow_ungated: bool
) -> None:
    """Write MODEL to OUTDIR (absent or empty) as one standalone ONNX file per tower, with
    model.json, preprocess.json and the tokenizer: vectors equal to handspring's from any
    ONNX Runtime, without handspring (see docs/export.md)."""
    from handspring.errors import HandspringError
    from handspring.export import export_model

    asked = [m.strip() for m in modalities.split(",") if m.strip()] if modalities else None
    try:
        folder = export_model(
            model, outdir, precision=precision, modalities=asked, allow_ungated=allow_ungated
        )
    except (HandspringError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        click.echo(f"{path.relative_to(folder)}  {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
