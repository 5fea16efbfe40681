"""Every model family of Handspring against its PyTorch reference, side by side in one run:
items/s and peak RSS for PyTorch fp32, Handspring fp32 and Handspring int8, per family and
tower, with the ratios, and a correctness check on the bench inputs (fp32 against PyTorch,
int8 against fp32) in the same table.

Families (full size, random weights, seeded; each checkpoint written once under --cache):
CLIP ViT-B/32, B/16 and L/14 with OpenAI's quick_gelu or LAION's (OpenCLIP) gelu
(transformers CLIPModel's layout: the graphs are the same for every CLIP layout), SigLIP
base/16-224 and SigLIP 2 base/16-224 at fixed resolution (256k Gemma vocabulary), both
transformers SiglipModel folders, SigLIP 2 NaFlex and M-CLIP. A family is one `FamilySpec`
entry in FAMILIES (see its docstring to add one).

Both engines start from the same inputs, as a user would call them: images are JPEG bytes of
varied sizes (photo-like, 512 to 1600 pixels wide), and decoding is included on both sides
(PyTorch: PIL open + the PIL image processor; Handspring: `embed`); texts are 32 search
queries of 1-13 words through each side's own tokenizer. PyTorch runs the tower's own
transformers class (CLIPVisionModelWithProjection, SiglipVisionModel, ... - the modules
CLIPModel / SiglipModel hold) under inference_mode with torch.set_num_threads(CPUs), so both
sides hold one tower, as a tower-per-process server does. Every family, tower and engine
runs in its own fresh process, so peak RSS (VmHWM, load included) is its own; Handspring's
graphs are built in an earlier process and read from the graph cache.

    python bench/families_bench.py                       # all families, ~35 min on 2 cores
    python bench/families_bench.py --families siglip     # comma-separated; see --help
    python bench/families_bench.py --quick               # smoke run: CLIP, tiny repetitions

Needs the test extra (torch, transformers, sentencepiece). Disk: ~2.8 GB of checkpoints
under --cache, kept and reused by folder name (<family>-seed<seed>: remove one after changing
its writer); graphs go to a run folder under it (~4 GB), removed at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from harness import peak_rss_mib, spawn_worker, time_batches

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path.home() / ".cache" / "handspring-bench" / "families"
ENGINES = ("pytorch", "fp32", "int8")
PRECISIONS = ("fp32", "int8")
CPUS = len(os.sched_getaffinity(0))

Items = list[Any]
Runner = Callable[[Items], Any]  # a batch of inputs -> [N, D] embeddings (any scale)


# ------------------------------------------------------------------ inputs

# (height, width): landscape, portrait and square, camera and screenshot sizes.
PHOTO_SIZES = [
    (768, 1024),
    (1024, 768),
    (480, 640),
    (600, 800),
    (1080, 1440),
    (640, 480),
    (512, 512),
    (900, 1600),
]

QUERIES = [
    "a dog",
    "sunset over the sea",
    "a red car parked on the street",
    "children playing football in the park",
    "a bowl of fresh fruit on a wooden table",
    "my cat sleeping on the sofa",
    "people walking in the rain with umbrellas",
    "an old castle on a hill above a small village",
    "birthday cake with candles",
    "snow on the mountains",
    "a plate of pasta with tomato sauce and basil",
    "two friends laughing at a café in Zürich",
    "the Eiffel Tower at night",
    "a close-up of a bee on a yellow flower",
    "a crowded train station during rush hour",
    "waves crashing on a rocky shore under a grey sky",
    "receipt",
    "screenshot of a chat conversation",
    "a baby taking its first steps in the living room",
    "fireworks",
    "a hiking trail through a pine forest in autumn",
    "whiteboard with notes from a meeting",
    "a black and white portrait of an old man",
    "东京的夜景",
    "a bicycle leaning against a brick wall",
    "the kids building a sandcastle at the beach last summer",
    "a handwritten letter",
    "aerial view of a city with a river running through it",
    "a golden retriever catching a frisbee in mid air on a sunny day",
    "wedding",
    "a cup of coffee and a croissant on a balcony in the morning light",
    "Mount Fuji reflected in a lake",
]


def photo_jpegs(count: int) -> Items:
    """JPEG bytes (quality 90) of photo-like images, varied sizes, seeded."""
    from PIL import Image

    from tests.support.images import photo_array

    out = []
    for i in range(count):
        height, width = PHOTO_SIZES[i % len(PHOTO_SIZES)]
        buffer = io.BytesIO()
        Image.fromarray(photo_array(height, width, seed=i)).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def queries(count: int) -> Items:
    return [QUERIES[i % len(QUERIES)] for i in range(count)]


@dataclass(frozen=True)
class TowerInputs:
    """What one tower is fed: `make(count)` gives the items (the same in every process),
    timed at each of `batches`; the correctness columns read all `count` of them."""

    make: Callable[[int], Items]
    batches: tuple[int, ...]
    count: int


PHOTOS = TowerInputs(photo_jpegs, batches=(1, 16), count=16)
PROMPTS = TowerInputs(queries, batches=(1, 32), count=32)
QUICK_BATCHES = (1, 4)
QUICK_COUNT = 8


# ------------------------------------------------------- the PyTorch references


def _decoded(jpegs: Items) -> list[Any]:
    from PIL import Image

    return [Image.open(io.BytesIO(data)).convert("RGB") for data in jpegs]


def clip_reference(folder: Path, tower: str) -> Runner:
    """transformers' CLIP towers with projection, the PIL CLIPImageProcessor (the classic
    path; the torchvision one differs by an 8-bit level here and there) and CLIPTokenizer."""
    import transformers
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    if tower == "image":
        vision = transformers.CLIPVisionModelWithProjection.from_pretrained(folder).eval()
        processor = CLIPImageProcessorPil.from_pretrained(folder)

        def run_images(jpegs: Items) -> Any:
            pixels = processor(_decoded(jpegs), return_tensors="pt")["pixel_values"]
            return vision(pixel_values=pixels).image_embeds

        return run_images
    text = transformers.CLIPTextModelWithProjection.from_pretrained(folder).eval()
    tokenizer = transformers.CLIPTokenizer.from_pretrained(folder)

    def run_texts(texts: Items) -> Any:
        tokens = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        return text(**tokens).text_embeds

    return run_texts


def siglip_reference(folder: Path, tower: str) -> Runner:
    """transformers' SiglipVisionModel / SiglipTextModel (SiglipModel's two halves), the PIL
    SiglipImageProcessor, and SiglipTokenizer (spiece.model) or Siglip2Tokenizer (Gemma
    tokenizer.json) padded to 64 without an attention mask, as SigLIP was trained."""
    import transformers

    if tower == "image":
        from transformers.models.siglip.image_processing_pil_siglip import (
            SiglipImageProcessorPil,
        )

        vision = transformers.SiglipVisionModel.from_pretrained(folder).eval()
        processor = SiglipImageProcessorPil.from_pretrained(folder)

        def run_images(jpegs: Items) -> Any:
            pixels = processor(_decoded(jpegs), return_tensors="pt")["pixel_values"]
            return vision(pixel_values=pixels).pooler_output

        return run_images
    text = transformers.SiglipTextModel.from_pretrained(folder).eval()
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    # AutoTokenizer would give SigLIP 2's folders a GemmaTokenizer, which drops their lowercasing.
    tokenizer_class = (
        transformers.SiglipTokenizer
        if tokenizer_config["tokenizer_class"] == "SiglipTokenizer"
        else transformers.Siglip2Tokenizer
    )
    tokenizer = tokenizer_class.from_pretrained(folder)
    context = text.config.max_position_embeddings

    def run_texts(texts: Items) -> Any:
        ids = tokenizer(
            texts, padding="max_length", max_length=context, truncation=True, return_tensors="pt"
        )["input_ids"]
        return text(input_ids=ids).pooler_output

    return run_texts


def siglip2_naflex_reference(folder: Path, tower: str) -> Runner:
    """transformers' Siglip2VisionModel with its PIL processor (aspect kept, up to 256
    patches), and Siglip2TextModel with the Gemma tokenizer padded to 64."""
    import transformers
    from transformers.models.siglip2.image_processing_pil_siglip2 import (
        Siglip2ImageProcessorPil,
    )

    if tower == "image":
        vision = transformers.Siglip2VisionModel.from_pretrained(folder).eval()
        processor = Siglip2ImageProcessorPil.from_pretrained(folder)
        return lambda jpegs: vision(**processor(_decoded(jpegs), return_tensors="pt")).pooler_output
    text = transformers.Siglip2TextModel.from_pretrained(folder).eval()
    tokenizer = transformers.Siglip2Tokenizer.from_pretrained(folder)

    def run_texts(texts: Items) -> Any:
        ids = tokenizer(
            texts, padding="max_length", max_length=64, truncation=True, return_tensors="pt"
        )["input_ids"]
        return text(input_ids=ids).pooler_output

    return run_texts


def mclip_reference(folder: Path, tower: str) -> Runner:
    """multilingual_clip's MultilingualCLIP.forward with its tokenizer call, as its README
    runs it (the base encoder read from the folder's own copy: no hub)."""
    import transformers
    from multilingual_clip.Config_MCLIP import MCLIPConfig
    from multilingual_clip.pt_multilingual_clip import MultilingualCLIP
    from safetensors.torch import load_file

    config = MCLIPConfig.from_pretrained(folder)
    config.modelBase = str(folder / "reference-base")
    model = MultilingualCLIP(config).eval()
    state = load_file(folder / "model.safetensors")
    state.pop("transformer.embeddings.position_ids", None)
    model.load_state_dict(state)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    return lambda texts: model.forward(list(texts), tokenizer)


# --------------------------------------------------------- checkpoint writers


def clip_writer(patch: int, large: bool, act: str, size: int = 224) -> Callable[[Path, int], None]:
    """A writer of CLIP at full size: ViT-B or ViT-L towers with `patch`-pixel patches at
    `size`, and `act` in both towers: OpenAI's quick_gelu, or LAION's (OpenCLIP) gelu."""

    def write(folder: Path, seed: int) -> None:
        from handspring.models.clip import ClipConfig, TextConfig, VisionConfig
        from tests.support.checkpoints import write_hf_clip

        vision = VisionConfig(patch_size=patch, image_size=size, hidden_act=act)
        text = TextConfig(hidden_act=act)
        if large:
            vision = replace(
                vision, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                num_attention_heads=16,
            )  # fmt: skip
            text = replace(text, hidden_size=768, intermediate_size=3072, num_attention_heads=12)
        write_hf_clip(folder, ClipConfig(vision, text, projection_dim=768 if large else 512), seed)

    return write


def write_siglip_base(folder: Path, seed: int) -> None:
    from tests.support.siglip_checkpoints import BASE_TEXT, BASE_VISION, write_siglip

    write_siglip(folder, "spiece", BASE_VISION, BASE_TEXT, seed=seed)


def write_siglip_so400m(folder: Path, seed: int) -> None:
    from tests.support.siglip_checkpoints import write_siglip

    # google/siglip-so400m-patch14-384: both towers 27 blocks of width 1152 (MLP 4304).
    tower = {
        "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
        "num_attention_heads": 16,
    }  # fmt: skip
    vision = {**tower, "patch_size": 14, "image_size": 384}
    write_siglip(folder, "spiece", vision, {**tower, "vocab_size": 32000}, seed=seed)


def write_siglip2_base(folder: Path, seed: int) -> None:
    from tests.support.siglip_checkpoints import BASE_VISION, write_siglip

    # google/siglip2-base-patch16-224: SigLIP's base towers with Gemma's 256k-token table.
    write_siglip(folder, "gemma", BASE_VISION, {"vocab_size": 256_000}, seed=seed)


def write_siglip2_naflex_base(folder: Path, seed: int) -> None:
    from tests.support.siglip2_checkpoints import BASE_MAX_PATCHES, write_siglip2

    # google/siglip2-base-patch16-naflex: base towers, 256k Gemma table, 256 patches.
    write_siglip2(folder, {}, {"vocab_size": 256_000}, BASE_MAX_PATCHES, seed=seed)


def write_mclip_xlmr_large(folder: Path, seed: int) -> None:
    """M-CLIP/XLM-Roberta-Large-Vit-B-32's architecture (the tokenizer's small vocabulary:
    the 250k table would only add memory to both sides), with a copy of the base encoder
    for the reference to load."""
    import transformers

    from handspring.weights.mclip_files import BASE_CONFIGS
    from tests.support.mclip_checkpoints import write_mclip

    sizes = {
        k: v for k, v in BASE_CONFIGS["xlm-roberta-large"].items()
        if k not in ("vocab_size", "model_type")
    }  # fmt: skip
    write_mclip(folder, "xlm-roberta", "safetensors", seed, sizes, image_dim=512)
    fields = json.loads((folder / "config.json").read_text())
    base = transformers.XLMRobertaModel(transformers.XLMRobertaConfig.from_dict(fields))
    base.save_pretrained(folder / "reference-base")


# ------------------------------------------------------------- Handspring side


def handspring_runner(folder: Path, tower: str, precision: str) -> Runner:
    """`handspring.load` with the one tower, embedding a batch in one call, as a user would."""
    import handspring

    model = handspring.load(folder, modalities=[tower], precision=precision)

    def run(items: Items) -> np.ndarray:
        out = model.embed(tower, items, batch_size=len(items))
        if out.errors:
            raise RuntimeError(f"{tower} #{out.error_index[0]}: {out.errors[0]}")
        return out.embeddings

    return run


# ------------------------------------------------------------------ families


@dataclass(frozen=True)
class FamilySpec:
    """One family of the table: how its checkpoint is written, how PyTorch runs it, and what
    each tower is fed. Adding a family is adding one entry to FAMILIES, e.g.

        FamilySpec(
            name="siglip2-naflex",                  # --families key, checkpoint folder name
            title="SigLIP 2 base/16 NaFlex",        # the table's label
            write=write_siglip2_naflex,             # (folder, seed): fills an empty folder
            reference=siglip2_naflex_reference,     # (folder, tower) -> Runner, torch side
            towers={"image": PHOTOS, "text": PROMPTS},
        )

    `write` runs in a process of its own (torch may be imported there); `reference` runs in
    the PyTorch worker with torch's threads set, and its Runner is called under
    inference_mode; a Runner may return a tensor or an array; `handspring`
    is (folder, tower, precision) -> Runner, `handspring.load` unless a family needs more.
    `speed_targets`: tower -> int8 items/s over PyTorch's that every batch must reach.
    """

    name: str
    title: str
    write: Callable[[Path, int], None]
    # None: Handspring alone (fp32 and int8), for the int8 gate of a model too slow to
    # time in PyTorch here.
    reference: Callable[[Path, str], Runner] | None
    towers: Mapping[str, TowerInputs]
    handspring: Callable[[Path, str, str], Runner] = handspring_runner
    speed_targets: Mapping[str, float] = field(default_factory=dict)

    @property
    def engines(self) -> tuple[str, ...]:
        return ENGINES if self.reference is not None else PRECISIONS


def clip_family(
    name: str, title: str, patch: int, large: bool, act: str, size: int = 224, timed: bool = True
) -> FamilySpec:
    """A CLIP architecture (see `clip_writer`); untimed ones run without PyTorch."""
    return FamilySpec(
        name=name,
        title=title if timed else f"{title} (int8 gate only)",
        write=clip_writer(patch, large, act, size),
        reference=clip_reference if timed else None,
        towers={"image": PHOTOS, "text": PROMPTS},
    )


FAMILIES: list[FamilySpec] = [
    clip_family("clip", "CLIP ViT-B/32", 32, large=False, act="quick_gelu"),
    clip_family("clip-b16", "CLIP ViT-B/16", 16, large=False, act="quick_gelu"),
    clip_family("clip-l14", "CLIP ViT-L/14", 14, large=True, act="quick_gelu"),
    clip_family("laion-b32", "LAION CLIP ViT-B/32 (GELU)", 32, large=False, act="gelu"),
    clip_family("laion-b16", "LAION CLIP ViT-B/16 (GELU)", 16, large=False, act="gelu"),
    clip_family("laion-l14", "LAION CLIP ViT-L/14 (GELU)", 14, large=True, act="gelu"),
    clip_family("clip-l14-336", "CLIP ViT-L/14-336", 14, True, "quick_gelu", 336, timed=False),
    FamilySpec(
        name="siglip",
        title="SigLIP base/16-224",
        write=write_siglip_base,
        reference=siglip_reference,
        towers={"image": PHOTOS, "text": PROMPTS},
        speed_targets={"image": 3.0},
    ),
    FamilySpec(
        name="siglip2",
        title="SigLIP 2 base/16-224",
        write=write_siglip2_base,
        reference=siglip_reference,
        towers={"image": PHOTOS, "text": PROMPTS},
    ),
    FamilySpec(
        name="siglip-so400m",
        title="SigLIP so400m/14-384 (int8 gate only)",
        write=write_siglip_so400m,
        reference=None,
        towers={"image": PHOTOS, "text": PROMPTS},
    ),
    FamilySpec(
        name="siglip2-naflex",
        title="SigLIP 2 base/16 NaFlex (256 patches)",
        write=write_siglip2_naflex_base,
        reference=siglip2_naflex_reference,
        towers={"image": PHOTOS, "text": PROMPTS},
    ),
    FamilySpec(
        name="mclip",
        title="M-CLIP XLM-R large",
        write=write_mclip_xlmr_large,
        reference=mclip_reference,
        towers={"text": PROMPTS},
    ),
]
FAMILY_BY_NAME = {spec.name: spec for spec in FAMILIES}


def tower_plan(spec: FamilySpec, tower: str, quick: bool) -> tuple[tuple[int, ...], int]:
    """The batch sizes timed and how many inputs the tower gets."""
    inputs = spec.towers[tower]
    return (QUICK_BATCHES, QUICK_COUNT) if quick else (inputs.batches, inputs.count)


# ------------------------------------------------------------------ workers


def _inputs_path(run_dir: Path, family: str, tower: str) -> Path:
    return run_dir / f"{family}-{tower}.pkl"


def _vectors_path(run_dir: Path, family: str, tower: str, engine: str) -> Path:
    return run_dir / f"{family}-{tower}-{engine}.npy"


def _pytorch_runner(spec: FamilySpec, folder: Path, tower: str) -> Runner:
    import torch

    torch.set_num_threads(CPUS)
    inner = spec.reference(folder, tower)

    def run(items: Items) -> np.ndarray:
        with torch.inference_mode():
            return np.asarray(inner(items))

    return run


def worker(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    spec, folder = FAMILY_BY_NAME[args.family], Path(args.checkpoint)
    if args.worker == "write":
        spec.write(folder, args.seed)
        return {}
    if args.worker == "build":  # graphs into the cache, so the timed processes read them
        for tower in spec.towers:
            spec.handspring(folder, tower, args.precision)
        return {}
    run_dir, tower, engine = Path(args.run_dir), args.tower, args.worker
    items = pickle.loads(_inputs_path(run_dir, spec.name, tower).read_bytes())
    if engine == "pytorch":
        run = _pytorch_runner(spec, folder, tower)
    else:
        run = spec.handspring(folder, tower, engine)
    run(items[:1])  # lazy initialisation, outside every timing
    ms: dict[str, float] = {}
    rss: dict[str, float] = {}
    batches = [int(b) for b in args.batches.split(",")]
    for batch in batches:
        ms[str(batch)] = time_batches(run, items, [batch], args.seconds)[batch]
        rss[str(batch)] = peak_rss_mib()
    step = max(batches)
    vectors = [np.asarray(run(items[i : i + step])) for i in range(0, len(items), step)]
    np.save(_vectors_path(run_dir, spec.name, tower, engine), np.concatenate(vectors))
    return {"ms": ms, "rss_mib": rss}


# ------------------------------------------------------------- orchestration


def _spawn(args: list[str], env: dict[str, str]) -> dict:
    try:
        return spawn_worker(__file__, args, env)
    except subprocess.CalledProcessError as exc:
        sys.stderr.write(exc.stderr or "")
        raise SystemExit(f"worker {' '.join(args)} failed (exit {exc.returncode})") from None


def ensure_checkpoint(spec: FamilySpec, cache: Path, seed: int, env: dict[str, str]) -> Path:
    """The family's checkpoint, written once: into a staging folder by a worker, then
    renamed, so a folder that exists is complete."""
    folder = cache / f"{spec.name}-seed{seed}"
    if folder.is_dir():
        return folder
    staging = cache / f".staging-{spec.name}-seed{seed}-{os.getpid()}"
    print(f"{spec.name}: writing the checkpoint to {folder} ...", file=sys.stderr)
    try:
        write = ["--worker", "write", "--family", spec.name, "--seed", str(seed)]
        _spawn([*write, "--checkpoint", str(staging)], env)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def run_family(
    spec: FamilySpec,
    folder: Path,
    run_dir: Path,
    env: dict[str, str],
    quick: bool,
    seconds: float,
) -> dict[tuple[str, str], dict]:
    """(tower, engine) -> the worker's figures; the vectors are left in run_dir."""
    common = ["--family", spec.name, "--checkpoint", str(folder), "--run-dir", str(run_dir)]
    for precision in PRECISIONS:
        print(f"{spec.name}: building the {precision} graphs ...", file=sys.stderr)
        _spawn(["--worker", "build", "--precision", precision, *common], env)
    results: dict[tuple[str, str], dict] = {}
    for tower in spec.towers:
        batches, count = tower_plan(spec, tower, quick)
        items = spec.towers[tower].make(count)
        _inputs_path(run_dir, spec.name, tower).write_bytes(pickle.dumps(items))
        timing = ["--tower", tower, "--batches", ",".join(map(str, batches))]
        timing += ["--seconds", str(seconds)]
        for engine in spec.engines:
            print(f"{spec.name} {tower}: running {engine} ...", file=sys.stderr)
            results[(tower, engine)] = _spawn(["--worker", engine, *common, *timing], env)
    return results


# ------------------------------------------------------------------ the table


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def correctness(spec: FamilySpec, run_dir: Path, tower: str) -> tuple[str, float]:
    """fp32 vs PyTorch, max abs on unit vectors ("-" without PyTorch); int8 vs fp32, min
    cosine."""
    vectors = {e: _unit(np.load(_vectors_path(run_dir, spec.name, tower, e))) for e in spec.engines}
    max_abs = "-"
    if "pytorch" in vectors:
        max_abs = f"{np.abs(vectors['fp32'] - vectors['pytorch']).max():.1e}"
    min_cos = float((vectors["int8"] * vectors["fp32"]).sum(axis=1).min())
    return max_abs, min_cos


HEADER = [
    "| family | tower | batch | items/s PyTorch | items/s fp32 | items/s int8 "
    "| fp32 vs PyTorch | int8 vs PyTorch | peak RSS MiB PyTorch / fp32 / int8 "
    "| fp32 max abs vs PyTorch | int8 min cos vs fp32 | target |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
]


def table_rows(
    spec: FamilySpec, results: dict[tuple[str, str], dict], run_dir: Path, quick: bool
) -> tuple[list[str], list[str]]:
    """Markdown rows, and one line per speed target saying whether it was met."""
    rows: list[str] = []
    verdicts: list[str] = []
    for tower in spec.towers:
        batches, _ = tower_plan(spec, tower, quick)
        max_abs, min_cos = correctness(spec, run_dir, tower)
        ratios: list[float] = []
        for batch in batches:
            key = str(batch)
            rate = {e: 1000 * batch / results[(tower, e)]["ms"][key] for e in spec.engines}
            rss = " / ".join(
                f"{results[(tower, e)]['rss_mib'][key]:.0f}" if e in spec.engines else "-"
                for e in ENGINES
            )
            torch_rate, fp32_ratio, int8_ratio = "-", "-", "-"
            if "pytorch" in rate:
                ratios.append(rate["int8"] / rate["pytorch"])
                torch_rate = f"{rate['pytorch']:.1f}"
                fp32_ratio = f"{rate['fp32'] / rate['pytorch']:.2f}x"
                int8_ratio = f"{ratios[-1]:.2f}x"
            target = ""
            if (goal := spec.speed_targets.get(tower)) is not None:
                met = ratios[-1] >= goal
                target = f"int8 >= {goal:g}x: {'met' if met else 'NOT met'}"
            rows.append(
                f"| {spec.title} | {tower} | {batch} | {torch_rate} | {rate['fp32']:.1f} "
                f"| {rate['int8']:.1f} | {fp32_ratio} | {int8_ratio} | {rss} | {max_abs} "
                f"| {min_cos:.5f} | {target} |"
            )
        if (goal := spec.speed_targets.get(tower)) is not None:
            met = all(r >= goal for r in ratios)
            measured = ", ".join(f"{r:.2f}x at {b}" for r, b in zip(ratios, batches, strict=True))
            verdicts.append(
                f"{spec.title} {tower} int8 >= {goal:g}x PyTorch at batch "
                f"{' and '.join(map(str, batches))}: {measured}: {'met' if met else 'NOT met'}"
            )
    return rows, verdicts


def environment() -> str:
    import handspring

    cpuinfo = Path("/proc/cpuinfo").read_text()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor(),
    )
    vnni = "avx512_vnni" in cpuinfo or "avx_vnni" in cpuinfo
    return (
        f"Handspring {handspring.__version__}, onnxruntime {version('onnxruntime')}, "
        f"torch {version('torch')}, transformers {version('transformers')}; "
        f"CPU: {cpu}, {CPUS} CPUs, VNNI {'yes' if vnni else 'no'}"
    )


# -------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    names = ",".join(FAMILY_BY_NAME)
    parser.add_argument("--families", help=f"comma-separated, from {names} (default: all)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: batch {' and '.join(map(str, QUICK_BATCHES))}, {QUICK_COUNT} inputs, "
        f"~0.2 s per figure; CLIP alone unless --families says otherwise",
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="timing per figure")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--seed", type=int, default=0)
    # Worker mode (the bench runs itself).
    parser.add_argument("--worker", choices=("write", "build", *ENGINES))
    parser.add_argument("--family")
    parser.add_argument("--tower")
    parser.add_argument("--precision")
    parser.add_argument("--checkpoint")
    parser.add_argument("--run-dir")
    parser.add_argument("--batches")
    parser.add_argument("--spawned-at", type=float)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    sys.path.insert(0, str(ROOT))
    chosen = args.families or (FAMILIES[0].name if args.quick else names)
    families = [name.strip() for name in chosen.split(",") if name.strip()]
    if unknown := [name for name in families if name not in FAMILY_BY_NAME]:
        parser.error(f"unknown family {unknown[0]!r}; choose from {names}")
    seconds = 0.2 if args.quick else args.seconds
    began = time.perf_counter()
    args.cache.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    folders = {
        name: ensure_checkpoint(FAMILY_BY_NAME[name], args.cache, args.seed, env)
        for name in families
    }
    rows: list[str] = []
    verdicts: list[str] = []
    checked = {
        f"{tower}: {tower_plan(FAMILY_BY_NAME[name], tower, args.quick)[1]}": None
        for name in families
        for tower in FAMILY_BY_NAME[name].towers
    }
    with tempfile.TemporaryDirectory(dir=args.cache, prefix="run-") as tmp:
        run_dir = Path(tmp)
        env["HANDSPRING_CACHE"] = str(run_dir / "handspring-cache")
        for name in families:
            spec = FAMILY_BY_NAME[name]
            results = run_family(spec, folders[name], run_dir, env, args.quick, seconds)
            family_rows, family_verdicts = table_rows(spec, results, run_dir, args.quick)
            rows += family_rows
            verdicts += family_verdicts
    print(f"\nRandom weights at full size; {environment()}")
    print(
        "Images: JPEG bytes, 480x640 to 900x1600, decoding included on both sides; texts: "
        "search queries of 1-13 words (SigLIP pads to 64 on both sides, CLIP to the longest). "
        f"PyTorch: the tower's transformers class, inference_mode, {CPUS} threads; Handspring: "
        f"handspring.load(one tower), model.embed, {CPUS} threads. Median of {seconds:g} s "
        "per figure (at least 3 runs) after a warm-up run; peak RSS = the process's VmHWM after "
        "that batch size ran (load included). Correctness on every bench input of the tower "
        f"({', '.join(checked)}): max abs difference of unit vectors, min cosine.\n"
    )
    print("\n".join(HEADER + rows))
    if verdicts:
        print("\n" + "\n".join(verdicts))
    print(f"\n(bench ran {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
