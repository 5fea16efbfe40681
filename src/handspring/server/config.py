"""What a server runs: its models and its limits. Filled from CLI flags or `HANDSPRING_*`
environment variables (see `handspring.server.command`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from handspring.preprocess.decode import DEFAULT_MAX_PIXELS

# Pillow's format names; HEIF needs pillow-heif, registered when it is installed.
DEFAULT_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF")
# Seconds an idle keep-alive connection stays open. uvicorn's own 5 s is shorter than the
# idle timeouts of connection pools and load balancers (60 s for nginx upstreams and AWS
# ALBs): the server then closes connections a client is about to reuse, and the request
# sent into that close fails. The server should be the last to let go of a connection.
DEFAULT_KEEP_ALIVE_S = 75.0


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 with or without brackets) is loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ModelSpec:
    """One hosted model. `name` is what clients ask for; `source` is an alias, a repo id or
    a folder. A request may also name the model by its source or the registry alias."""

    name: str
    source: str
    precision: str = "int8"

    @classmethod
    def parse(cls, text: str, precision: str) -> ModelSpec:
        """`NAME=SOURCE[:PRECISION]` or just `SOURCE` (named after itself)."""
        name, _, source = text.partition("=")
        if not source:
            name, source = text, text
        if source.endswith((":fp32", ":int8", ":bf16")):
            source, _, precision = source.rpartition(":")
        if not name or not source:
            raise ValueError(f"model {text!r}: expected NAME=SOURCE[:fp32|:int8|:bf16] or SOURCE")
        return cls(name=name, source=source, precision=precision)


@dataclass(frozen=True)
class ServerConfig:
    models: tuple[ModelSpec, ...]
    host: str = "127.0.0.1"
    port: int = 8080
    # gRPC (the Open Inference Protocol, and the seed project's Embeddings service) on the
    # same host: None is off, 0 any free port.
    grpc_port: int | None = None
    # Seconds that requests in flight get to finish once a shutdown begins.
    graceful_timeout: float = 30.0
    keep_alive: float = DEFAULT_KEEP_ALIVE_S  # seconds an idle HTTP connection stays open
    # Any of these keys opens the API (several: one per client, rotated one at a time).
    api_keys: tuple[str, ...] = ()
    # Listening beyond loopback with no key is refused unless this says it is meant.
    allow_unauthenticated_remote: bool = False
    preload: bool = False  # load every model at start-up rather than on first use
    idle_unload_s: float = 0.0  # 0: never unload
    threads: int | None = None  # ONNX Runtime threads per session
    # The runtime of every model: "auto" (ONNX Runtime, OpenVINO where measured faster and
    # for bf16), "onnxruntime" or "openvino" (handspring[openvino]).
    backend: str = "auto"
    spinning: bool = True  # ORT threads spin between ops; off leaves the cores to HTTP work
    # Dynamic batching.
    max_batch: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 1024  # items waiting per model and modality; beyond it, 429
    # Latency budget: work requests are refused (429, body unread) while the admitted
    # backlog is expected to take over 70% of it. 0: off. See handspring.server.guards.admission.
    max_queue_ms: float = 1000.0
    # Limits.
    max_body_bytes: int = 20 * 1024 * 1024
    max_items: int = 256
    max_text_chars: int = 100_000
    truncate: bool = True  # over-long texts: cut to the model's length, or 422
    max_pixels: int = min(DEFAULT_MAX_PIXELS, 50_000_000)
    image_formats: tuple[str, ...] = DEFAULT_IMAGE_FORMATS
    max_audio_seconds: float = 600.0  # longer sounds are refused from their header
    max_audio_bytes: int = 20 * 1024 * 1024
    request_timeout_s: float = 60.0
    # Image URLs: off unless asked for, and never into private networks.
    fetch_urls: bool = False
    url_max_bytes: int = 20 * 1024 * 1024
    url_timeout_s: float = 10.0
    # Which model answers requests that name none (TEI, Weaviate, photo-search...).
    default_text_model: str | None = None
    default_image_model: str | None = None
    # ... and which cross-encoder (TEI /rerank, /predict; /v1/rerank) and SPLADE model.
    default_rerank_model: str | None = None
    default_sparse_model: str | None = None

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("a server needs at least one model")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        if self.grpc_port is not None and not 0 <= self.grpc_port <= 65535:
            raise ValueError(f"--grpc-port must be a port (0 to 65535), got {self.grpc_port}")
        if self.grpc_port and self.grpc_port == self.port:
            raise ValueError(f"--grpc-port {self.grpc_port} is the HTTP --port: give another")
        if not self.keep_alive > 0:
            raise ValueError(f"--keep-alive must be over 0 seconds, got {self.keep_alive}")
        if self.max_queue_ms < 0:
            raise ValueError(f"--max-queue-ms must be 0 (off) or more, got {self.max_queue_ms}")
        for default in (
            self.default_text_model,
            self.default_image_model,
            self.default_rerank_model,
            self.default_sparse_model,
        ):
            if default is not None and default not in names:
                raise ValueError(f"default model {default!r} is not one of {names}")
        self._check_auth()

    def _check_auth(self) -> None:
        for key in self.api_keys:
            if not key.strip() or key != key.strip() or "," in key:
                # An empty key would mean "no key"; spaces around one could never be sent.
                raise ValueError(
                    "an API key (--api-key, HANDSPRING_API_KEY or the key file) is empty, has "
                    "spaces around it or holds a comma: give real keys, or none"
                )
        if (
            not self.api_keys
            and not is_loopback(self.host)
            and not self.allow_unauthenticated_remote
        ):
            raise ValueError(
                f"--host {self.host} is reachable from other machines, and no API key is set: "
                "give --api-key (or HANDSPRING_API_KEY), or --allow-unauthenticated-remote "
                "(HANDSPRING_ALLOW_UNAUTHENTICATED_REMOTE=1) if anyone who can reach the port "
                "may really use the server"
            )
