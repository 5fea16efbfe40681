"""Decoding large photos: the reference path, ours exact, ours with JPEG draft mode.

Makes 12-megapixel JPEGs (quality 90, EXIF orientations mixed in), then for
each path prints ms/photo (one process, one thread) and how far its pixels
and its ViT-B/32 embeddings (random weights, fp32) are from the exact ones.

    python bench/decode_bench.py [--photos 12]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from handspring.preprocess.decode import decode_image  # noqa: E402
from handspring.preprocess.image import ImageTransform  # noqa: E402
from tests.support.images import photo_array  # noqa: E402


def _make_photos(folder: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        image = Image.fromarray(photo_array(3000, 4000, seed=i))
        exif = Image.Exif()
        exif[0x0112] = (1, 6, 3, 8)[i % 4]
        path = folder / f"photo_{i}.jpg"
        image.save(path, quality=90, exif=exif, progressive=i % 6 == 5)
        paths.append(path)
    return paths


def _timed(fn, paths: list[Path]) -> tuple[float, list[np.ndarray]]:  # type: ignore[no-untyped-def]
    out = [fn(paths[0])]  # warm-up, not timed
    start = time.perf_counter()
    out = [fn(p) for p in paths]
    return 1000 * (time.perf_counter() - start) / len(paths), out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=12)
    args = parser.parse_args()
    from transformers.image_utils import load_image
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    import handspring
    from tests.support.checkpoints import VIT_B32, write_hf_clip

    reference = CLIPImageProcessorPil()
    transform = ImageTransform.from_hf(reference.to_dict())
    with tempfile.TemporaryDirectory() as tmp:
        paths = _make_photos(Path(tmp), args.photos)
        paths_ = {
            "transformers: CLIPImageProcessorPil(load_image(path))": lambda p: reference(
                load_image(str(p)), return_tensors="np"
            )["pixel_values"][0],
            "handspring exact": lambda p: transform(decode_image(p, item=str(p))),
            "handspring fast_decode (JPEG draft)": lambda p: transform(
                decode_image(p, item=str(p), draft_shortest=transform.draft_size())
            ),
        }
        results = {name: _timed(fn, paths) for name, fn in paths_.items()}
        checkpoint = write_hf_clip(Path(tmp) / "vit", VIT_B32, tokenizer_json=False)
        model = handspring.load(checkpoint, modalities=["image"])
        tower = model.image_tower
        assert tower is not None

        def embed(pixels: list[np.ndarray]) -> np.ndarray:
            vectors = tower.session.run(None, {"pixel_values": np.stack(pixels)})[0]
            return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

        exact_pixels = results["handspring exact"][1]
        exact_vectors = embed(exact_pixels)
        ref_ms = results["transformers: CLIPImageProcessorPil(load_image(path))"][0]
        print(f"{len(paths)} JPEGs of 4000x3000 (12 MP), quality 90, one thread\n")
        print(
            "| path | ms/photo | speed-up | pixel max abs | pixel mean abs (8-bit levels) | embedding cosine (min) |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for name, (ms, pixels) in results.items():
            diff = np.abs(np.stack(pixels) - np.stack(exact_pixels))
            # One 8-bit level is 1/255 before normalisation, ~0.0146 after.
            level = 1 / 255 / 0.27
            cosine = (embed(pixels) * exact_vectors).sum(axis=1).min()
            print(
                f"| {name} | {ms:.0f} | {ref_ms / ms:.1f}x | {diff.max():.4f} | "
                f"{diff.mean() / level:.3f} | {cosine:.6f} |"
            )


if __name__ == "__main__":
    main()
