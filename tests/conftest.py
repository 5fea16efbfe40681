"""Shared fixtures: random-weight checkpoints written once per session, and an
isolated graph cache and hub cache, with the hub offline."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

# huggingface_hub reads these when it is first imported, which collection may
# do (transformers imports it): set them before anything else runs.
_CACHES = Path(tempfile.mkdtemp(prefix="handspring-test-caches-"))
os.environ["HANDSPRING_CACHE"] = str(_CACHES / "handspring")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = str(_CACHES / "hf")
os.environ["HF_HUB_CACHE"] = str(_CACHES / "hf" / "hub")

import pytest  # noqa: E402

import handspring  # noqa: E402
from handspring.embedder import Model  # noqa: E402
from tests.support.checkpoints import (  # noqa: E402
    TINY,
    VIT_B32,
    write_hf_clip,
    write_open_clip,
    write_sentence_transformers_clip,
)


@pytest.fixture(scope="session", autouse=True)
def _remove_caches() -> Iterator[None]:
    yield
    shutil.rmtree(_CACHES, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_hf_clip(tmp_path_factory.mktemp("tiny_hf"), TINY, seed=0)


@pytest.fixture(scope="session")
def tiny_open_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_open_clip(tmp_path_factory.mktemp("tiny_open_clip"), TINY, seed=1)


@pytest.fixture(scope="session")
def tiny_st(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sentence_transformers_clip(tmp_path_factory.mktemp("tiny_st"), TINY, seed=2)


@pytest.fixture(scope="session")
def tiny_imagebind(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight ImageBind of tiny widths and real input sizes: model.safetensors
    under the original keys, and a config.json (model_type imagebind)."""
    from tests.support.imagebind_reference import TINY, write_imagebind_checkpoint

    return write_imagebind_checkpoint(tmp_path_factory.mktemp("tiny_imagebind"), TINY, seed=3)


@pytest.fixture(scope="session")
def full_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_hf_clip(tmp_path_factory.mktemp("full_hf"), VIT_B32, seed=0)


@pytest.fixture(scope="module")
def model(tiny_hf: Path) -> Model:
    """The tiny transformers-layout checkpoint, loaded in fp32."""
    return handspring.load(tiny_hf)
