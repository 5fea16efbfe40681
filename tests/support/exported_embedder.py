"""An embedder for folders written by `handspring export`, as a program in another language
would write one: onnxruntime, numpy, Pillow, tokenizers and the folder's JSON files, and
nothing of handspring (docs/export.md's example, grown to every modality and field).

Run as a script, it embeds what a request file lists and saves the vectors:

    python exported_embedder.py FOLDER REQUEST.json OUT.npz

REQUEST.json: {"image": [paths], "text": [strings], "audio": [paths of .npy waveforms,
float32 [samples] at the recipe's sample rate]}; OUT.npz holds `<modality>` (the
`embedding` output) and `raw_<modality>` per modality. It prints a JSON line saying which
handspring modules, if any, the process imported.
"""

from __future__ import annotations

import html
import json
import re
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps
from tokenizers import Tokenizer


class ExportedModel:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.model = json.loads((self.folder / "model.json").read_text(encoding="utf-8"))
        self.preprocess = json.loads((self.folder / "preprocess.json").read_text(encoding="utf-8"))
        self._sessions: dict[str, ort.InferenceSession] = {}

    def session(self, modality: str) -> ort.InferenceSession:
        if modality not in self._sessions:
            path = self.folder / self.model["towers"][modality]["file"]
            self._sessions[modality] = ort.InferenceSession(
                str(path), providers=["CPUExecutionProvider"]
            )
        return self._sessions[modality]

    def run(self, modality: str, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(`embedding`, `raw_embedding`), with each input cast to the dtype model.json says."""
        inputs = {i["name"]: i["dtype"] for i in self.model["towers"][modality]["inputs"]}
        feeds = {name: feeds[name].astype(dtype) for name, dtype in inputs.items()}
        embedding, raw = self.session(modality).run(["embedding", "raw_embedding"], feeds)
        return embedding, raw

    # ------------------------------------------------------------------ images

    def embed_images(self, paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
        recipe = self.preprocess["image"]
        pixels = np.stack([image_pixels(Path(p), recipe) for p in paths])
        return self.run("image", {recipe["input"]: pixels})

    # ------------------------------------------------------------------ texts

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_file(str(self.folder / self.preprocess["text"]["tokenizer"]))

    def embed_texts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        recipe = self.preprocess["text"]
        cleaned = [clean_text(t, recipe["clean"]) for t in texts]
        encodings = self.tokenizer().encode_batch(cleaned)
        fields = {
            "ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "type_ids": [e.type_ids for e in encodings],
        }
        # Texts without a prompt: a pooling mask is the attention mask.
        feeds = {
            name: np.asarray(fields[field], dtype=np.int64)
            for name, field in recipe["feeds"].items()
        }
        return self.run("text", feeds)

    # ------------------------------------------------------------------ sounds

    def embed_audio(self, paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
        recipe = self.preprocess["audio"]
        banks_spec = recipe["fbank"]["mel_banks"]
        banks = np.fromfile(self.folder / banks_spec["file"], dtype="<f4")
        banks = banks.reshape(banks_spec["shape"])
        clips = np.stack([audio_clips(np.load(p), recipe, banks) for p in paths])
        return self.run("audio", {recipe["input"]: clips})


# ---------------------------------------------------------------------- text cleaning


def clean_text(text: str, steps: list[dict[str, Any]]) -> str:
    for step in steps:
        op = step["op"]
        if op == "ftfy_fix_text":
            import ftfy  # a Python-only step: only folders whose recipe names it need ftfy

            text = ftfy.fix_text(text)
        elif op == "html_unescape":
            text = html.unescape(text)
        elif op == "replace_regex":
            text = re.sub(step["pattern"], step["replacement"], text)
        elif op == "replace":
            text = text.replace(step["find"], step["replacement"])
        elif op == "strip":
            text = text.strip(step["chars"])
        elif op == "lowercase":
            text = text.lower()
        else:
            raise ValueError(f"unknown cleaning step {op!r}")
    return text


# ---------------------------------------------------------------------- images


def image_pixels(path: Path, recipe: dict[str, Any]) -> np.ndarray:
    """float32 [3, H, W] as preprocess.json's `image` section says."""
    with Image.open(path) as opened:
        opened.load()
        image = opened
        if recipe["decode"]["exif_orientation"]:
            image = ImageOps.exif_transpose(image)
        image = to_rgb(image, recipe["decode"]["alpha"])
    resize = recipe["resize"]
    size = resized_size(image.size, resize)
    if size is not None:
        image = image.resize(size, Image.Resampling[resize["pil_resample"]])
    pixels = np.asarray(image)
    if recipe["crop"] is not None:
        pixels = center_crop(pixels, recipe["crop"])
    levels = (np.arange(256, dtype=np.float64) * recipe["rescale_factor"]).astype(np.float32)
    mean = np.asarray(recipe["mean"], dtype=np.float32)[:, None]
    std = np.asarray(recipe["std"], dtype=np.float32)[:, None]
    table = (levels[None, :] - mean) / std  # [3, 256]
    return np.stack([table[c][pixels[..., c]] for c in range(3)])


def to_rgb(image: Image.Image, alpha: str) -> Image.Image:
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if image.mode == "RGB" and not has_alpha:
        return image
    if has_alpha and alpha == "composite_on_white":
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def resized_size(size: tuple[int, int], resize: dict[str, Any]) -> tuple[int, int] | None:
    """(width, height) after the resize step."""
    w, h = size
    mode = resize["mode"]
    if mode == "shortest_edge":
        edge = resize["size"]
        short, long = min(w, h), max(w, h)
        if resize["long_side"] == "floor(size * long / short)":
            new_long = int(edge * long / short)
        else:
            new_long = int((long / short) * edge)
        return (edge, new_long) if w <= h else (new_long, edge)
    if mode == "squash":
        return resize["width"], resize["height"]
    if mode == "keep_ratio":
        ratios = (h / resize["height"], w / resize["width"])
        ratio = max(ratios) if resize["fit"] == "inside" else min(ratios)
        return max(1, round(w / ratio)), max(1, round(h / ratio))  # round: half to even
    return None


def center_crop(pixels: np.ndarray, crop: dict[str, Any]) -> np.ndarray:
    out = np.full((crop["height"], crop["width"], 3), crop["pad_value"], dtype=np.uint8)
    source, dest = [], []
    for n, c in zip(pixels.shape[:2], (crop["height"], crop["width"]), strict=True):
        if n >= c:
            start = (n - c) // 2 if crop["offset"] == "floor" else round((n - c) / 2)
            source.append(slice(start, start + c))
            dest.append(slice(0, c))
        else:
            pad = c - n
            top = (pad + 1) // 2 if crop["odd_padding_pixel"] == "before" else pad // 2
            source.append(slice(0, n))
            dest.append(slice(top, top + n))
    out[dest[0], dest[1]] = pixels[source[0], source[1]]
    return out


# ---------------------------------------------------------------------- sounds


def audio_clips(waveform: np.ndarray, recipe: dict[str, Any], banks: np.ndarray) -> np.ndarray:
    """float32 [clips, 1, mel bins, frames] from a waveform already at the recipe's rate."""
    rate, clips, fbank_spec = recipe["sample_rate"], recipe["clips"], recipe["fbank"]
    shared = np.atleast_2d(waveform).astype(np.float64)  # [channels, samples]
    length = shared.shape[1]
    duration = length / rate
    max_start = Fraction(max(duration - clips["seconds"], 0))
    out = np.zeros(recipe["shape"][1:], dtype=np.float32)
    for k in range(clips["count"]):
        start = max_start * k / clips["count"]
        first = int(start * rate)
        stop = min(int((start + clips["seconds"]) * rate), length)
        view = shared[:, first:stop]
        view -= view.mean()  # in place: later clips see it where they overlap
        mel = log_mel(view[clips["channel"]].copy(), fbank_spec, banks).T  # [bins, frames]
        frames = min(mel.shape[1], out.shape[-1])
        out[k, 0, :, :frames] = mel[:, :frames]
    norm = recipe["normalize"]
    return (out - np.float32(norm["mean"])) / np.float32(norm["std"])


def log_mel(samples: np.ndarray, spec: dict[str, Any], banks: np.ndarray) -> np.ndarray:
    size, shift = spec["frame_length_samples"], spec["frame_shift_samples"]
    frames = np.lib.stride_tricks.sliding_window_view(samples, size)[::shift]
    frames = frames - frames.mean(axis=1, keepdims=True)
    previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = frames - spec["preemphasis"] * previous
    frames = frames * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(size) / (size - 1)))
    spectrum = np.fft.rfft(frames, n=spec["fft_size"], axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    energies = power @ banks.T.astype(np.float64)
    return np.log(np.maximum(energies, spec["log_floor"])).astype(np.float32)


# ---------------------------------------------------------------------- script


def main(folder: str, request_path: str, out_path: str) -> None:
    model = ExportedModel(Path(folder))
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    embedders = {
        "image": model.embed_images,
        "text": model.embed_texts,
        "audio": model.embed_audio,
    }
    arrays: dict[str, np.ndarray] = {}
    for modality, items in request.items():
        arrays[modality], arrays[f"raw_{modality}"] = embedders[modality](items)
    np.savez(out_path, **arrays)
    imported = sorted(m for m in sys.modules if m == "handspring" or m.startswith("handspring."))
    print(json.dumps({"handspring_modules": imported}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
