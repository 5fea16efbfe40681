"""`handspring cache`: the graphs built from each model, listed and pruned."""

from __future__ import annotations

import json
import shutil
import time

import click

from handspring.default_precision import AUTO, resolve_precision
from handspring.default_precision import CHOICES as PRECISION_CHOICES
from handspring.runtime.backends import BACKENDS


@click.group("cache", invoke_without_command=True)
@click.pass_context
def cache_group(ctx: click.Context) -> None:
    """The graph cache: the graphs built from each model, and pruning them."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(cache_list)


@cache_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cache_list(as_json: bool) -> None:
    """Each built graph: its model, tower and precision, its size against its weights',
    when it was last loaded, and whether it is stale."""
    from handspring.runtime.cache_entries import cache_entries
    from handspring.runtime.graph_cache import cache_root

    entries = cache_entries()
    if as_json:
        rows = [
            {
                "key": e.key,
                "source": e.source,
                "graph": e.describe(),
                "bytes": e.bytes,
                "weights_bytes": e.info.get("weights_bytes"),
                "last_used": e.last_used,
                "stale": e.stale_reason,
            }
            for e in entries
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"graph cache: {cache_root() / 'graphs'}")
    for e in entries:
        weights = e.info.get("weights_bytes") or 0
        ratio = f"{e.bytes / weights:.2f}x its weights" if weights else "weights unknown"
        used = time.strftime("%Y-%m-%d", time.localtime(e.last_used))
        stale = f"  STALE: {e.stale_reason}" if e.stale_reason else ""
        click.echo(
            f"{e.key[:12]}  {e.source}  {e.describe()}  {e.bytes / 2**20:.0f} MiB ({ratio})  "
            f"last used {used}{stale}"
        )
    total = sum(e.bytes for e in entries)
    stale_bytes = sum(e.bytes for e in entries if e.stale_reason)
    click.echo(
        f"{len(entries)} graphs, {total / 2**20:.0f} MiB; {stale_bytes / 2**20:.0f} MiB stale "
        "(`handspring cache prune` removes them)"
    )


@cache_group.command("build")
@click.argument("model")
@click.option(
    "--precision",
    "precisions",
    type=click.Choice(PRECISION_CHOICES),
    multiple=True,
    default=(AUTO,),
    show_default=True,
    help="Repeat for several; auto is what the other commands pick for MODEL.",
)
@click.option(
    "--modalities", default=None, help="Comma-separated towers (default: all the model has)."
)
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
def cache_build(
    model: str, precisions: tuple[str, ...], modalities: str | None, backend: str
) -> None:
    """Build MODEL's graphs into the cache now, without embedding anything: the step an
    image build runs so that its runtime-only install (requirements-runtime.txt: no onnx,
    no huggingface_hub) starts from built graphs and a local folder."""
    import handspring
    from handspring.errors import HandspringError
    from handspring.runtime.cache_entries import cache_entries

    asked = [m.strip() for m in modalities.split(",") if m.strip()] if modalities else None
    before = {e.key for e in cache_entries()}
    for precision in dict.fromkeys(resolve_precision(p, model, asked) for p in precisions):
        try:
            loaded = handspring.load(model, asked, precision=precision, backend=backend)
        except HandspringError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"{model}: {', '.join(loaded.modalities)} ready at {precision}")
    for entry in cache_entries():
        if entry.key not in before:
            click.echo(f"built {entry.key[:12]}  {entry.describe()}  {entry.bytes / 2**20:.0f} MiB")


@cache_group.command("prune")
@click.option("--all", "everything", is_flag=True, help="Remove every graph (rebuilt on use).")
@click.option(
    "--unused-days", type=float, default=None, help="Also remove graphs not loaded for N days."
)
@click.option("--dry-run", is_flag=True, help="Say what would go, remove nothing.")
def cache_prune(everything: bool, unused_days: float | None, dry_run: bool) -> None:
    """Remove the graphs that can never load again (an older format, or weights that are
    gone), and abandoned builds; with options, more."""
    from handspring.runtime.cache_entries import abandoned_builds, cache_entries, prunable, remove

    chosen = prunable(cache_entries(), everything=everything, unused_days=unused_days)
    freed = 0
    for entry, reason in chosen:
        click.echo(
            f"{'would remove' if dry_run else 'removed'} {entry.key[:12]} "
            f"({entry.source} {entry.describe()}, {entry.bytes / 2**20:.0f} MiB): {reason}"
        )
        if not dry_run:
            remove(entry)
        freed += entry.bytes
    for folder in abandoned_builds():
        click.echo(f"{'would remove' if dry_run else 'removed'} {folder.name}: an abandoned build")
        if not dry_run:
            shutil.rmtree(folder)
    verb = "would free" if dry_run else "freed"
    click.echo(f"{len(chosen)} graphs, {verb} {freed / 2**20:.0f} MiB")
