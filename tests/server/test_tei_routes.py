"""TEI's HTTP API beyond `/embed`'s texts: token-id inputs and left truncation, `/embed_all`,
`/embed_sparse`, `/rerank`, `/predict`, `/similarity`, `/tokenize`, `/decode`, `/info`,
its error shapes and codes, and infinity's `/v1/rerank` through the openai client. Answers
are compared with the library's on the same models (fp32, equal bit for bit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import requests

import handspring
from handspring.embedder import Model
from handspring.towers.cross_encoder import label_scores
from tests.server.tei_fixtures import CLASSIFIER_LABELS, tei_folders, tei_url  # noqa: F401

TIMEOUT = 60
LONG = "the quick brown fox jumps over the lazy dog " * 80
DOCS = [
    "Deep learning uses neural networks with many layers.",
    "The weather in Paris is mild in spring.",
    "Gradient descent trains the weights of a network.",
    "",  # empty texts are refused by name
]


def post(url: str, path: str, body: Any) -> requests.Response:
    return requests.post(url + path, json=body, timeout=TIMEOUT)


def ok(url: str, path: str, body: Any) -> Any:
    response = post(url, path, body)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def library(tei_folders: dict[str, Path]) -> dict[str, Model]:  # noqa: F811
    loaded = {
        name: handspring.load(folder, precision="fp32") for name, folder in tei_folders.items()
    }
    return loaded | {"minilm": handspring.load("all-minilm-l6-v2", precision="fp32")}


# ------------------------------------------------------------------------ /embed


def test_token_ids_embed_as_their_text(tei_url: str, library: dict[str, Model]) -> None:  # noqa: F811
    ids = library["minilm"].tower("text").tokenize(["hello world"], {})[0].ids.tolist()
    assert ids == [101, 7592, 2088, 102]
    text = ok(tei_url, "/embed", {"inputs": "hello world"})
    assert ok(tei_url, "/embed", {"inputs": ids}) == text
    mixed = ok(tei_url, "/embed", {"inputs": [ids, "a cat", [101, 102]]})
    assert mixed[0] == text[0]
    assert np.array_equal(np.float32(mixed[1:]), library["minilm"].embed_texts(["a cat", ""]))


def test_left_truncation_keeps_the_end(tei_url: str, library: dict[str, Model]) -> None:  # noqa: F811
    minilm = library["minilm"]
    left = ok(tei_url, "/embed", {"inputs": LONG + "END", "truncation_direction": "Left"})
    right = ok(tei_url, "/embed", {"inputs": LONG + "END"})
    want = minilm.embed("text", [LONG + "END"], truncation_direction="left").embeddings
    assert np.array_equal(np.float32(left), want)
    assert not np.allclose(left, right)
    tokens = minilm.tower("text").tokenize([LONG + "END"], {"truncation_direction": "left"})[0]
    assert tokens.truncated and tokens.ids[-2] == 2203 and tokens.ids[0] == 101  # "end", [CLS]
    ids = list(range(1000, 1300))  # longer than 256 tokens: cut from the side asked
    cut = ok(tei_url, "/embed", {"inputs": ids, "truncation_direction": "left"})
    assert cut == ok(tei_url, "/embed", {"inputs": ids[-256:]})


@pytest.mark.parametrize(
    ("body", "status", "error_type", "message"),
    [
        ({"inputs": []}, 400, "Empty", "inputs: no inputs given"),
        ({"inputs": ""}, 400, "Empty", "inputs[0]: the input is empty"),
        ({"inputs": ["a", []]}, 400, "Empty", "inputs[1]: the input is empty"),
        ({"inputs": [101, 99999]}, 422, "Validation", "inputs[0]: token id 99999 is not"),
        ({"inputs": ["a"] * 17}, 413, "Validation", "17 inputs is over the limit of 16"),
        ({"inputs": LONG, "truncate": False}, 422, "Validation", "inputs[0]: longer than"),
        ({"inputs": [1, "a"]}, 422, "Validation", "inputs"),
        ({"inputs": "a", "truncation_direction": "up"}, 422, "Validation", "truncation"),
        ({"inputs": [5], "prompt_name": "query"}, 422, "Validation", "prompt_name"),
    ],
)
def test_embed_errors_have_teis_codes(
    tei_url: str,  # noqa: F811
    body: dict,
    status: int,
    error_type: str,
    message: str,
) -> None:
    response = post(tei_url, "/embed", body)
    assert response.status_code == status, response.text
    assert response.json()["error_type"] == error_type
    assert message in response.json()["error"]


# ------------------------------------------------------------- /embed_all, sparse


def test_embed_all_gives_every_tokens_vector(tei_url: str, library: dict[str, Model]) -> None:  # noqa: F811
    body = ok(tei_url, "/embed_all", {"inputs": ["hello world", "a"]})
    want = library["minilm"].embed_tokens(["hello world", "a"])
    assert [len(rows) for rows in body] == [4, 3]
    for got, rows in zip(body, want, strict=True):
        assert np.array_equal(np.float32(got), rows)
    # The pooled /embed vector is the mean of these rows (all-MiniLM-L6-v2 pools by mean).
    mean = np.float32(body[0]).mean(axis=0)
    raw = ok(tei_url, "/embed", {"inputs": "hello world", "normalize": False})[0]
    assert np.abs(mean - raw).max() < 1e-5
    refused = post(tei_url, "/embed_all", {"inputs": "a", "model": "splade"})
    assert refused.status_code == 424 and refused.json()["error_type"] == "Backend"


def test_embed_sparse_gives_the_nonzero_terms(tei_url: str, library: dict[str, Model]) -> None:  # noqa: F811
    texts = ["what is deep learning?", "a cat"]
    body = ok(tei_url, "/embed_sparse", {"inputs": texts})
    for got, (indices, values) in zip(body, library["splade"].embed_sparse(texts), strict=True):
        assert [e["index"] for e in got] == indices.tolist()
        assert np.array_equal(np.float32([e["value"] for e in got]), values)
        assert 0 < len(got) < 30522 and all(e["value"] > 0 for e in got)
    assert ok(tei_url, "/embed_sparse", {"inputs": "a cat"}) == body[1:]
    refused = post(tei_url, "/embed_sparse", {"inputs": "a", "model": "minilm"})
    assert refused.status_code == 424 and "is not a SPLADE model" in refused.json()["error"]


# ----------------------------------------------------------------------- /rerank


def test_rerank_sorts_by_score_as_tei(tei_url: str, library: dict[str, Model]) -> None:  # noqa: F811
    query, texts = "what is deep learning?", DOCS[:3]
    ranks = ok(tei_url, "/rerank", {"query": query, "texts": texts})
    want = library["reranker"].rank(query, texts)
    assert [(r["index"], np.float32(r["score"])) for r in ranks] == [
        (i, np.float32(s)) for i, s in want
    ]
    assert all(set(r) == {"index", "score"} for r in ranks)
    raw = ok(tei_url, "/rerank", {"query": query, "texts": texts, "raw_scores": True})
    sigmoid = label_scores(np.float32([[r["score"]] for r in raw]))[:, 0]
    assert np.allclose(sigmoid, [r["score"] for r in ranks], atol=1e-6)
    with_text = ok(tei_url, "/rerank", {"query": query, "texts": texts, "return_text": True})
    assert [r["text"] for r in with_text] == [texts[r["index"]] for r in with_text]


def test_rerank_errors(tei_url: str) -> None:  # noqa: F811
    cases = [
        ({"query": "q", "texts": []}, 400, "Empty"),
        ({"query": "q", "texts": ["a", ""]}, 200, None),  # the pair is not empty: TEI's rule
        ({"query": "q", "texts": [LONG], "truncate": False}, 422, "Validation"),
        ({"query": "q", "texts": ["a"], "model": "classifier"}, 424, "Backend"),
        ({"query": "q", "texts": ["a"], "model": "minilm"}, 424, "Backend"),
        ({"query": "q", "texts": ["a"], "model": "nope"}, 404, "Backend"),
    ]
    for body, status, error_type in cases:
        response = post(tei_url, "/rerank", body)
        assert response.status_code == status, (body, response.text)
        if error_type:
            assert response.json()["error_type"] == error_type, response.text


# ---------------------------------------------------------------------- /predict


def test_predict_single_pair_and_batch(tei_url: str, library: dict[str, Model]) -> None:  # noqa: F811
    classifier = library["classifier"]
    single = ok(tei_url, "/predict", {"inputs": "I love it", "model": "classifier"})
    scores = classifier.score(["I love it"])[0]
    assert [p["label"] for p in single] == [CLASSIFIER_LABELS[i] for i in np.argsort(-scores)]
    assert np.allclose(sorted((p["score"] for p in single), reverse=True), sorted(scores)[::-1])
    assert abs(sum(p["score"] for p in single) - 1) < 1e-5  # a softmax over the labels
    pair = ok(tei_url, "/predict", {"inputs": ["a", "b"], "model": "classifier"})
    assert {p["label"]: p["score"] for p in pair} == pytest.approx(
        dict(zip(CLASSIFIER_LABELS, classifier.score([("a", "b")])[0].tolist(), strict=True))
    )
    batch = ok(
        tei_url,
        "/predict",
        {"inputs": [["I love it"], ["a", "b"]], "model": "classifier", "raw_scores": True},
    )
    assert len(batch) == 2 and batch[1] == sorted(batch[1], key=lambda p: -p["score"])
    raw = classifier.score(["I love it"], raw=True)[0]
    assert {p["label"]: p["score"] for p in batch[0]} == pytest.approx(
        dict(zip(CLASSIFIER_LABELS, raw.tolist(), strict=True))
    )
    # The default cross-encoder is the reranker: one label, a sigmoid.
    (only,) = ok(tei_url, "/predict", {"inputs": ["q", "d"]})
    assert only["label"] == "LABEL_0" and 0 < only["score"] < 1


def test_predict_errors_are_teis_and_immichs_stay_immichs(tei_url: str) -> None:  # noqa: F811
    empty = post(tei_url, "/predict", {"inputs": []})
    assert empty.status_code == 400 and empty.json()["error_type"] == "Empty"
    three = post(tei_url, "/predict", {"inputs": ["a", "b", "c"]})
    assert three.status_code == 422 and three.json()["error_type"] == "Validation"
    wrong = post(tei_url, "/predict", {"inputs": "a", "model": "minilm"})
    assert wrong.status_code == 424 and set(wrong.json()) == {"error", "error_type"}
    immich = requests.post(f"{tei_url}/predict", data={"text": "a"}, timeout=TIMEOUT)
    assert immich.status_code == 422 and set(immich.json()) == {"detail"}
    # `curl -d '{...}'` sends JSON as a urlencoded form: still TEI's.
    form = {"content-type": "application/x-www-form-urlencoded"}
    curl = requests.post(f"{tei_url}/predict", data='{"inputs": "a"}', headers=form, timeout=60)
    assert curl.status_code == 200 and curl.json()[0]["label"] == "LABEL_0"


# ------------------------------------------------------------------- /similarity


def test_similarity_is_the_cosine_of_embeddings(tei_url: str, library: dict[str, Model]) -> None:  # noqa: F811
    sentences = ["a dog runs in the park", "stock markets fell today", "a puppy plays outside"]
    body = {"inputs": {"source_sentence": "a dog playing", "sentences": sentences}}
    got = ok(tei_url, "/similarity", body)
    vectors = library["minilm"].embed_texts(["a dog playing", *sentences], normalize=True)
    assert np.allclose(got, vectors[1:] @ vectors[0], atol=1e-6)
    assert got[0] > got[1] and got[2] > got[1]
    empty = post(tei_url, "/similarity", {"inputs": {"source_sentence": "a", "sentences": []}})
    assert empty.status_code == 400 and empty.json()["error_type"] == "Empty"


# ------------------------------------------------------------- /tokenize, /decode


def test_tokenize_gives_ids_offsets_and_special_flags(tei_url: str) -> None:  # noqa: F811
    (tokens,) = ok(tei_url, "/tokenize", {"inputs": "Héllo wörld"})
    assert [t["id"] for t in tokens] == [101, 7592, 2088, 102]
    assert tokens[0] == {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None}
    # UTF-8 byte offsets into the input, as TEI's.
    assert [(t["text"], t["start"], t["stop"]) for t in tokens[1:3]] == [
        ("Héllo", 0, 6),
        ("wörld", 7, 13),
    ]
    bare = ok(tei_url, "/tokenize", {"inputs": ["a b", LONG], "add_special_tokens": False})
    assert [t["text"] for t in bare[0]] == ["a", "b"]
    assert len(bare[1]) > 256  # never cut
    assert post(tei_url, "/tokenize", {"inputs": ""}).status_code == 400


def test_decode_inverts_tokenize(tei_url: str) -> None:  # noqa: F811
    assert ok(tei_url, "/decode", {"ids": [101, 7592, 2088, 102]}) == ["hello world"]
    kept = ok(tei_url, "/decode", {"ids": [[101, 7592, 102], [2088]], "skip_special_tokens": False})
    assert kept == ["[CLS] hello [SEP]", "world"]
    for body, status in [({"ids": []}, 400), ({"ids": [[]]}, 400), ({"ids": [10**6]}, 422)]:
        response = post(tei_url, "/decode", body)
        assert response.status_code == status, response.text
        assert set(response.json()) == {"error", "error_type"}


# ------------------------------------------------------------------------- /info


def test_info_describes_each_kind(tei_url: str) -> None:  # noqa: F811
    info = requests.get(f"{tei_url}/info", timeout=TIMEOUT).json()
    assert info["served_model_name"] == "minilm"
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["max_input_length"] == 256 and info["max_batch_tokens"] == 32 * 256
    kinds = {
        "reranker": {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}},
        "splade": {"embedding": {"pooling": "splade"}},
    }
    for name, model_type in kinds.items():
        described = requests.get(f"{tei_url}/info?model={name}", timeout=TIMEOUT).json()
        assert described["model_type"] == model_type and described["served_model_name"] == name
    classifier = requests.get(f"{tei_url}/info?model=classifier", timeout=TIMEOUT).json()
    assert classifier["model_type"]["classifier"]["label2id"] == {
        label: i for i, label in enumerate(CLASSIFIER_LABELS)
    }
    assert requests.get(f"{tei_url}/health", timeout=TIMEOUT).status_code == 200


# ------------------------------------------------------------ infinity /v1/rerank


def test_infinity_rerank_through_the_openai_client(
    tei_url: str,  # noqa: F811
    library: dict[str, Model],
) -> None:
    client = openai.OpenAI(base_url=f"{tei_url}/v1", api_key="unused")
    query, documents = "what is deep learning?", DOCS[:3]
    body = client.post(
        "/rerank",
        body={"query": query, "documents": documents, "return_documents": True, "top_n": 2},
        cast_to=object,
    )
    assert body["object"] == "rerank" and body["model"] == "reranker"
    want = library["reranker"].rank(query, documents, top_k=2)
    assert [(r["index"], np.float32(r["relevance_score"])) for r in body["results"]] == [
        (i, np.float32(s)) for i, s in want
    ]
    assert [r["document"] for r in body["results"]] == [documents[i] for i, _ in want]
    tokens = (
        library["reranker"].tower("text-pair").tokenize_pairs([(query, d) for d in documents], {})
    )
    assert body["usage"] == {"prompt_tokens": sum(t.tokens for t in tokens)} | {
        "total_tokens": sum(t.tokens for t in tokens)
    }
    assert body["id"].startswith("infinity-") and isinstance(body["created"], int)
    with pytest.raises(openai.BadRequestError, match="is not a cross-encoder"):
        client.post(
            "/rerank", body={"query": "q", "documents": ["a"], "model": "minilm"}, cast_to=object
        )
