"""Servers on loopback over the tiny random CLIP and the real all-MiniLM-L6-v2."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from handspring.server.app import create_app
from handspring.server.config import ModelSpec, ServerConfig
from tests.support.live_server import running

ServerFactory = Callable[..., AbstractContextManager[str]]


@pytest.fixture(scope="session")
def models(tiny_hf: Path) -> tuple[ModelSpec, ...]:
    """fp32, so the tests can compare with the library bit for bit."""
    return (
        ModelSpec("clip", str(tiny_hf), "fp32"),
        ModelSpec("minilm", "all-minilm-l6-v2", "fp32"),
    )


@pytest.fixture(scope="session")
def serve(models: tuple[ModelSpec, ...]) -> ServerFactory:
    """`with serve(**config) as url:` a fresh server with these settings."""

    def factory(**settings: object) -> AbstractContextManager[str]:
        settings.setdefault("models", models)
        return running(create_app(ServerConfig(**settings)))  # type: ignore[arg-type]

    return factory


@pytest.fixture(scope="module")
def url(serve: ServerFactory) -> Iterator[str]:
    """A server with the default settings, shared by a module's tests."""
    with serve() as base:
        yield base
