"""PyTorch (transformers) vs Handspring on a full-size random-weight ViT-B/32, in one run.

Each engine runs in its own fresh process, so peak RSS and start-up time are
its own. Images go in as in-memory PIL photos (640x480) and texts as short
prompts, through each engine's own preprocessing, as a user would call it.

    python bench/clip_bench.py            # prints a markdown table
    python bench/clip_bench.py --quick    # fewer repetitions

Needs the test extra (torch, transformers, open_clip for the vocabulary).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import peak_rss_mib, ratio_rows, spawn_worker, time_batches

ROOT = Path(__file__).resolve().parents[1]
BATCHES = (1, 2, 5, 32)
PROMPTS = [
    "a photo of a dog",
    "a red car parked on the street",
    "children playing football in the park",
    "a bowl of fresh fruit on a table",
    "sunset over the mountains",
    "a cat sleeping on a sofa",
    "people walking in the rain with umbrellas",
    "an old castle on a hill",
]


def _images(n: int):  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(ROOT))
    from PIL import Image

    from tests.support.images import photo_array

    return [Image.fromarray(photo_array(480, 640, seed=i)) for i in range(n)]


def worker(engine: str, checkpoint: str, seconds: float, spawned_at: float) -> dict:
    import numpy as np
    from PIL import Image

    first = [Image.fromarray(np.full((480, 640, 3), 128, np.uint8))]
    if engine == "pytorch":
        import torch
        import transformers
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        model = transformers.CLIPModel.from_pretrained(checkpoint).eval()
        processor = CLIPImageProcessorPil.from_pretrained(checkpoint)
        tokenizer = transformers.CLIPTokenizer.from_pretrained(checkpoint)

        def run_images(batch):  # type: ignore[no-untyped-def]
            with torch.inference_mode():
                pixels = processor(batch, return_tensors="pt")["pixel_values"]
                return model.get_image_features(pixel_values=pixels).pooler_output

        def run_texts(batch):  # type: ignore[no-untyped-def]
            with torch.inference_mode():
                tokens = tokenizer(batch, padding=True, return_tensors="pt")
                return model.get_text_features(**tokens).pooler_output
    else:
        import handspring

        model = handspring.load(checkpoint, precision=engine)

        def run_images(batch):  # type: ignore[no-untyped-def]
            return model.embed_images(batch, batch_size=len(batch)).embeddings

        def run_texts(batch):  # type: ignore[no-untyped-def]
            return model.embed_texts(batch, batch_size=len(batch))

    run_images(first)
    first_embedding = time.time() - spawned_at
    run_texts(PROMPTS[:1])
    rss_ready = peak_rss_mib()
    images = _images(8)
    image_ms = time_batches(run_images, images, BATCHES, seconds)
    text_ms = time_batches(run_texts, PROMPTS, BATCHES, seconds)
    return {
        "engine": engine,
        "first_embedding_s": first_embedding,
        "image_ms": image_ms,
        "text_ms": text_ms,
        "rss_ready_mib": rss_ready,
        "peak_rss_mib": peak_rss_mib(),
    }


def _table(results: dict[str, dict]) -> str:
    lines = [
        "| engine | input | batch | ms/batch | items/s | vs PyTorch |",
        "|---|---|---:|---:|---:|---:|",
        *ratio_rows(results, "image_ms", "images", BATCHES, "pytorch"),
        *ratio_rows(results, "text_ms", "texts", BATCHES, "pytorch"),
    ]
    lines += [
        "",
        "| engine | RSS, both towers ready, one image and one text embedded | peak RSS over the whole run (batches up to 32) | start to first embedding |",
        "|---|---:|---:|---:|",
    ]
    for engine, res in results.items():
        lines.append(
            f"| {engine} | {res['rss_ready_mib']:.0f} MiB | {res['peak_rss_mib']:.0f} MiB "
            f"| {res['first_embedding_s']:.2f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker")
    parser.add_argument("--checkpoint")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--spawned-at", type=float)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.checkpoint, args.seconds, args.spawned_at)))
        return

    sys.path.insert(0, str(ROOT))
    from tests.support.checkpoints import VIT_B32, write_hf_clip

    seconds = 1.5 if args.quick else args.seconds
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_hf_clip(Path(tmp) / "vit-b-32", VIT_B32, seed=0)
        env = dict(os.environ, HANDSPRING_CACHE=str(Path(tmp) / "cache"), HF_HUB_OFFLINE="1")
        results: dict[str, dict] = {}
        for engine in ("pytorch", "fp32", "int8"):
            if engine != "pytorch":  # build the graphs once, so the timed start reads the cache
                subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        f"import handspring; handspring.load({str(checkpoint)!r}, precision={engine!r})",
                    ],
                    check=True,
                    env=env,
                )
            print(f"running {engine} ...", file=sys.stderr)
            args_ = ["--worker", engine, "--checkpoint", str(checkpoint), "--seconds", str(seconds)]
            results[engine] = spawn_worker(__file__, args_, env)
    print(
        f"ViT-B/32, random weights, {os.cpu_count()} CPUs, images 640x480 PIL, texts of 4-8 words\n"
    )
    print(_table(results))


if __name__ == "__main__":
    main()
