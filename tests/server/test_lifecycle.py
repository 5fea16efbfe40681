"""Lazy and eager loading, readiness, idle unloading, and configuration from the
environment."""

from __future__ import annotations

import gc
import os
import time
import weakref
from pathlib import Path

import click
import pytest
import requests
from click.testing import CliRunner

from handspring.server.app import create_app
from handspring.server.command import config_from_options, serve
from handspring.server.config import ModelSpec, ServerConfig
from tests.server.conftest import ServerFactory
from tests.server.metrics_text import metric_value
from tests.support.live_server import running


def _loaded(url: str) -> dict[str, bool]:
    models = requests.get(f"{url}/api/models", timeout=10).json()["models"]
    return {m["name"]: m["loaded"] for m in models}


def test_models_load_lazily_and_readiness_says_so(serve: ServerFactory) -> None:
    with serve() as url:
        assert _loaded(url) == {"clip": False, "minilm": False}
        assert requests.get(f"{url}/.well-known/ready", timeout=10).status_code == 204
        requests.post(f"{url}/embed", json={"inputs": "x"}, timeout=30).raise_for_status()
        assert _loaded(url) == {"clip": False, "minilm": True}
        assert metric_value(url, "handspring_model_loaded", model="minilm") == 1
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        assert 'handspring_model_load_seconds{model="minilm"}' in metrics


def test_preload_is_ready_only_once_loaded(serve: ServerFactory) -> None:
    with serve(preload=True) as url:
        deadline = time.monotonic() + 60
        while requests.get(f"{url}/.well-known/ready", timeout=10).status_code != 204:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert _loaded(url) == {"clip": True, "minilm": True}


