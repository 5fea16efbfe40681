"""Pooling and Dense graphs vs sentence-transformers' own modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from handspring.graph.builder import FLOAT, INT64, Graph
from handspring.models.sentence_head import dense_layers, pool
from handspring.weights.sentence_transformers import DenseLayer, Pooling

torch = pytest.importorskip("torch")
st_models = pytest.importorskip("sentence_transformers.models")
pytestmark = pytest.mark.reference

RNG = np.random.default_rng(0)
TOKENS = RNG.standard_normal((3, 6, 8)).astype(np.float32)
MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=np.int64)


def _run_pool(pooling: Pooling) -> np.ndarray:
    g = Graph("pool")
    tokens = g.input("tokens", FLOAT, ["b", "t", 8])
    mask = g.input("mask", INT64, ["b", "t"])
    g.output(pool(g, tokens, mask, pooling), "pooled", FLOAT, ["b", None])
    session = ort.InferenceSession(
        g.to_model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"tokens": TOKENS, "mask": MASK})[0]


@pytest.mark.parametrize(
    "modes",
    [
        ("cls",),
        ("max",),
        ("mean",),
        ("mean_sqrt_len_tokens",),
        ("weightedmean",),
        ("lasttoken",),
        ("cls", "mean"),
    ],
)
def test_pooling_modes_equal_sentence_transformers(modes: tuple[str, ...]) -> None:
    reference = st_models.Pooling(8, pooling_mode=modes[0] if len(modes) == 1 else modes)
    features = {
        "token_embeddings": torch.from_numpy(TOKENS.copy()),
        "attention_mask": torch.from_numpy(MASK),
    }
    expected = reference(features)["sentence_embedding"].numpy()
    np.testing.assert_allclose(_run_pool(Pooling(modes)), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("activation", "bias"), [("tanh", True), ("identity", False), ("relu", True)]
)
def test_dense_equals_sentence_transformers(activation: str, bias: bool, tmp_path: Path) -> None:
    act = {"tanh": torch.nn.Tanh(), "identity": torch.nn.Identity(), "relu": torch.nn.ReLU()}[
        activation
    ]
    torch.manual_seed(0)
    reference = st_models.Dense(8, 5, bias=bias, activation_function=act)
    weights = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    layer = DenseLayer(tmp_path, 8, 5, bias, activation)
    g = Graph("dense")
    x = g.input("x", FLOAT, ["b", 8])
    g.output(dense_layers(g, x, (layer,), [weights]), "y", FLOAT, ["b", 5])
    session = ort.InferenceSession(
        g.to_model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    inputs = TOKENS[:, 0, :]
    expected = reference({"sentence_embedding": torch.from_numpy(inputs.copy())})[
        "sentence_embedding"
    ]
    np.testing.assert_allclose(
        session.run(None, {"x": inputs})[0], expected.detach().numpy(), atol=1e-6, rtol=0
    )
