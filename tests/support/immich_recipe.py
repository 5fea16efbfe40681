"""Immich's machine-learning service's own recipe for an Immich-layout folder, written from
its behaviour (tests only): how it decodes, resizes, crops, normalises and tokenizes before
running the exported ONNX graphs. A library Immich indexed holds exactly these vectors.

- Images: `Image.open`, no EXIF rotation, `convert("RGB")`; the shortest side resized to
  the size with the long side `int((long / short) * size)`; a centre crop from
  `int(w / 2 - size / 2)`; /255, then `x * (1 / std) - mean / std`.
- Texts: whitespace runs collapsed (and, for `clean: canonicalize` configs, punctuation
  removed and lowercased), then `textual/tokenizer.json` padded with tokenizer_config's
  pad token and truncated to the config's context length; int32 ids (and for M-CLIP
  exports, the tokenizer's attention mask beside them).
"""

from __future__ import annotations

import io
import json
import string
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image
from tokenizers import Tokenizer

_RESAMPLE = {r.name.lower(): r for r in Image.Resampling}


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def immich_image_vector(folder: Path, data: bytes) -> np.ndarray:
    cfg = json.loads((folder / "visual" / "preprocess_cfg.json").read_text())
    size = cfg["size"][0] if isinstance(cfg["size"], list) else cfg["size"]
    resample = _RESAMPLE[cfg["interpolation"].lower()]
    image = Image.open(io.BytesIO(data))
    image.load()
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.width < image.height:
        image = image.resize((size, int((image.height / image.width) * size)), resample=resample)
    else:
        image = image.resize((int((image.width / image.height) * size), size), resample=resample)
    left, upper = int(image.width / 2 - size / 2), int(image.height / 2 - size / 2)
    image = image.crop((left, upper, left + size, upper + size))
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    mean, std = np.float32(cfg["mean"]), np.float32(cfg["std"])
    pixels *= 1.0 / std
    pixels -= mean / std
    session = ort.InferenceSession(str(folder / "visual" / "model.onnx"))
    out = session.run(None, {"image": pixels.transpose(2, 0, 1)[None]})[0][0]
    return _unit(out)


def immich_text_vector(folder: Path, text: str) -> np.ndarray:
    """CLIP and SigLIP exports: the ids, as `text`."""
    session = ort.InferenceSession(str(folder / "textual" / "model.onnx"))
    ids, _ = _immich_tokens(folder, text)
    return _unit(session.run(None, {"text": ids})[0][0])


def immich_mclip_text_vector(folder: Path, text: str) -> np.ndarray:
    """M-CLIP exports (Immich's MClipTextualEncoder): the ids and the attention mask."""
    session = ort.InferenceSession(str(folder / "textual" / "model.onnx"))
    ids, mask = _immich_tokens(folder, text)
    return _unit(session.run(None, {"input_ids": ids, "attention_mask": mask})[0][0])


def _immich_tokens(folder: Path, text: str) -> tuple[np.ndarray, np.ndarray]:
    text_cfg = json.loads((folder / "config.json").read_text())["text_cfg"]
    context = text_cfg.get("context_length", 77)
    kwargs = text_cfg.get("tokenizer_kwargs") or {}
    pad_token = json.loads((folder / "textual" / "tokenizer_config.json").read_text())["pad_token"]
    tokenizer = Tokenizer.from_file(str(folder / "textual" / "tokenizer.json"))
    tokenizer.enable_padding(
        length=context, pad_token=pad_token, pad_id=tokenizer.token_to_id(pad_token)
    )
    tokenizer.enable_truncation(max_length=context)
    text = " ".join(text.split())
    if kwargs.get("clean") == "canonicalize":
        text = text.translate(str.maketrans("", "", string.punctuation)).lower()
    encoding = tokenizer.encode(text)
    ids = np.array([encoding.ids], dtype=np.int32)
    return ids, np.array([encoding.attention_mask], dtype=np.int32)
