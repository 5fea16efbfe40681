"""`handspring serve`: every option is a flag and a `HANDSPRING_*` environment variable."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from handspring.default_precision import CHOICES as PRECISION_CHOICES
from handspring.default_precision import auto_help, resolve_precision
from handspring.registry import DEFAULT_CLIP, DEFAULT_TEXT
from handspring.runtime.backends import BACKENDS
from handspring.server.config import (
    DEFAULT_IMAGE_FORMATS,
    DEFAULT_KEEP_ALIVE_S,
    ModelSpec,
    ServerConfig,
)

if TYPE_CHECKING:  # uvicorn and the app are imported when a server starts, not for --help
    import uvicorn
    from starlette.types import ASGIApp

    from handspring.server.guards.shutdown import GracefulServer

DEFAULT_MODELS = (f"clip={DEFAULT_CLIP}", f"minilm={DEFAULT_TEXT}")


def _option(*decls: str, env: str | None = None, **kwargs: Any) -> Callable:
    """A flag whose environment variable is HANDSPRING_<NAME> (its first spelling)."""
    env = env or "HANDSPRING_" + decls[0].lstrip("-").split("/")[0].replace("-", "_").upper()
    return click.option(*decls, envvar=env, show_envvar=True, show_default=True, **kwargs)


def _keys_given(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[str, ...]:
    """The keys: each --api-key, or HANDSPRING_API_KEY as a comma-separated list. An empty
    one is refused: it would turn authentication off without a word."""
    where = "--api-key"
    from_env = (
        not values or ctx.get_parameter_source(str(param.name)) is ParameterSource.ENVIRONMENT
    )
    if from_env and isinstance(param.envvar, str) and param.envvar in os.environ:
        # click reads an empty variable as unset, and splits at spaces: read it ourselves.
        values, where = (os.environ[param.envvar],), param.envvar
    keys = tuple(key for value in values for key in value.split(","))
    if any(not key.strip() for key in keys):
        what = "is empty" if not any(key.strip() for key in keys) else "holds an empty key"
        raise click.BadParameter(
            f"{where} {what}, which would turn authentication off: give keys, or leave "
            "--api-key and HANDSPRING_API_KEY unset",
            ctx=ctx,
            param=param,
        )
    if any(key != key.strip() for key in keys):
        raise click.BadParameter(f"{where}: a key has spaces around it", ctx=ctx, param=param)
    return keys


def _key_file(ctx: click.Context, param: click.Parameter, path: str | None) -> tuple[str, ...]:
    """Keys from a file (a mounted secret): one per line; blank lines and # comments skipped."""
    if path is None:
        return ()
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise click.BadParameter(f"{path}: {exc.strerror or exc}", ctx=ctx, param=param) from None
    keys = tuple(
        line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")
    )
    if not keys:
        raise click.BadParameter(f"{path} holds no key", ctx=ctx, param=param)
    return keys


