"""A server with every kind of model TEI serves: the real all-MiniLM-L6-v2 (embeddings),
a random-weight reranker (BERT, sentence-transformers CrossEncoder layout), a random
3-label classifier (XLM-RoBERTa, transformers layout) and a random SPLADE model (BERT,
SparseEncoder layout), all with MiniLM's vocabulary and in fp32, so answers can be
compared with the library's bit for bit. Import the fixtures into a test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from handspring.server.config import ModelSpec
from tests.server.conftest import ServerFactory
from tests.support.task_checkpoints import write_cross_encoder, write_splade

CLASSIFIER_LABELS = ("negative", "neutral", "positive")


@pytest.fixture(scope="session")
def tei_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tei_models")
    return {
        "reranker": write_cross_encoder(root / "reranker", "bert", layout="st", seed=1),
        "classifier": write_cross_encoder(
            root / "classifier", "xlm-roberta", CLASSIFIER_LABELS, seed=2
        ),
        "splade": write_splade(root / "splade", "bert", layout="st", seed=3),
    }


@pytest.fixture(scope="module")
def tei_url(serve: ServerFactory, tei_folders: dict[str, Path]) -> Iterator[str]:
    models = (
        ModelSpec("minilm", "all-minilm-l6-v2", "fp32"),
        *(ModelSpec(name, str(folder), "fp32") for name, folder in tei_folders.items()),
    )
    with serve(models=models, default_rerank_model="reranker", max_items=16) as url:
        yield url
