"""Regenerate tests/golden/*.npz from the reference implementations.

    python -m tests.make_golden

The golden tests then check Handspring against these numbers without torch.
Rerun only when the test checkpoints or inputs change on purpose.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from tests.golden_inputs import GOLDEN_SEEDS, GOLDEN_TEXTS, golden_images
from tests.support.checkpoints import TINY, write_hf_clip, write_open_clip
from tests.test_clip_parity import _hf_reference, _open_clip_reference

GOLDEN = Path(__file__).resolve().parent / "golden"


def main() -> None:
    images = [Image.fromarray(a) for a in golden_images()]
    with tempfile.TemporaryDirectory() as tmp:
        hf = write_hf_clip(Path(tmp) / "hf", TINY, seed=GOLDEN_SEEDS["hf"])
        oc = write_open_clip(Path(tmp) / "oc", TINY, seed=GOLDEN_SEEDS["open_clip"])
        for name, (image, text) in {
            "hf": _hf_reference(hf, images, GOLDEN_TEXTS),
            "open_clip": _open_clip_reference(oc, images, GOLDEN_TEXTS),
        }.items():
            np.savez_compressed(GOLDEN / f"clip_tiny_{name}.npz", image=image, text=text)
            print(f"wrote clip_tiny_{name}.npz: image {image.shape}, text {text.shape}")


if __name__ == "__main__":
    main()
