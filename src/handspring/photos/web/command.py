"""`handspring photos serve`: the photo-search web UI and its JSON API."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from handspring.photos.cli_options import DB_HELP, model_option
from handspring.server.config import DEFAULT_KEEP_ALIVE_S, is_loopback

DEFAULT_PORT = 8080
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def default_thumbnail_cache() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "handspring" / "thumbnails"


def _keys_given(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    # click reads an empty variable as unset, which would turn authentication off unsaid.
    variable = param.envvar if isinstance(param.envvar, str) else None
    if not value and variable and os.environ.get(variable, "unset").strip() == "":
        raise click.BadParameter(
            f"{variable} is empty, which would turn authentication off: give a key, or leave "
            "it unset",
            ctx=ctx,
            param=param,
        )
    return value


@click.command("serve")
@click.option("--db", "store_url", default=None, metavar="URL", help=DB_HELP)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    envvar="HANDSPRING_PHOTOS_API_KEY",
    callback=_keys_given,
    help="Require 'Authorization: Bearer <key>' on the API (repeatable; or set "
    "$HANDSPRING_PHOTOS_API_KEY, which keeps the key out of the process list).",
)
@click.option("--oidc-issuer", help="Accept OIDC access tokens (JWTs) from this issuer URL.")
@click.option("--oidc-audience", help="The audience (aud) OIDC tokens must be issued for.")
@click.option(
    "--oidc-jwks-url", help="Where the issuer's signing keys are (default: from its discovery)."
)
@model_option(
    "Image model, for example photos given as queries. Default: the one the index was built with."
)
@click.option(
    "--text-model",
    help="Model for text queries. Default: the multilingual model for the original tool's "
    "image model (st-clip-vit-b-32), else the image model's own text tower.",
)
@click.option(
    "--precision",
    type=click.Choice(["int8", "fp32"]),
    help="Image model precision for example photos. Default: the index's.",
)
@click.option(
    "--thumbnail-cache",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for resized photos. Default: $XDG_CACHE_HOME/handspring/thumbnails.",
)
@click.option(
    "--allow-unauthenticated-remote",
    is_flag=True,
    help="Allow listening beyond loopback with no API key or OIDC (anyone who can reach "
    "the port can then see every photo).",
)
def serve(
    store_url: str | None,
    host: str,
    port: int,
    api_keys: tuple[str, ...],
    oidc_issuer: str | None,
    oidc_audience: str | None,
    oidc_jwks_url: str | None,
    image_model: str | None,
    text_model: str | None,
    precision: str | None,
    thumbnail_cache: Path | None,
    allow_unauthenticated_remote: bool,
) -> None:
    """Serve the photo-search web UI (and its JSON API under /api)."""
    # Imported here so `handspring --help` stays quick and the CLI loads without the extras.
    import uvicorn

    from handspring.errors import HandspringError
    from handspring.photos.search.searcher import QueryModels, Searcher, default_text_model
    from handspring.photos.stores.store import default_store_url, open_store
    from handspring.photos.web.app import create_app
    from handspring.photos.web.auth import AuthConfig, OidcConfig

    try:
        oidc = None
        if oidc_issuer or oidc_audience or oidc_jwks_url:
            if not (oidc_issuer and oidc_audience):
                raise click.UsageError("OIDC needs both --oidc-issuer and --oidc-audience")
            oidc = OidcConfig(issuer=oidc_issuer, audience=oidc_audience, jwks_url=oidc_jwks_url)
        auth = AuthConfig(api_keys=api_keys, oidc=oidc) if (api_keys or oidc) else None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    host = host.strip("[]")  # an IPv6 address as written in a URL
    loopback = is_loopback(host)
    if auth is None and not loopback and not allow_unauthenticated_remote:
        raise click.UsageError(
            f"--host {host} is reachable from other machines: give --api-key or --oidc-issuer "
            "(or --allow-unauthenticated-remote if that is really meant)"
        )

    url = store_url or default_store_url()
    try:
        store = open_store(url, read_only=True)
    except HandspringError as exc:
        raise click.ClickException(str(exc)) from exc
    model_info = store.model()
    if model_info is None and image_model is None:
        store.close()
        raise click.ClickException(f"{url}: the index is empty; run `handspring photos index`")
    image_model = image_model or model_info.name
    precision = precision or (model_info.precision if model_info else "int8")
    text_model = text_model or default_text_model(image_model)
    searcher = Searcher(store, QueryModels(image_model, text_model, precision))
    app = create_app(
        store,
        searcher,
        auth=auth,
        thumbnail_cache=thumbnail_cache or default_thumbnail_cache(),
        # On loopback, only loopback Host headers: no DNS-rebinding way in from a web page.
        allowed_hosts=[*LOOPBACK_NAMES, host] if loopback else None,
    )
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"Serving {store.count()} photos from {url} on http://{shown}:{port}/ "
        f"({'auth required' if auth else 'no auth'})",
        err=True,
    )
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            server_header=False,
            # As `handspring serve`'s: never the first to close a connection a client reuses.
            timeout_keep_alive=DEFAULT_KEEP_ALIVE_S,  # type: ignore[arg-type]
        )
    finally:
        store.close()


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    serve()


if __name__ == "__main__":
    main()
