"""How the int8 recipe was chosen: accuracy and speed of each variant, one run.

For the full-size random ViT-B/32 image and text towers, each recipe's graph
is built, run on fixed inputs, and compared with the fp32 graph (cosine of
the embeddings) and timed. Prints a markdown table.

    python bench/int8_recipes.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from handspring.graph.layers import Precision  # noqa: E402
from handspring.models.clip import build_text_graph, build_vision_graph  # noqa: E402
from handspring.preprocess.text import ClipTokenizer  # noqa: E402
from tests.support.checkpoints import VIT_B32, random_clip_weights  # noqa: E402
from tests.support.clip_vocab import write_clip_tokenizer  # noqa: E402
from tests.support.images import photo_array  # noqa: E402
from tests.support.samples import TEXTS  # noqa: E402

RECIPES: dict[str, Precision] = {
    "fp32": Precision(int8=False),
    "int8 per-channel weights, per-row activations (chosen)": Precision(int8=True),
    "int8 per-channel weights, per-tensor activations": Precision(int8=True, per_row=False),
    "int8 per-tensor weights, per-tensor activations": Precision(
        int8=True, per_channel=False, per_row=False
    ),
    "int8, fc2 in fp32": Precision(int8=True, fp32_layers=("mlp.fc2",)),
    "int8, patch embedding in fp32": Precision(int8=True, fp32_layers=("patch_embedding",)),
    "int8, 7-bit weights": Precision(int8=True, weight_bits=7),
}


def _session(model) -> ort.InferenceSession:  # type: ignore[no-untyped-def]
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _rate(run, items: int, seconds: float = 2.0) -> float:  # type: ignore[no-untyped-def]
    run()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run()
        count += 1
    return items * count / (time.perf_counter() - start)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def main() -> None:
    import tempfile

    weights = random_clip_weights(VIT_B32, seed=0)
    # Photo-like pixels, normalised as CLIP does, rather than Gaussian noise.
    mean = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)[:, None, None]
    std = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)[:, None, None]
    pixels = np.stack(
        [(photo_array(224, 224, seed=i).transpose(2, 0, 1) / 255 - mean) / std for i in range(16)]
    ).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer(Path(tmp), tokenizer_json=False)
        tokens = ClipTokenizer.from_folder(tmp).encode(TEXTS * 4)
    feeds_text = {"input_ids": tokens.input_ids, "eot_index": tokens.eot_index}
    rows = []
    reference: dict[str, np.ndarray] = {}
    for name, precision in RECIPES.items():
        vision = _session(build_vision_graph(VIT_B32, weights, precision))
        text = _session(build_text_graph(VIT_B32, weights, precision))
        image_out = vision.run(None, {"pixel_values": pixels})[0]
        text_out = text.run(None, feeds_text)[0]
        reference.setdefault("image", image_out)
        reference.setdefault("text", text_out)
        img_cos = _cosines(image_out, reference["image"])
        txt_cos = _cosines(text_out, reference["text"])
        one = pixels[:1]
        rows.append(
            (
                name,
                img_cos.min(),
                txt_cos.min(),
                _rate(lambda v=vision, p=one: v.run(None, {"pixel_values": p}), 1),
                _rate(lambda v=vision: v.run(None, {"pixel_values": pixels}), len(pixels)),
            )
        )
        print(f"done: {name}", file=sys.stderr)
    print("| recipe | image cosine to fp32 (min) | text cosine (min) | img/s B=1 | img/s B=16 |")
    print("|---|---:|---:|---:|---:|")
    for name, ic, tc, r1, r16 in rows:
        print(f"| {name} | {ic:.5f} | {tc:.5f} | {r1:.1f} | {r16:.1f} |")


if __name__ == "__main__":
    main()
