"""Which Ray cluster `photos index --ray ADDRESS` works on, and the connection to it.

ADDRESS is one of:
- `auto`: $RAY_ADDRESS, else a cluster already running on this machine (`ray start`);
- `local:N`: a cluster of N CPUs started for this run, gone with it;
- `ray://host:10001`: a remote cluster through Ray Client (KubeRay's head Service);
- `host:port`: a cluster's GCS address, for a driver inside the cluster.

Parsing needs no Ray: the command line checks ADDRESS before anything is imported, so a
plain install (no `handspring[ray]`) never imports ray.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from handspring.errors import HandspringError

log = logging.getLogger("handspring.photos")
_HOST_PORT = re.compile(r"^[A-Za-z0-9._\-\[\]:]+:\d+$")


class RayClusterError(HandspringError):
    """The Ray cluster cannot be reached or used."""


@dataclass(frozen=True)
class RayAddress:
    text: str  # as given
    local_cpus: int | None = None  # local:N

    def __str__(self) -> str:
        return self.text


def parse_ray_address(text: str) -> RayAddress:
    """ADDRESS as `--ray` takes it (see the module notes); ValueError says what is wrong."""
    value = text.strip()
    if value == "auto":
        return RayAddress(value)
    if value.startswith("local:"):
        count = value.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"{text!r}: local:N needs a whole number of CPUs >= 1")
        return RayAddress(value, local_cpus=int(count))
    if value.startswith("ray://"):
        if not _HOST_PORT.match(value.removeprefix("ray://")):
            raise ValueError(f"{text!r}: expected ray://host:port (the client port is 10001)")
        return RayAddress(value)
    if _HOST_PORT.match(value):
        return RayAddress(value)
    raise ValueError(f"{text!r}: expected auto, local:N, ray://host:port or host:port")


@dataclass(frozen=True)
class ClusterInfo:
    address: str
    nodes: int  # alive nodes
    cpus: float  # logical CPUs over the cluster

    def describe(self) -> str:
        return f"ray: {self.nodes} node(s), {self.cpus:g} CPUs ({self.address})"


def cluster_info(address: RayAddress) -> ClusterInfo:
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return ClusterInfo(str(address), len(nodes), float(ray.cluster_resources().get("CPU", 0)))


@contextlib.contextmanager
def connected(address: RayAddress) -> Iterator[ClusterInfo]:
    """A connection to the cluster for the length of the block. A process already
    connected (a test, a notebook) keeps its connection, and it is left open."""
    try:
        import ray
    except ImportError as exc:
        raise RayClusterError(
            "--ray needs Ray: pip install 'handspring[ray]' (the same Ray and Python as "
            "the cluster's)"
        ) from exc
    if ray.is_initialized():
        yield cluster_info(address)
        return
    options: dict[str, object] = {
        "logging_level": logging.WARNING,
        # Worker logs would break the progress bar; errors still come back as exceptions.
        "log_to_driver": False,
    }
    if address.local_cpus is not None:
        options.update(address="local", num_cpus=address.local_cpus, include_dashboard=False)
    else:
        options["address"] = address.text
    _init(ray, address, options)
    try:
        yield cluster_info(address)
    finally:
        ray.shutdown()


# Ray Client's head starts a server process per client, which now and then exits at
# once ("Starting Ray client server failed"); the next try gets a new one.
CLIENT_TRIES = 3
CLIENT_PAUSE_S = 2.0


def _init(ray: Any, address: RayAddress, options: dict[str, object]) -> None:
    tries = CLIENT_TRIES if address.text.startswith("ray://") else 1
    for attempt in range(1, tries + 1):
        try:
            ray.init(**options)
            return
        except (ConnectionError, RuntimeError, ValueError) as exc:
            if attempt == tries:
                raise RayClusterError(f"cannot reach the Ray cluster at {address}: {exc}") from exc
            log.warning("Ray cluster at %s: %s; trying again", address, exc)
            time.sleep(CLIENT_PAUSE_S * attempt)
