"""The malformed corpus through a live `handspring serve`: each regular file between two
good images on the native JSON route and the native multipart route (which answer per
item), and alone on the OpenAI route (which answers for the request).

A bad item must come back as an error naming it (`images[1]`, `files[1] 'name'`,
`input[0]`): a row error on the native routes, a 4xx on OpenAI's; never a 5xx. The good
images around it must come back exactly as when sent alone. A server that dies is
counted and started again.
"""

from __future__ import annotations

import base64
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.reliability import corpus
from bench.reliability.common import served
from bench.reliability.corpus_library import EXACT, Tally

TIMEOUT_S = 120.0
Check = Callable[[httpx.Response, str, int], tuple[bool, bool]]  # -> (embedded, named)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class _Routes:
    """The three requests for one bad file, and what each answer means."""

    def __init__(self, client: httpx.Client, goods: list[bytes], alone: np.ndarray) -> None:
        self.client = client
        self.goods = goods
        self.alone = alone  # the goods' vectors, each sent alone

    def native_json(self, name: str, data: bytes) -> httpx.Response:
        images = [_b64(self.goods[0]), _b64(data), _b64(self.goods[1])]
        return self.client.post("/api/embed/images", json={"images": images, "model": "clip"})

    def native_upload(self, name: str, data: bytes) -> httpx.Response:
        files = [("files", ("good-0", self.goods[0])), ("files", (name, data)),
                 ("files", ("good-1", self.goods[1]))]  # fmt: skip
        return self.client.post("/api/embed/images/upload", files=files, data={"model": "clip"})

    def openai(self, name: str, data: bytes) -> httpx.Response:
        body = {"input": [f"data:image/x;base64,{_b64(data)}"], "model": "clip"}
        return self.client.post("/v1/embeddings", json={**body, "modality": "image"})

    def goods_kept(self, answer: dict) -> int:
        """Good images lost or changed in a native answer (of the two)."""
        lost = 0
        for row, good in ((0, 0), (2, 1)):
            vector = answer["embeddings"][row]
            if vector is None or float(np.abs(np.asarray(vector) - self.alone[good]).max()) > EXACT:
                lost += 1
        return lost


def _native_outcome(
    routes: _Routes, response: httpx.Response, item: str, tally: Tally, what: str
) -> bool | None:
    """Whether the bad item was embedded (None: the request was refused whole). `item`:
    how its name starts (a multipart file name comes back as the server parsed it)."""
    if response.status_code != 200:
        tally.good_lost += 2
        tally.note("whole request refused", f"{what}: {response.status_code} {response.text[:160]}")
        if item not in response.text:
            tally.unnamed += 1
            tally.note("unnamed", f"{what}: {response.text[:160]}")
        return None
    answer = response.json()
    lost = routes.goods_kept(answer)
    tally.good_lost += lost
    if lost:
        tally.note("good lost", what)
    if answer["embeddings"][1] is not None:
        return True
    errors = [e for e in answer["errors"] if e["index"] == 1]
    named = errors and errors[0]["item"].startswith(item)
    if not named or not errors[0]["reason"].startswith(errors[0]["item"]):
        tally.unnamed += 1
        tally.note("unnamed", f"{what}: {answer['errors']}")
    return False


def run_server(work: Path, folder: Path, model: Path) -> tuple[dict[str, Tally], dict[str, Any]]:
    entries = [e for e in corpus.load(folder) if not e.special]
    goods = [p.read_bytes() for p in sorted((folder / corpus.GOOD_FOLDER).iterdir())[:2]]
    tallies = {route: Tally() for route in ("native JSON", "native multipart", "OpenAI")}
    server_5xx: list[str] = []
    with served(work, [f"clip={model}:fp32"], name="corpus-server") as server:
        client = httpx.Client(base_url=server.url, timeout=TIMEOUT_S)
        alone = []
        for good in goods:
            answer = client.post("/api/embed/images", json={"images": [_b64(good)]}).json()
            alone.append(answer["embeddings"][0])
        routes = _Routes(client, goods, np.asarray(alone))
        for number, entry in enumerate(entries):
            data = (folder / entry.name).read_bytes()
            # Sent as UTF-8: a name that is not (bytes 0xff...) goes with replacement marks.
            name = Path(entry.name).name.encode("utf-8", "replace").decode("utf-8")
            for route, send in (
                ("native JSON", routes.native_json),
                ("native multipart", routes.native_upload),
                ("OpenAI", routes.openai),
            ):
                tally = tallies[route]
                tally.items += 1
                what = f"{route} {entry.name}"
                began = time.perf_counter()
                try:
                    response = send(name, data)
                except httpx.TransportError as exc:
                    tally.crashes += server.process is None or server.process.poll() is not None
                    tally.note("no answer", f"{what}: {exc!r}")
                    if server.process is not None and server.process.poll() is not None:
                        print(f"  server died on {what}; starting it again", file=sys.stderr)
                        server.start(timeout_s=300)
                    continue
                seconds = time.perf_counter() - began
                if seconds > tally.slowest_s:
                    tally.slowest_s, tally.slowest = seconds, entry.name
                if response.status_code >= 500:
                    server_5xx.append(f"{what}: {response.status_code} {response.text[:200]}")
                    tally.note("5xx", server_5xx[-1])
                    continue
                embedded = _judge(routes, route, response, name, tally, what)
                if embedded is True:
                    tally.embedded += 1
                    if entry.expect == corpus.ERROR:
                        tally.bad_accepted += 1
                        tally.note("must fail, embedded", what)
                elif embedded is False:
                    tally.errors += 1
                    if entry.expect == corpus.EMBED and _accepted_format(data):
                        tally.good_lost += 1
                        tally.note("valid file refused", what)
            if number % 50 == 0:
                print(f"  server: {number}/{len(entries)} files", file=sys.stderr)
        alive = client.get("/_health").status_code == 200
        after = client.post("/api/embed/images", json={"images": [_b64(goods[0])]})
        alive = alive and after.status_code == 200 and after.json()["embeddings"][0] is not None
        client.close()
    return tallies, {"5xx": server_5xx, "alive_after": alive, "files": len(entries)}


def _accepted_format(data: bytes) -> bool:
    """Whether the server takes this file's format by default (it refuses AVIF, JPEG 2000...)."""
    import io

    import pillow_heif
    from PIL import Image

    from handspring.server.config import DEFAULT_IMAGE_FORMATS

    pillow_heif.register_heif_opener()
    try:
        with Image.open(io.BytesIO(data)) as image:
            return (image.format or "").upper() in DEFAULT_IMAGE_FORMATS
    except Exception:
        return False


def _judge(
    routes: _Routes, route: str, response: httpx.Response, name: str, tally: Tally, what: str
) -> bool | None:
    if route == "native JSON":
        return _native_outcome(routes, response, "images[1]", tally, what)
    if route == "native multipart":
        return _native_outcome(routes, response, "files[1]", tally, what)
    if response.status_code == 200:
        return True
    if "input[0]" not in response.text:
        tally.unnamed += 1
        tally.note("unnamed", f"{what}: {response.status_code} {response.text[:160]}")
    return False
