"""Every image family indexes and searches through `handspring photos`: the index stores the
model's image vectors, and a text query goes through the model's own text tower (SigLIP's
sigmoid-trained towers included) or through the text model it is paired with. The expected
order is numpy's cosine of the stored vectors with the library's own embedding of the query."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

import handspring
from handspring.photos.cli import photos
from handspring.photos.stores.store import open_store
from tests.support.photo_library import write_photo

PHOTOS = 6
QUERY = "a red bicycle by the sea"


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(photos, list(args))


def _siglip(tokenizer: str) -> Callable[[Path], tuple[Path, Path | None]]:
    def write(folder: Path) -> tuple[Path, Path | None]:
        from tests.support.siglip_checkpoints import write_siglip

        return write_siglip(folder, tokenizer, seed=3), None

    return write


def _naflex(folder: Path) -> tuple[Path, Path | None]:
    from tests.support.siglip2_checkpoints import write_siglip2

    return write_siglip2(folder), None


def _clip_with_mclip_queries(folder: Path) -> tuple[Path, Path | None]:
    """A CLIP image model, and M-CLIP text into its space (of the same width)."""
    import dataclasses

    from tests.support.checkpoints import TINY, write_hf_clip
    from tests.support.mclip_checkpoints import IMAGE_DIM, write_mclip

    pytest.importorskip("multilingual_clip")
    clip = write_hf_clip(folder / "clip", dataclasses.replace(TINY, projection_dim=IMAGE_DIM))
    return clip, write_mclip(folder / "mclip", seed=5).folder


# name -> writer of (image model folder, paired text model folder or None: its own tower)
FAMILIES: dict[str, Callable[[Path], tuple[Path, Path | None]]] = {
    "siglip": _siglip("spiece"),
    "siglip2": _siglip("gemma"),
    "siglip2-naflex": _naflex,
    "clip+mclip": _clip_with_mclip_queries,
}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("family_photos")
    for i in range(PHOTOS):
        write_photo(root / f"photo_{i}.jpg", seed=80 + i)
    return root


@pytest.mark.reference
@pytest.mark.parametrize("family", list(FAMILIES))
def test_index_and_text_search(family: str, library: Path, tmp_path: Path) -> None:
    image_model, text_model = FAMILIES[family](tmp_path / "model")
    db = str(tmp_path / "index.db")
    indexed = _invoke(
        "index", str(library), "--db", db, "--image-model", str(image_model),
        "--precision", "fp32",
    )  # fmt: skip
    assert indexed.exit_code == 0, indexed.output
    assert f"{PHOTOS} added" in indexed.stderr

    # As the indexer decodes: JPEG draft mode.
    model = handspring.load(image_model, precision="fp32", fast_decode=True)
    store = open_store(db, read_only=True)
    try:
        paths = sorted(str(p) for p in library.iterdir())
        stored = []
        for path in paths:
            photo = store.get_by_path(path)
            assert photo is not None
            stored.append(store.vector(photo.id))
    finally:
        store.close()
    # The index holds the model's own image vectors.
    np.testing.assert_allclose(
        np.stack(stored), model.embed_images(paths).embeddings, rtol=0, atol=1e-5
    )

    text_args = ("--text-model", str(text_model)) if text_model else ()
    searched = _invoke(
        "search", "--db", db, QUERY, *text_args, "-k", str(PHOTOS), "--format", "json"
    )
    assert searched.exit_code == 0, searched.output
    hits = json.loads(searched.stdout)
    query_model = handspring.load(text_model, precision="fp32") if text_model else model
    query = query_model.embed_texts([QUERY])[0]
    scores = np.stack(stored) @ (query / np.linalg.norm(query))
    order = np.argsort(-scores, kind="stable")
    assert [h["path"] for h in hits] == [paths[i] for i in order]
    np.testing.assert_allclose([h["score"] for h in hits], scores[order], rtol=0, atol=1e-5)