def test_idle_models_are_unloaded_then_reloaded(serve: ServerFactory) -> None:
    with serve(idle_unload_s=0.3) as url:
        requests.post(f"{url}/embed", json={"inputs": "x"}, timeout=30).raise_for_status()
        deadline = time.monotonic() + 20
        while _loaded(url)["minilm"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert metric_value(url, "handspring_model_loaded", model="minilm") == 0
        again = requests.post(f"{url}/embed", json={"inputs": "x"}, timeout=30)
        assert again.status_code == 200


def test_a_missing_model_makes_the_server_unready(
    serve: ServerFactory, models: tuple[ModelSpec, ...], tmp_path: Path
) -> None:
    missing = ModelSpec("gone", str(tmp_path / "no-such-model"), "fp32")
    with serve(models=(*models, missing)) as url:
        assert requests.get(f"{url}/.well-known/live", timeout=10).status_code == 204
        assert requests.get(f"{url}/.well-known/ready", timeout=10).status_code == 503
        assert requests.get(f"{url}/health", timeout=10).status_code == 503
        health = requests.get(f"{url}/_health", timeout=10)
        assert health.status_code == 503 and "gone" in health.json()["message"]
        # The others still serve.
        assert requests.post(f"{url}/embed", json={"inputs": "x"}, timeout=30).status_code == 200


def test_configuration_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HANDSPRING_MODELS", "a=all-minilm-l6-v2 b=/srv/models/clip:fp32")
    monkeypatch.setenv("HANDSPRING_PORT", "9123")
    monkeypatch.setenv("HANDSPRING_API_KEY", "k")
    monkeypatch.setenv("HANDSPRING_PRELOAD", "true")
    monkeypatch.setenv("HANDSPRING_TRUNCATE", "false")
    monkeypatch.setenv("HANDSPRING_IMAGE_FORMATS", "png, jpeg")
    config = config_from_options(serve.make_context("serve", ["--max-batch", "8"]).params)
    assert config.models == (
        ModelSpec("a", "all-minilm-l6-v2", "int8"),
        ModelSpec("b", "/srv/models/clip", "fp32"),
    )
    assert (config.port, config.api_keys, config.preload, config.truncate) == (
        9123,
        ("k",),
        True,
        False,
    )
    assert config.image_formats == ("PNG", "JPEG") and config.max_batch == 8
    assert config.host == "127.0.0.1"  # never all interfaces unless asked


def test_bad_configuration_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = serve.make_context("serve", ["--model", "a=x", "--model", "a=y"])
    with pytest.raises(ValueError, match="unique"):
        config_from_options(ctx.params)
    with pytest.raises(click.BadParameter):
        serve.make_context("serve", ["--precision", "fp8"])


def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("HANDSPRING_")]:
        monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--api-key", ""], {}, "--api-key is empty, which would turn authentication off"),
        (["--api-key", "  "], {}, "--api-key is empty"),
        ([], {"HANDSPRING_API_KEY": ""}, "HANDSPRING_API_KEY is empty"),
        (["--host", "0.0.0.0"], {"HANDSPRING_API_KEY": ""}, "HANDSPRING_API_KEY is empty"),
        (["--host", "0.0.0.0"], {}, "--host 0.0.0.0 is reachable from other machines"),
        (["--host", "::"], {}, "--allow-unauthenticated-remote"),
        (["--host", "192.168.1.20"], {}, "give --api-key (or HANDSPRING_API_KEY)"),
        (["--api-key", " k"], {}, "spaces around it"),
        (["--api-key", "a,,b"], {}, "holds an empty key"),
        ([], {"HANDSPRING_API_KEY": "a, b"}, "spaces around it"),
        (["--api-key-file", "/no/such/keys"], {}, "/no/such/keys"),
    ],
)
def test_no_key_is_never_silent(
    args: list[str], env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_environment(monkeypatch)
    result = CliRunner().invoke(serve, args, env=env)
    assert result.exit_code == 2, result.output  # refused before anything starts
    assert message in result.output


@pytest.mark.parametrize(
    ("args", "env", "key"),
    [
        (["--host", "0.0.0.0", "--api-key", "k"], {}, "k"),
        (["--host", "0.0.0.0"], {"HANDSPRING_API_KEY": "k"}, "k"),
        (["--host", "0.0.0.0", "--allow-unauthenticated-remote"], {}, None),
        (["--host", "0.0.0.0"], {"HANDSPRING_ALLOW_UNAUTHENTICATED_REMOTE": "1"}, None),
        (["--host", "localhost"], {}, None),
        (["--host", "::1"], {}, None),
        (["--host", "127.0.0.2"], {}, None),
    ],
)
def test_keys_and_hosts_that_start(
    args: list[str], env: dict[str, str], key: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_environment(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = config_from_options(serve.make_context("serve", args).params)
    assert config.api_keys == ((key,) if key else ())


def test_several_keys_from_flags_the_environment_and_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean_environment(monkeypatch)
    keys = tmp_path / "keys"
    keys.write_text("# rotated monthly\nfile-1\n\n  file-2  \n")
    args = ["--api-key", "a", "--api-key", "b,c", "--api-key-file", str(keys)]
    config = config_from_options(serve.make_context("serve", args).params)
    assert config.api_keys == ("a", "b", "c", "file-1", "file-2")
    monkeypatch.setenv("HANDSPRING_API_KEY", "x,y")
    config = config_from_options(serve.make_context("serve", []).params)
    assert config.api_keys == ("x", "y")
    keys.write_text("# nothing but a comment\n")
    result = CliRunner().invoke(serve, ["--api-key-file", str(keys)])
    assert result.exit_code == 2 and "holds no key" in result.output


def test_a_config_built_in_code_keeps_the_same_rules(models: tuple[ModelSpec, ...]) -> None:
    with pytest.raises(ValueError, match="empty"):
        ServerConfig(models=models, api_keys=("",))
    with pytest.raises(ValueError, match="reachable from other machines"):
        ServerConfig(models=models, host="0.0.0.0")
    assert ServerConfig(models=models, host="0.0.0.0", allow_unauthenticated_remote=True)


def test_an_unloaded_model_is_freed(models: tuple[ModelSpec, ...]) -> None:
    app = create_app(ServerConfig(models=models, idle_unload_s=0.3))
    pool = app.state.handspring.pool
    with running(app) as url:
        requests.post(f"{url}/embed", json={"inputs": "x"}, timeout=30).raise_for_status()
        loaded = pool.loaded("minilm")
        assert loaded is not None
        model = weakref.ref(loaded.model)
        del loaded
        deadline = time.monotonic() + 20
        while pool.loaded("minilm") is not None or model() is not None:
            assert time.monotonic() < deadline, "something still holds the unloaded model"
            gc.collect()
            time.sleep(0.05)
