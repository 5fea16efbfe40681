"""Finding a model's files: a local folder, or a Hugging Face repo id through
the standard hub cache (so what other tools downloaded is reused, and
HF_HUB_OFFLINE=1 works). Only the files asked for are fetched."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from handspring.errors import CheckpointError

# Small files that tell which layout a repo has; fetched before any weights.
LAYOUT_PATTERNS = (
    "config.json",
    "modules.json",
    "open_clip_config.json",
    "*/config.json",
    "*/preprocess_cfg.json",
    "*.safetensors.index.json",
    "*/*.safetensors.index.json",
)


# The runtime-only install (requirements-runtime.txt) leaves huggingface_hub out.
HUB_MISSING = (
    "a Hugging Face repo id needs huggingface_hub, which this install leaves out: pass the "
    "model's local folder (`handspring download` prints it where the hub is reachable), or "
    "pip install huggingface_hub"
)


def is_local(model: str | Path) -> bool:
    return Path(model).expanduser().is_dir()


def fetch(model: str | Path, patterns: Sequence[str], revision: str | None = None) -> Path:
    """The folder holding `model`'s files matching `patterns`, downloading them
    into the hub cache if needed. A local folder is returned as it is."""
    if is_local(model):
        return Path(model).expanduser().resolve()
    repo_id = str(model)
    if repo_id.count("/") != 1 or repo_id.startswith(("/", ".", "~")):
        raise CheckpointError(
            repo_id, "no such local folder, and not a Hugging Face repo id (org/name)"
        )
    # Imported here: huggingface_hub costs ~0.1 s to import and a cached graph
    # plus a local folder never needs it.
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise CheckpointError(repo_id, HUB_MISSING) from exc
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=list(patterns))
    except LocalEntryNotFoundError as exc:
        raise CheckpointError(
            repo_id,
            "not in the Hugging Face cache and the hub cannot be reached (HF_HUB_OFFLINE is "
            f"set, or no network): run `handspring download {repo_id}` where the hub can be "
            "reached (it fetches only the files needed), or pass a local folder",
        ) from exc
    except RepositoryNotFoundError as exc:
        raise CheckpointError(
            repo_id,
            "no such model repo on the hub (or a private or gated one: log in first with "
            "`hf auth login`)",
        ) from exc
    except HfHubHTTPError as exc:
        raise CheckpointError(repo_id, f"hub request failed: {exc}") from exc
    return Path(folder)
