"""Padding texts to the longest in the batch vs to the full context of 77.

The text tower reads the first end-of-text token under a causal mask, so
padding after it cannot change the result: this prints the speed-up of not
padding (and checks the vectors are identical), full-size random ViT-B/32
text tower, in one run.

    python bench/text_padding.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import handspring  # noqa: E402
from tests.support.checkpoints import VIT_B32, write_hf_clip  # noqa: E402

PROMPTS = ["a photo of a dog", "a red car parked on the street", "sunset over the mountains"]


def _ms(run, seconds: float = 2.0) -> float:  # type: ignore[no-untyped-def]
    run()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run()
        count += 1
    return 1000 * (time.perf_counter() - start) / count


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_hf_clip(Path(tmp) / "vit", VIT_B32, tokenizer_json=False)
        print(
            "| precision | batch | tokens | padded to 77 (ms) | to the longest (ms) | speed-up | max abs diff |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for precision in ("fp32", "int8"):
            model = handspring.load(checkpoint, modalities=["text"], precision=precision)
            assert model.tokenizer is not None and model.text_tower is not None
            session = model.text_tower.session
            for batch in (1, 32):
                tokens = model.tokenizer.encode((PROMPTS * 11)[:batch])
                full = np.full((batch, 77), model.tokenizer.pad_id, dtype=np.int64)
                full[:, : tokens.input_ids.shape[1]] = tokens.input_ids
                short_feed = {"input_ids": tokens.input_ids, "eot_index": tokens.eot_index}
                full_feed = {"input_ids": full, "eot_index": tokens.eot_index}
                diff = np.abs(
                    session.run(None, short_feed)[0] - session.run(None, full_feed)[0]
                ).max()
                full_ms = _ms(lambda s=session, f=full_feed: s.run(None, f))
                short_ms = _ms(lambda s=session, f=short_feed: s.run(None, f))
                print(
                    f"| {precision} | {batch} | {tokens.input_ids.shape[1]} | {full_ms:.1f} | "
                    f"{short_ms:.1f} | {full_ms / short_ms:.1f}x | {diff:.1e} |"
                )


if __name__ == "__main__":
    main()
