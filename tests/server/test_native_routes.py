"""Handspring's own routes: a bad image costs its own row only."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import numpy as np
import pytest
import requests

import handspring
from handspring.embedder import Model
from tests.server.images import png_b64, png_bytes


@pytest.fixture(scope="module")
def clip(tiny_hf: Path) -> Model:
    model = handspring.load(tiny_hf, precision="fp32")
    assert model.modalities == ("image", "text")
    return model


def test_images_by_json_keep_good_rows_and_name_bad_ones(url: str, clip: Model) -> None:
    truncated = base64.b64encode(png_bytes(3)[:200]).decode()
    images = [png_b64(1), truncated, png_b64(2)]
    body = requests.post(f"{url}/api/embed/images", json={"images": images}, timeout=30).json()
    assert body["model"] == "clip" and body["embeddings"][1] is None
    good = clip.embed_images([png_bytes(1), png_bytes(2)]).embeddings
    assert np.array_equal(np.float32([body["embeddings"][0], body["embeddings"][2]]), good)
    [error] = body["errors"]
    assert error["index"] == 1 and error["item"] == "images[1]"
    assert error["reason"] == "images[1]: truncated: the image data ends early"


def test_unreadable_strings_cost_only_their_row(url: str, clip: Model) -> None:
    """Issue 14: an empty string, bad base64, a file:// URL, an http URL with fetching off
    or a non-base64 data URL among good images loses only its own row."""
    wrapped = "\n".join(textwrap.wrap(png_b64(2), 76))  # MIME-style line breaks are fine
    bad = [
        "",
        "not base64 !!",
        "file:///etc/passwd",
        "http://example.com/a.png",
        "data:image/png,raw",
    ]
    images = [png_b64(1), *bad, wrapped]
    body = requests.post(f"{url}/api/embed/images", json={"images": images}, timeout=30).json()
    rows = body["embeddings"]
    assert [row is None for row in rows] == [False, True, True, True, True, True, False]
    good = clip.embed_images([png_bytes(1), png_bytes(2)]).embeddings
    assert np.array_equal(np.float32([rows[0], rows[-1]]), good)
    reasons = {e["index"]: e["reason"] for e in body["errors"]}
    assert sorted(reasons) == [1, 2, 3, 4, 5]
    assert reasons[1] == (
        "images[1]: the input is empty (expected an image as base64, a data URL or a URL)"
    )
    assert "not valid base64" in reasons[2] and "only http and https" in reasons[3]
    assert "not fetched" in reasons[4] and "must be base64" in reasons[5]


def test_images_by_multipart_upload(url: str, clip: Model) -> None:
    files = [
        ("files", ("cat.png", png_bytes(1), "image/png")),
        ("files", ("notes.txt", b"hello, not an image", "text/plain")),
        ("files", ("dog.jpg", png_bytes(2, fmt="JPEG"), "image/jpeg")),
    ]
    body = requests.post(f"{url}/api/embed/images/upload", files=files, timeout=30).json()
    expected = clip.embed_images([png_bytes(1), png_bytes(2, fmt="JPEG")]).embeddings
    assert np.array_equal(np.float32([body["embeddings"][0], body["embeddings"][2]]), expected)
    [error] = body["errors"]
    assert error["item"] == "files[1] 'notes.txt'"
    assert "not an image" in error["reason"]


def test_texts(url: str, clip: Model) -> None:
    body = requests.post(
        f"{url}/api/embed/texts", json={"texts": ["a", "b"], "model": "clip"}, timeout=30
    ).json()
    assert np.array_equal(np.float32(body["embeddings"]), clip.embed_texts(["a", "b"]))
    assert body["tokens"] == [3, 3] and body["dim"] == clip.dim


def test_model_status(url: str) -> None:
    models = requests.get(f"{url}/api/models", timeout=10).json()["models"]
    assert [m["name"] for m in models] == ["clip", "minilm"]
