"""The network an SSRF probe needs, on loopback: canaries that count every connection
made to them, a stand-in for a public image host (it serves an image and redirects
anywhere it is asked to), and made-up DNS answers for the server's URL fetcher.

One port for all of them, on different addresses: 127.0.0.1 and ::1 (the canaries, our
own host) and 127.0.0.2 (the stand-in). So a name that resolves to the stand-in once and
to loopback the next time (DNS rebinding) points at the same port either way.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import types
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.server.http_fixtures import IMAGE

STAND_IN = "127.0.0.2"
CANARY_HOSTS = ("127.0.0.1", "::1")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Listener

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/redirect" and "to" in query:
            self.send_response(int(query.get("code", "302")))
            self.send_header("Location", query["to"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(IMAGE)))
        self.end_headers()
        self.wfile.write(IMAGE)


class _Listener(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, on_connect: Callable[[], None]) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.on_connect = on_connect
        self.paths: list[str] = []  # every request's path, in order
        super().__init__((host, port), _Handler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.on_connect()  # every TCP connection, whether or not an HTTP request follows
        return True


class Network:
    """The canaries and the stand-in, serving until `close`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.canary_connections = 0
        self.stand_in_connections = 0
        self.port = self._shared_port()
        self._servers = [_Listener(h, self.port, self._canary_hit) for h in CANARY_HOSTS]
        self._servers.append(_Listener(STAND_IN, self.port, self._stand_in_hit))
        self._threads = [
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            for s in self._servers
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _shared_port() -> int:
        """A port free on every address used (tried until one is)."""
        for _ in range(50):
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            try:
                for host in (*CANARY_HOSTS, STAND_IN):
                    family = socket.AF_INET6 if ":" in host else socket.AF_INET
                    with socket.socket(family) as other:
                        other.bind((host, port))
                return port
            except OSError:
                continue
        raise RuntimeError("no port free on 127.0.0.1, ::1 and 127.0.0.2 at once")

    @property
    def stand_in_paths(self) -> list[str]:
        return self._servers[-1].paths

    def _canary_hit(self) -> None:
        with self._lock:
            self.canary_connections += 1

    def _stand_in_hit(self) -> None:
        with self._lock:
            self.stand_in_connections += 1

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()


class FakeDns:
    """Answers for made-up names (an attacker's zone); every other name goes to the system
    resolver. A name's answer is a list of addresses, or a function giving the next list."""

    def __init__(self, zone: dict[str, list[str] | Callable[[], list[str]]]) -> None:
        self.zone = {k.lower(): v for k, v in zone.items()}
        self.queries: list[str] = []

    async def getaddrinfo(self, host: str | bytes, port: Any, **kwargs: Any) -> list[Any]:
        import anyio

        name = (host.decode() if isinstance(host, bytes) else host).lower().rstrip(".")
        answer = self.zone.get(name)
        if answer is None:
            return await anyio.getaddrinfo(host, port, **kwargs)
        self.queries.append(name)
        addresses = answer() if callable(answer) else answer
        out = []
        for address in addresses:
            if ":" in address:
                out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return out


def alternating(*answers: list[str]) -> Callable[[], list[str]]:
    """A rebinding answer: each query gets the next of `answers`, round and round."""
    state = {"n": 0}

    def next_answer() -> list[str]:
        state["n"] += 1
        return answers[(state["n"] - 1) % len(answers)]

    return next_answer


@contextlib.contextmanager
def resolving_with(dns: FakeDns) -> Iterator[None]:
    """The server's URL fetcher resolves through `dns` (it calls `anyio.getaddrinfo`
    inside its checked connection; everything else of anyio stays as it is)."""
    import anyio

    from handspring.server.inputs import url_fetch

    proxy = types.ModuleType("anyio_with_fake_dns")
    proxy.__getattr__ = lambda name: getattr(anyio, name)  # type: ignore[method-assign]
    proxy.getaddrinfo = dns.getaddrinfo  # type: ignore[attr-defined]
    real = url_fetch.anyio
    url_fetch.anyio = proxy  # type: ignore[assignment]
    try:
        yield
    finally:
        url_fetch.anyio = real
