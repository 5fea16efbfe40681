"""The reference the server benchmark compares with: sentence-transformers behind a minimal
FastAPI app, the way the original photo-search tool served embeddings in Python.

Like that server it encodes each request on its own (no batching across requests), in
FastAPI's thread pool, with PyTorch's default threads, and answers:

    POST /v1/embed          form `query=<text>`            -> {"v": [floats]}
    POST /v1/embed/images   JSON {"images": [base64, ...]} -> {"vectors": [[floats]]}
    GET  /_health                                           -> {"status": "healthy"}

    python bench/reference_server.py --text-model FOLDER --port 8800
    python bench/reference_server.py --clip-model FOLDER --port 8801   # images and texts

Bench-only: it imports torch and sentence-transformers, which the package never does.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
from typing import Annotated

import uvicorn
from fastapi import FastAPI, Form, HTTPException
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer


class ImagesRequest(BaseModel):
    images: list[str]


def create_app(text_model: str | None, clip_model: str | None) -> FastAPI:
    if (text_model is None) == (clip_model is None):
        raise ValueError("give exactly one of text_model and clip_model")
    model = SentenceTransformer(text_model or clip_model, device="cpu")
    takes_images = clip_model is not None
    app = FastAPI()

    # Plain `def` handlers: FastAPI runs them in its thread pool, as the original did.
    @app.post("/v1/embed")
    def embed(query: Annotated[str, Form()] = "") -> dict:
        if not query.strip():
            raise HTTPException(400, "query is empty")
        return {"v": model.encode(query, normalize_embeddings=True).tolist()}

    @app.post("/v1/embed/images")
    def embed_images(body: ImagesRequest) -> dict:
        if not takes_images:
            raise HTTPException(404, "this server has no image model")
        images = [_decode(text, i) for i, text in enumerate(body.images)]
        vectors = model.encode(images, batch_size=32, normalize_embeddings=True)  # type: ignore[arg-type]
        return {"vectors": vectors.tolist()}

    @app.get("/_health")
    def health() -> dict:
        return {"status": "healthy"}

    return app


def _decode(text: str, index: int) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(base64.b64decode(text, validate=True)))
        return ImageOps.exif_transpose(image).convert("RGB")
    except (binascii.Error, UnidentifiedImageError, OSError) as exc:
        raise HTTPException(422, f"images[{index}]: {exc}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--text-model", help="a sentence-transformers text model folder")
    model.add_argument("--clip-model", help="a sentence-transformers CLIP folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8800)
    args = parser.parse_args()
    uvicorn.run(create_app(args.text_model, args.clip_model), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
