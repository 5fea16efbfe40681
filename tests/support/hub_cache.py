"""Repos laid out as huggingface_hub caches them, so repo ids resolve offline."""

from __future__ import annotations

import os
from pathlib import Path

REVISION = "0123456789abcdef0123456789abcdef01234567"


def hub_repo(repo_id: str, hub: Path | None = None, revision: str = REVISION) -> tuple[Path, Path]:
    """A new repo in `hub` (default: the tests' HF_HUB_CACHE), with refs/main naming
    `revision`: its folder and its (still empty) snapshot folder."""
    hub = hub if hub is not None else Path(os.environ["HF_HUB_CACHE"])
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return repo, repo / "snapshots" / revision
