"""`handspring photos serve`: started as a real process, and its refusals of unsafe settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from handspring.photos.web.command import is_loopback, serve
from tests.photos.conftest import WebLibrary, assert_ranked
from tests.support.live_server import free_port

API_KEY = "cli-key-0123456789"


@pytest.fixture(scope="module")
def served(
    web_library: WebLibrary, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    logs = tmp_path_factory.mktemp("serve") / "stderr.txt"
    command = [
        sys.executable, "-m", "handspring.photos.web.command",
        "--db", f"sqlite://{web_library.db}",
        "--port", str(port),
        "--text-model", str(web_library.models.text),
        "--thumbnail-cache", str(logs.parent / "thumbs"),
    ]  # fmt: skip
    env = {**os.environ, "HANDSPRING_PHOTOS_API_KEY": API_KEY}
    with logs.open("wb") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/_health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not start:\n{logs.read_text()}")
            time.sleep(0.2)
        yield url, process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert f"Serving {len(web_library.ids)} photos" in logs.read_text()


def test_served_from_the_command_line_with_a_key_from_the_environment(
    served: tuple[str, subprocess.Popen], web_library: WebLibrary
) -> None:
    url, _ = served
    with httpx.Client(base_url=url, timeout=60) as http:
        assert http.get("/api/status").status_code == 401
        auth = {"Authorization": f"Bearer {API_KEY}"}
        assert http.get("/api/status", headers=auth).json()["photos"] == len(web_library.ids)
        query = "a boat on a lake"
        page = http.post("/api/search", json={"query": query, "limit": 10}, headers=auth).json()
        # The image model and precision came from the index, the text model from the option.
        scores = web_library.scores(web_library.text_vector(query))
        assert_ranked([hit["id"] for hit in page["results"]], scores, web_library.vectors, 10)
        # Only loopback names are served on loopback.
        port = url.rsplit(":", 1)[1]
        rebound = http.get("/api/status", headers={**auth, "Host": f"photos.evil.example:{port}"})
        assert rebound.status_code == 400


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "reachable from other machines"),
        (["--host", "192.168.1.20", "--api-key", "two words"], "no spaces"),
        (["--oidc-issuer", "https://idp.example.com"], "both --oidc-issuer and --oidc-audience"),
        (["--oidc-issuer", "http://idp.example.com", "--oidc-audience", "photos"], "https"),
    ],
)
def test_unsafe_or_incomplete_settings_are_refused(args: list[str], message: str) -> None:
    result = CliRunner().invoke(
        serve, ["--db", "/nonexistent/index.db", *args], env={"HANDSPRING_PHOTOS_API_KEY": None}
    )
    assert result.exit_code == 2, result.output
    assert message in result.output


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_key_in_the_environment_is_refused(value: str) -> None:
    # click reads an empty variable as unset: without the check, auth would be silently off.
    result = CliRunner().invoke(
        serve, ["--db", "/nonexistent/index.db"], env={"HANDSPRING_PHOTOS_API_KEY": value}
    )
    assert result.exit_code == 2, result.output
    assert "HANDSPRING_PHOTOS_API_KEY is empty" in result.output


def test_a_missing_index_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.db"
    result = CliRunner().invoke(
        serve, ["--db", str(missing)], env={"HANDSPRING_PHOTOS_API_KEY": None}
    )
    assert result.exit_code == 1
    assert str(missing) in result.output and "no photo index" in result.output


def test_loopback_addresses() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.20", "photos.example.com"]))