@click.command()
@_option(
    "--model",
    "models",
    env="HANDSPRING_MODELS",
    multiple=True,
    default=DEFAULT_MODELS,
    help="NAME=SOURCE[:fp32|:int8|:bf16] or SOURCE; repeat for several models. SOURCE is an "
    "alias, a repo id or a folder. In the environment, separate them with spaces.",
)
@_option(
    "--precision",
    type=click.Choice(PRECISION_CHOICES),
    default="auto",
    help="Precision of models that name none. " + auto_help(DEFAULT_CLIP, "image"),
)
@_option("--host", default="127.0.0.1", help="Address to bind; 0.0.0.0 to listen on every one.")
@_option("--port", type=int, default=8080)
@_option(
    "--grpc-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Also serve gRPC on this port (same host): the Open Inference Protocol (KServe v2 / "
    "Triton) and the seed project's Embeddings service. Off unless given.",
)
@_option(
    "--api-key",
    multiple=True,
    callback=_keys_given,
    help="Require 'Authorization: Bearer KEY' (health routes stay public); repeat it, or give "
    "HANDSPRING_API_KEY as a comma-separated list, for several keys. Needed beyond loopback "
    "unless --allow-unauthenticated-remote.",
)
@_option(
    "--api-key-file",
    default=None,
    callback=_key_file,
    help="A file of API keys, one per line (a mounted secret); added to --api-key's.",
)
@_option(
    "--allow-unauthenticated-remote",
    is_flag=True,
    default=False,
    help="Allow a --host beyond loopback with no API key (anyone who can reach the port "
    "can then use the server).",
)
@_option("--preload/--lazy", default=False, help="Load every model at start, or on first use.")
@_option(
    "--idle-unload",
    "idle_unload_s",
    type=float,
    default=0.0,
    help="Unload a model idle this many seconds (0: never).",
)
@_option(
    "--threads",
    type=int,
    default=None,
    help="ONNX Runtime threads per session (default: all CPUs).",
)
@_option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    help="auto: ONNX Runtime, or OpenVINO where it was measured faster (and for bf16); "
    "openvino needs pip install 'handspring[openvino]'.",
)
@_option(
    "--spinning/--no-spinning",
    default=True,
    help="ONNX Runtime threads spin between ops: lowest latency; off leaves idle cores free.",
)
@_option("--max-batch", type=int, default=32, help="Items per engine run.")
@_option("--max-wait-ms", type=float, default=2.0, help="How long a batch waits to fill.")
@_option(
    "--max-queue-ms",
    type=click.FloatRange(min=0),
    default=1000.0,
    help="Latency budget: while the requests already admitted are expected to take over "
    "70% of it (from the measured completion rate), new ones get 429 with Retry-After at "
    "once, before their body is read. 0: off (only --max-queue limits).",
)
@_option(
    "--max-queue",
    type=int,
    default=1024,
    help="Hard cap: items queued per model and modality before 429 (checked after the "
    "body is read).",
)
@_option("--max-body-bytes", type=int, default=20 * 1024 * 1024)
@_option("--max-items", type=int, default=256, help="Inputs per request.")
@_option("--max-text-chars", type=int, default=100_000)
@_option(
    "--truncate/--no-truncate",
    default=True,
    help="Cut over-long texts to the model's length, or answer 422.",
)
@_option("--max-pixels", type=int, default=50_000_000)
@_option("--image-formats", default=",".join(DEFAULT_IMAGE_FORMATS), help="Accepted image formats.")
@_option(
    "--max-audio-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    help="Longest sound decoded (read from its header); longer, 422.",
)
@_option(
    "--max-audio-bytes",
    type=click.IntRange(min=1),
    default=20 * 1024 * 1024,
    help="Largest sound file per item; larger, 413.",
)
@_option(
    "--request-timeout",
    "request_timeout_s",
    type=float,
    default=60.0,
    help="Seconds before a request fails.",
)
@_option(
    "--fetch-urls/--no-fetch-urls",
    default=False,
    help="Fetch image URLs (never from loopback, private or link-local addresses).",
)
@_option("--url-max-bytes", type=int, default=20 * 1024 * 1024)
@_option("--url-timeout", "url_timeout_s", type=float, default=10.0)
@_option("--default-text-model", default=None, help="Model name for contracts that name none.")
@_option("--default-image-model", default=None)
@_option(
    "--default-rerank-model",
    default=None,
    help="Cross-encoder for TEI's /rerank and /predict and /v1/rerank when none is named.",
)
@_option("--default-sparse-model", default=None, help="SPLADE model for TEI's /embed_sparse.")
@_option(
    "--graceful-timeout",
    type=float,
    default=30.0,
    help="Seconds to finish requests in flight after SIGTERM.",
)
@_option(
    "--keep-alive",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_KEEP_ALIVE_S,
    help="Seconds an idle HTTP keep-alive connection stays open: longer than the idle "
    "timeout of the clients' connection pools and of any proxy in front (nginx, load "
    "balancers: often 60 s), so the server never closes a connection they are reusing.",
)
@_option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info")
@_option("--log-format", type=click.Choice(["json", "text"]), default="json")
def serve(**opts: Any) -> None:
    """Serve embeddings over HTTP: OpenAI, Weaviate, TEI, Immich, photo-search and Open
    Inference Protocol contracts; and over gRPC with --grpc-port."""
    from handspring.server import logs

    logs.configure(opts["log_level"], json_lines=opts["log_format"] == "json")
    try:
        config = config_from_options(opts)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    server_for(config).run()


def server_for(config: ServerConfig) -> GracefulServer:
    """The app and the uvicorn server `handspring serve` runs for `config`."""
    from handspring.server.app import create_app
    from handspring.server.guards.shutdown import GracefulServer

    app = create_app(config)
    return GracefulServer(uvicorn_config(app, config), app.state.handspring.draining)


def uvicorn_config(app: ASGIApp, config: ServerConfig) -> uvicorn.Config:
    import uvicorn

    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=config.graceful_timeout,
        # uvicorn types it int, but times it with loop.call_later: fractions work.
        timeout_keep_alive=config.keep_alive,  # type: ignore[arg-type]
    )


def config_from_options(opts: dict[str, Any]) -> ServerConfig:
    """The options whose names are ServerConfig fields pass as they are."""
    fields = {f.name for f in dataclasses.fields(ServerConfig)}
    values = {name: value for name, value in opts.items() if name in fields}
    models = [m for value in opts["models"] for m in value.split()]
    specs = [ModelSpec.parse(m, opts["precision"]) for m in models]
    values["models"] = tuple(
        dataclasses.replace(spec, precision=resolve_precision(spec.precision, spec.source))
        for spec in specs
    )
    values["api_keys"] = tuple(dict.fromkeys((*opts["api_key"], *opts["api_key_file"])))
    formats = opts["image_formats"].split(",")
    values["image_formats"] = tuple(f.strip().upper() for f in formats if f.strip())
    return ServerConfig(**values)


if __name__ == "__main__":
    serve()
