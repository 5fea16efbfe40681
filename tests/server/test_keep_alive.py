"""Issue 14: HTTP keep-alive. uvicorn's default closes a connection idle for 5 s, while
clients' pools (and proxies in front) keep theirs longer and race that close; `handspring
serve` keeps idle connections 75 s (`--keep-alive`), and a client may send request after
request on one connection."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from click.testing import CliRunner

from handspring.server.command import config_from_options, serve, server_for
from handspring.server.config import DEFAULT_KEEP_ALIVE_S, ModelSpec, ServerConfig

TIMEOUT = 30


@contextlib.contextmanager
def listening(server: uvicorn.Server) -> Iterator[int]:
    """Run `server` in a thread on a loopback socket bound here; yield its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:  # polled, as tests.support.live_server does
            if not thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=TIMEOUT)
        sock.close()


def test_keep_alive_is_75_s_unless_set_by_flag_or_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HANDSPRING_KEEP_ALIVE", raising=False)
    assert config_from_options(serve.make_context("serve", []).params).keep_alive == 75.0
    assert DEFAULT_KEEP_ALIVE_S == ServerConfig.keep_alive == 75.0
    given = serve.make_context("serve", ["--keep-alive", "30"]).params
    assert config_from_options(given).keep_alive == 30.0
    monkeypatch.setenv("HANDSPRING_KEEP_ALIVE", "12.5")
    assert config_from_options(serve.make_context("serve", []).params).keep_alive == 12.5


@pytest.mark.parametrize(
    ("seconds", "message"),
    [
        ("0", "0.0 is not in the range x>0"),  # click's check
        ("-1", "-1.0 is not in the range x>0"),
        ("nan", "--keep-alive must be over 0 seconds, got nan"),  # the config's
    ],
)
def test_keep_alive_must_be_over_zero(
    seconds: str, message: str, models: tuple[ModelSpec, ...]
) -> None:
    result = CliRunner().invoke(serve, ["--keep-alive", seconds])
    assert result.exit_code == 2 and message in result.output, result.output
    with pytest.raises(ValueError, match="--keep-alive must be over 0 seconds"):
        ServerConfig(models=models, keep_alive=float(seconds))


def test_one_connection_carries_request_after_request(tiny_hf: Path) -> None:
    """The server `handspring serve --keep-alive 30` runs: its uvicorn config carries the
    value, and one HTTP/1.1 connection serves successes and refusals alike without being
    closed (http.client would open a new socket if the server had closed it)."""
    args = ["--model", f"clip={tiny_hf}:fp32", "--keep-alive", "30"]
    server = server_for(config_from_options(serve.make_context("serve", args).params))
    assert server.config.timeout_keep_alive == 30.0
    requests = [
        ("GET", "/v1/models", None, 200),
        ("POST", "/v1/embeddings", {"input": "a cat", "model": "clip"}, 200),
        ("POST", "/v1/embeddings", b'{"input": ', 422),
        ("POST", "/v1/embeddings", {"input": ["a dog", "a bird"], "model": "clip"}, 200),
        ("POST", "/embed", {"inputs": ""}, 400),
        ("GET", "/ping", None, 200),
    ]
    with listening(server) as port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        try:
            first_socket = None
            for method, path, body, status in requests:
                data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
                headers = {"Content-Type": "application/json"} if data is not None else {}
                connection.request(method, path, body=data, headers=headers)
                response = connection.getresponse()
                response.read()
                assert response.status == status, (path, status)
                assert response.version == 11 and not response.will_close, path
                first_socket = first_socket or connection.sock
                assert connection.sock is first_socket, f"{path}: a new connection"
        finally:
            connection.close()
