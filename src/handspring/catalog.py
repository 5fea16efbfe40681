"""The model catalog (`handspring models`) and getting a model's files (`handspring download`).

The catalog is the registry's known models, with what this machine has of them: the bytes in
the Hugging Face cache. A download goes through the family's own fetcher, so it fetches
exactly the files a later `handspring.load` reads, and nothing else.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handspring.registry import FAMILIES, KNOWN_MODELS, KnownModel, resolve_alias
from handspring.weights import hub

MB = 10**6


@dataclass(frozen=True)
class CatalogEntry:
    known: KnownModel
    cached_bytes: int | None  # None: not in the Hugging Face cache

    @property
    def modalities(self) -> tuple[str, ...]:
        return FAMILIES[self.known.family].modalities

    def int8_gates(self) -> dict[str, float]:
        """Measured int8-vs-fp32 min cosine per tower; towers never measured are absent."""
        gates = {m: self.known.gate(m) for m in self.modalities}
        return {m: g.min_cosine for m, g in gates.items() if g is not None}

    def bf16_gates(self) -> dict[str, float]:
        """Measured bf16-vs-fp32 min cosine per tower whose bf16 gate passed."""
        gates = {m: self.known.bf16_gate(m) for m in self.modalities}
        return {m: g.min_cosine for m, g in gates.items() if g is not None and g.passed}

    def as_json(self) -> dict[str, Any]:
        k = self.known
        return {
            "alias": k.alias,
            "repo_id": k.repo_id,
            "family": k.family,
            "modalities": list(self.modalities),
            "layout": k.layout,
            "dim": k.dim,
            "image_size": k.image_size,
            "licence": k.licence or None,
            "download_bytes": k.download_mb * MB,
            "int8_gates": self.int8_gates(),
            "bf16_gates": self.bf16_gates(),
            "pairs_with": k.pairs_with or None,
            "notes": k.notes or None,
            "cached_bytes": self.cached_bytes,
        }


def hub_cache_repos() -> dict[str, int]:
    """repo id -> bytes on disk, for models in the Hugging Face cache."""
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir()
    except Exception:  # no cache folder yet, or an unreadable one: nothing cached
        return {}
    return {repo.repo_id: repo.size_on_disk for repo in info.repos if repo.repo_type == "model"}


def catalog(cached: dict[str, int] | None = None) -> list[CatalogEntry]:
    cached = hub_cache_repos() if cached is None else cached
    return [CatalogEntry(k, cached.get(k.repo_id)) for k in KNOWN_MODELS]


def describe_size(n_bytes: int) -> str:
    return f"{n_bytes / 10**9:.1f} GB" if n_bytes >= 10**9 else f"{n_bytes / MB:.0f} MB"


def download(model: str, modalities: Collection[str] | None = None) -> Path:
    """Fetch into the Hugging Face cache the files `model` (an alias or a repo id) needs for
    the asked towers (default: all it has); the folder they are in. Raises CheckpointError
    naming the repo when the hub cannot give them, ValueError for a modality it lacks."""
    from handspring.loading import locate

    if hub.is_local(model):
        raise ValueError(f"{model} is a local folder: it loads as it is, nothing to download")
    repo = resolve_alias(model)
    family = locate(model).family  # the small layout files first, to learn the family
    asked = tuple(modalities) if modalities else family.modalities
    if missing := [m for m in asked if m not in family.modalities]:
        raise ValueError(
            f"{model} is a {family.description}: it has no {missing[0]} modality "
            f"(modalities it has: {', '.join(family.modalities)})"
        )
    folder: Path = family.function("fetcher")(repo, asked)
    return folder


def folder_bytes(folder: Path) -> int:
    """Bytes of the files in a snapshot folder (its links resolved to the cached blobs)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
