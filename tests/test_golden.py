"""Handspring against reference outputs stored in tests/golden (made by
tests/make_golden.py with transformers and open_clip): no torch needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import handspring
from tests.golden_inputs import GOLDEN_SEEDS, GOLDEN_TEXTS, golden_images
from tests.support.checkpoints import TINY, write_hf_clip, write_open_clip

GOLDEN = Path(__file__).resolve().parent / "golden"
WRITERS = {"hf": write_hf_clip, "open_clip": write_open_clip}


def _cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


@pytest.mark.parametrize("layout", sorted(WRITERS))
def test_matches_golden_reference_outputs(layout: str, tmp_path: Path) -> None:
    folder = WRITERS[layout](
        tmp_path / layout, TINY, seed=GOLDEN_SEEDS[layout], tokenizer_json=False
    )
    golden = np.load(GOLDEN / f"clip_tiny_{layout}.npz")
    fp32 = handspring.load(folder)
    image = fp32.embed_images(golden_images(), normalize=False).embeddings
    text = fp32.embed_texts(GOLDEN_TEXTS, normalize=False)
    assert np.abs(image - golden["image"]).max() <= 1e-5
    assert np.abs(text - golden["text"]).max() <= 1e-5
    int8 = handspring.load(folder, precision="int8")
    assert _cosine_min(int8.embed_images(golden_images()).embeddings, golden["image"]) >= 0.999
    assert _cosine_min(int8.embed_texts(GOLDEN_TEXTS), golden["text"]) >= 0.995


def test_golden_run_never_imports_torch(tmp_path: Path) -> None:
    """The same check in a process where torch and the references cannot be imported."""
    script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "open_clip", "sentence_transformers"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
import numpy as np, handspring
from pathlib import Path
from tests.golden_inputs import GOLDEN_SEEDS, GOLDEN_TEXTS, golden_images
from tests.support.checkpoints import TINY, write_hf_clip
folder = write_hf_clip(Path({str(tmp_path)!r}) / "hf", TINY, seed=GOLDEN_SEEDS["hf"], tokenizer_json=False)
golden = np.load({str(GOLDEN / "clip_tiny_hf.npz")!r})
model = handspring.load(folder)
assert np.abs(model.embed_texts(GOLDEN_TEXTS, normalize=False) - golden["text"]).max() <= 1e-5
assert np.abs(model.embed_images(golden_images(), normalize=False).embeddings - golden["image"]).max() <= 1e-5
print("ok", "torch" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", "False"]
