"""The graph cache as a user sees it: which graphs are built, from what, how large, and
which can go (`handspring cache`).

A graph can be pruned when it can never be loaded again: its format is older than the
builder's (the key changed with it), or the weight files it was built from are gone. A
graph from before `info.json` existed is of an older format by definition.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handspring.runtime.graph_cache import GRAPH_FORMAT, INFO_FILE, cache_root


@dataclass(frozen=True)
class CacheEntry:
    key: str
    folder: Path
    bytes: int
    last_used: float  # seconds since the epoch: the last load, or the build
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.info.get("options") or {})

    @property
    def weights(self) -> list[Path]:
        return [Path(p) for p in self.info.get("weights") or []]

    @property
    def source(self) -> str:
        """The model the graph came from: its hub repo id, else its folder."""
        if not self.weights:
            return "?"
        first = self.weights[0]
        for part in first.parts:
            if part.startswith("models--"):  # the hub cache: models--org--name/snapshots/...
                return part.removeprefix("models--").replace("--", "/")
        return str(first.parent)

    @property
    def stale_reason(self) -> str | None:
        """Why the graph can never be loaded again, or None while it can."""
        if self.info.get("format") != GRAPH_FORMAT:
            return f"built by an older Handspring (graph format {self.info.get('format', '<4')})"
        missing = [p for p in self.weights if not p.exists()]
        if missing:
            return f"its weights are gone ({missing[0]})"
        return None

    def describe(self) -> str:
        o = self.options
        return " ".join(str(o[k]) for k in ("family", "tower", "precision") if k in o) or "?"


def cache_entries(root: Path | None = None) -> list[CacheEntry]:
    graphs = (root or cache_root()) / "graphs"
    if not graphs.is_dir():
        return []
    entries = []
    for folder in sorted(graphs.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):  # "." prefixes: builds under way
            continue
        try:
            info = json.loads((folder / INFO_FILE).read_text())
        except (OSError, ValueError):
            info = {}
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        entries.append(CacheEntry(folder.name, folder, size, folder.stat().st_mtime, info))
    return entries


def prunable(
    entries: list[CacheEntry], *, everything: bool = False, unused_days: float | None = None
) -> list[tuple[CacheEntry, str]]:
    """The entries to remove, each with the reason."""
    now = time.time()
    chosen = []
    for entry in entries:
        if everything:
            chosen.append((entry, "--all"))
        elif reason := entry.stale_reason:
            chosen.append((entry, reason))
        elif unused_days is not None and now - entry.last_used > unused_days * 86400:
            days = (now - entry.last_used) / 86400
            chosen.append((entry, f"unused for {days:.0f} days"))
    return chosen


def abandoned_builds(root: Path | None = None, min_age_s: float = 3600) -> list[Path]:
    """Staging folders of builds killed before their rename (an hour old: never one under
    way)."""
    graphs = (root or cache_root()) / "graphs"
    if not graphs.is_dir():
        return []
    now = time.time()
    return [
        f
        for f in graphs.iterdir()
        if f.is_dir() and f.name.startswith(".") and now - f.stat().st_mtime > min_age_s
    ]


def remove(entry: CacheEntry) -> None:
    # Renamed first, so that a load racing the removal never opens half a folder.
    doomed = entry.folder.with_name(f".removing.{entry.key}")
    entry.folder.rename(doomed)
    shutil.rmtree(doomed)
