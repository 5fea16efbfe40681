"""Soak: 100k mixed requests into one `handspring serve`, and whether its memory levels off.

The server runs as its own process on loopback and hosts one random-weight CLIP model,
built into the graph cache beforehand by another process. A few concurrent clients
(httpx, keep-alive connections) send a seeded mix of the contracts' requests:

- OpenAI `/v1/embeddings`: texts (one or a list, float or base64 answers, some with
  `dimensions`), images as base64 with `"modality": "image"`, images as data URLs;
- native `/api/embed/images/upload` (multipart, 1-3 files) and `/api/embed/images`
  (JSON, a bad item between two good ones: partial answers);
- TEI `/embed` (one text or a list) and Weaviate `/vectorize` (texts and images);
- bad requests: malformed JSON, bad base64, truncated JPEGs, bodies over the limit (with
  and without a Content-Length), unknown models, empty inputs, unknown routes;
- and `/health`, `/metrics` now and then.

Photos are of several sizes (320x240 to 1024x768 JPEGs, and a PNG) so the decoders and
the engine see varied buffers and batch shapes. Every answer is counted by status, against
the statuses its contract gives (Weaviate answers bad input with 500; the native routes
answer a bad item with 200 and its reason); a 429 is counted, never "unexpected"; a
broken connection is counted with the time its request had taken.

The server's memory is read from /proc/<pid>/status (VmRSS, RssAnon) and
/proc/<pid>/smaps_rollup (Pss) before the first request, after the first 10k and every
10k after; the clients pause at each mark, so no request is in flight when it is read.
Target: RSS at the end at most 1.10 x RSS after the first 10k. Anonymous memory is split
by what holds it, from /proc/<pid>/smaps: malloc's main heap ([heap]), the 64 MiB-aligned
heaps of glibc's other arenas (one per thread, up to 8 per core, unless MALLOC_ARENA_MAX
says otherwise), and other anonymous mappings (blocks malloc mmaps, ONNX Runtime's arena;
and a heap whose used part the kernel merged with a neighbouring mapping).

    python bench/reliability/soak.py                        # 100k requests
    python bench/reliability/soak.py --requests 20000       # a quicker look
    python bench/reliability/soak.py --env MALLOC_ARENA_MAX=2 # malloc's arenas capped
    python bench/reliability/soak.py --tracemalloc 8        # Python allocations that grew
    python bench/reliability/soak.py --json soak.json       # for bench/reliability/report.py

Needs the test extra (the random checkpoint is written with the tests' helpers).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import dataclasses
import io
import json
import os
import re
import signal
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.server_bench import QUERIES, Server, build_graphs  # noqa: E402
from handspring.models.clip import ClipConfig, TextConfig, VisionConfig  # noqa: E402

MIB = 1024 * 1024
TARGET_GROWTH = 1.10  # end RSS over RSS after the first mark
# The server's body limit in the soak (its default is 20 MiB), so that the bodies sent over
# it are 2.5 MiB rather than 25.
MAX_BODY_BYTES = 2 * MIB
HEAP_BYTES = 64 * MIB  # glibc's HEAP_MAX_SIZE on 64-bit: every non-main arena is such heaps
MODEL = "clip"

# The server is started through this when --tracemalloc is given: SIGUSR1 dumps a snapshot
# of Python's allocations to $SOAK_TRACEMALLOC_OUT.<n>, without changing the server's code.
TRACEMALLOC_BOOTSTRAP = """
import itertools, os, signal, sys, tracemalloc
tracemalloc.start(int(os.environ["SOAK_TRACEMALLOC_FRAMES"]))
_dumps = itertools.count()
def _dump(signum, frame):
    path = f"{os.environ['SOAK_TRACEMALLOC_OUT']}.{next(_dumps)}"
    tracemalloc.take_snapshot().dump(path + ".part")
    os.replace(path + ".part", path)
signal.signal(signal.SIGUSR1, _dump)
from handspring.cli import main
sys.argv[0] = "handspring"
main()
"""


# ------------------------------------------------------------------ model


def model_config(size: str) -> ClipConfig:
    from tests.support.checkpoints import TINY, VIT_B32

    if size == "b32":
        return VIT_B32
    if size == "tiny":
        return TINY
    # A ViT-B/32 at half the width and depth: real 224-pixel images and 77-token texts at
    # about an eighth of the FLOPs. The full size would spend the soak's hours in GEMMs;
    # at this size decoding and the server's own work take most of the time, as they do
    # for the memory this measures.
    return ClipConfig(
        vision=VisionConfig(
            hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6
        ),
        text=TextConfig(
            hidden_size=256, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=4
        ),
        projection_dim=256,
    )


def prepare_model(work: Path, size: str, precision: str, env: dict[str, str]) -> Path:
    from tests.support.checkpoints import write_sentence_transformers_clip

    folder = work / f"clip-{size}"
    if not (folder / "modules.json").exists():
        print(f"writing a random-weight CLIP ({size}) ...", file=sys.stderr)
        write_sentence_transformers_clip(folder, model_config(size), seed=0)
    print(f"building its {precision} graphs ...", file=sys.stderr)
    build_graphs(str(folder), precision, env)
    return folder


# --------------------------------------------------------------- requests


@dataclass(frozen=True)
class Call:
    """One prepared request: JSON bodies are serialised up front so the clients do little."""

    path: str
    content: bytes | None = None
    content_type: str = "application/json"
    files: tuple[tuple[str, bytes, str], ...] = ()  # multipart: (filename, bytes, type)
    chunked: bool = False  # send `content` without a Content-Length
    method: str = "POST"
    expect: tuple[int, ...] = (200,)


@dataclass(frozen=True)
class Kind:
    name: str
    weight: float
    calls: tuple[Call, ...]

    @property
    def expected(self) -> list[int]:
        return sorted({status for call in self.calls for status in call.expect})


def photos() -> list[tuple[str, bytes]]:
    """(media type, file) of photo-like images of several sizes."""
    from PIL import Image

    from tests.support.images import photo_array

    sizes = [(240, 320), (480, 640), (600, 800), (768, 1024), (640, 480), (512, 512)]
    out: list[tuple[str, bytes]] = []
    for seed, (height, width) in enumerate(sizes):
        buffer = io.BytesIO()
        Image.fromarray(photo_array(height, width, seed=seed)).save(buffer, "JPEG", quality=90)
        out.append(("image/jpeg", buffer.getvalue()))
    buffer = io.BytesIO()
    Image.fromarray(photo_array(300, 400, seed=99)).save(buffer, "PNG")
    out.append(("image/png", buffer.getvalue()))
    return out


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def request_kinds(rng: np.random.Generator) -> list[Kind]:
    images = photos()
    b64 = [_b64(data) for _, data in images]
    urls = [f"data:{media};base64,{_b64(data)}" for media, data in images]
    jpeg = images[1][1]

    def texts(count: int) -> list[str]:
        return [str(q) for q in rng.choice(QUERIES, count)]

    def openai_text(i: int) -> Call:
        body: dict[str, Any] = {"input": texts(1)[0] if i % 3 == 0 else texts(1 + i % 8)}
        body |= {"model": MODEL, "encoding_format": "base64" if i % 2 else "float"}
        if i % 5 == 0:
            body["dimensions"] = 32  # under every size's width (tiny: 40)
        return Call("/v1/embeddings", _json(body))

    def upload(i: int) -> Call:
        chosen = [images[(i + k) % len(images)] for k in range(1 + i % 3)]
        files = tuple(
            (f"photo{k}.{media.split('/')[1]}", data, media)
            for k, (media, data) in enumerate(chosen)
        )
        return Call("/api/embed/images/upload", files=files)

    bad_b64 = "this is not base64!" + b64[0][:200]
    truncated = _b64(jpeg[: len(jpeg) // 2])
    oversized = _json({"input": "x" * (MAX_BODY_BYTES + MAX_BODY_BYTES // 4), "model": MODEL})
    n = range(24)

    def openai_image(value: str) -> bytes:
        return _json({"input": value, "model": MODEL, "modality": "image"})

    # Weaviate's containers answer bad input with 500 {"error"}: that contract's 4xx.
    weaviate_bad = (500,)
    return [
        Kind("OpenAI texts", 20, tuple(openai_text(i) for i in n)),
        Kind(
            "OpenAI image, base64", 9, tuple(Call("/v1/embeddings", openai_image(s)) for s in b64)
        ),
        Kind(
            "OpenAI image, data URL",
            8,
            tuple(Call("/v1/embeddings", _json({"input": [u], "model": MODEL})) for u in urls),
        ),
        Kind("native multipart upload", 8, tuple(upload(i) for i in n)),
        Kind(
            "native JSON, a bad item between two",
            3,
            tuple(
                Call("/api/embed/images", _json({"images": [s, bad_b64, s], "model": MODEL}))
                for s in b64
            ),
        ),
        Kind(
            "TEI /embed",
            15,
            tuple(
                Call("/embed", _json({"inputs": texts(1)[0] if i % 2 else texts(1 + i % 6)}))
                for i in n
            ),
        ),
        Kind(
            "Weaviate /vectorize",
            12,
            tuple(
                Call(
                    "/vectorize",
                    _json({"texts": texts(i % 3), "images": [b64[i % len(b64)]] * (1 + i % 2)}),
                )
                for i in n
            ),
        ),
        Kind(
            "bad: malformed JSON",
            4,
            (
                Call("/v1/embeddings", b'{"input": ["a dog", "model": "clip"', expect=(422,)),
                Call("/embed", b'{"inputs": "unterminated', expect=(422,)),
                Call("/vectorize", b"not json at all", expect=weaviate_bad),
                Call("/v1/embeddings", b'{"input": 12, "model": "clip"}', expect=(422,)),
            ),
        ),
        Kind(
            "bad: invalid base64",
            4,
            (
                Call("/v1/embeddings", openai_image(bad_b64), expect=(422,)),
                Call("/vectorize", _json({"images": [bad_b64]}), expect=weaviate_bad),
                Call("/v1/embeddings", openai_image("data:image/jpeg;base64,@@@@"), expect=(422,)),
            ),
        ),
        Kind(
            "bad: truncated JPEG",
            4,
            (
                Call("/v1/embeddings", openai_image(truncated), expect=(422,)),
                Call("/vectorize", _json({"images": [truncated]}), expect=weaviate_bad),
                # The native routes answer 200 with the item's row null and its reason.
                Call(
                    "/api/embed/images/upload",
                    files=(("cut.jpg", jpeg[: len(jpeg) // 3], "image/jpeg"),),
                ),
            ),
        ),
        Kind(
            "bad: body over the limit",
            0.5,
            (
                Call("/v1/embeddings", oversized, expect=(413,)),
                Call("/embed", oversized, chunked=True, expect=(413,)),
            ),
        ),
        Kind(
            "bad: unknown model",
            3,
            (
                Call("/v1/embeddings", _json({"input": "a dog", "model": "nope"}), expect=(404,)),
                Call("/embed", _json({"inputs": "a dog", "model": "nope"}), expect=(404,)),
                Call(
                    "/api/embed/images", _json({"images": [b64[0]], "model": "nope"}), expect=(404,)
                ),
            ),
        ),
        Kind(
            "bad: empty input",
            2,
            (
                Call("/v1/embeddings", _json({"input": [], "model": MODEL}), expect=(422,)),
                Call("/v1/embeddings", openai_image(""), expect=(422,)),
                Call("/embed", _json({"inputs": ""}), expect=(400,)),
            ),
        ),
        Kind(
            "bad: unknown route",
            1,
            tuple(Call(f"/v1/nothing/{i}", _json({"input": "x"}), expect=(404,)) for i in n),
        ),
        Kind(
            "health and metrics", 2, (Call("/health", method="GET"), Call("/metrics", method="GET"))
        ),
    ]


def schedule(kinds: list[Kind], count: int, seed: int) -> list[tuple[int, int]]:
    """(kind, call) per request: a seeded draw by weight."""
    rng = np.random.default_rng(seed)
    weights = np.array([k.weight for k in kinds])
    chosen = rng.choice(len(kinds), size=count, p=weights / weights.sum())
    return [(int(k), int(rng.integers(len(kinds[k].calls)))) for k in chosen]


# ---------------------------------------------------------------- clients


@dataclass
class Tally:
    by_kind: dict[str, collections.Counter[str]] = field(default_factory=dict)
    interval: collections.Counter[str] = field(default_factory=collections.Counter)
    unexpected: int = 0
    first_unexpected: str | None = None
    broken_after_s: list[float] = field(default_factory=list)  # broken connections

    def count(self, kind: Kind, call: Call, outcome: str, answer: bytes, seconds: float) -> None:
        if outcome.startswith("error"):
            self.broken_after_s.append(seconds)
        self.by_kind.setdefault(kind.name, collections.Counter())[outcome] += 1
        self.interval[outcome] += 1
        if outcome not in ("429", *map(str, call.expect)):
            self.unexpected += 1
            if self.first_unexpected is None:
                self.first_unexpected = f"{kind.name}: {outcome} {answer[:300]!r}"

    def totals(self) -> collections.Counter[str]:
        out: collections.Counter[str] = collections.Counter()
        for counts in self.by_kind.values():
            out.update(counts)
        return out


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 256 * 1024):
        yield body[start : start + 256 * 1024]


async def send(client: httpx.AsyncClient, call: Call) -> tuple[str, bytes]:
    try:
        if call.method == "GET":
            response = await client.get(call.path)
        elif call.files:
            files = [("files", f) for f in call.files]
            response = await client.post(call.path, files=files, data={"model": MODEL})
        else:
            content: bytes | AsyncIterator[bytes] = (
                _chunks(call.content or b"") if call.chunked else call.content or b""
            )
            headers = {"content-type": call.content_type}
            response = await client.post(call.path, content=content, headers=headers)
    except httpx.HTTPError as exc:
        return f"error: {type(exc).__name__}", repr(exc).encode()
    return str(response.status_code), response.content


async def drive(
    url: str, kinds: list[Kind], plan: Iterator[tuple[int, int]], clients: int, tally: Tally
) -> None:
    """`clients` loops on keep-alive connections, until `plan` runs out."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120.0) as client:

        async def loop() -> None:
            for kind_index, call_index in plan:
                kind = kinds[kind_index]
                call = kind.calls[call_index]
                start = time.perf_counter()
                outcome, answer = await send(client, call)
                tally.count(kind, call, outcome, answer, time.perf_counter() - start)

        await asyncio.gather(*(loop() for _ in range(clients)))


# ----------------------------------------------------------------- memory


@dataclass(frozen=True)
class AnonMemory:
    """Resident anonymous memory by what mapped it (from /proc/<pid>/smaps)."""

    brk_heap_mib: float  # [heap]: malloc's main arena
    arena_heaps: int  # 64 MiB-aligned heaps: glibc's other arenas, one or more per thread
    arena_mib: float
    other_mib: float  # other anonymous mappings: large blocks malloc mmaps, ORT's arena...


@dataclass(frozen=True)
class Sample:
    requests: int
    seconds: float  # since the first request
    rss_mib: float
    anon_mib: float
    pss_mib: float
    threads: int
    anon: AnonMemory
    statuses: dict[str, int]  # answers since the last sample


def _kib_fields(path: Path, names: tuple[str, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in path.read_text().splitlines():
        name, _, value = line.partition(":")
        if name in names:
            parts = value.split()
            out[name] = int(parts[0]) / 1024 if parts[-1:] == ["kB"] else int(parts[0])
    return out


_MAPPING = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$")


def anon_memory(pid: int) -> AnonMemory:
    # (start, end, path, resident KiB) per mapping
    mappings: list[tuple[int, int, str, int]] = []
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if match := _MAPPING.match(line):
            start, end = int(match[1], 16), int(match[2], 16)
            mappings.append((start, end, match[3], 0))
        elif line.startswith("Rss:") and mappings:
            start, end, path, _ = mappings[-1]
            mappings[-1] = (start, end, path, int(line.split()[1]))
    brk = arenas = other = 0
    heaps = 0
    for i, (start, end, path, rss) in enumerate(mappings):
        if path == "[heap]":
            brk += rss
        if path:
            continue
        # A heap is mapped whole (64 MiB, aligned) and made readable as it grows: its used
        # part and the reserved rest are adjacent mappings.
        span = end - start
        if start % HEAP_BYTES == 0 and span < HEAP_BYTES and i + 1 < len(mappings):
            after = mappings[i + 1]
            span += after[1] - after[0] if after[0] == end and not after[2] else 0
        if start % HEAP_BYTES == 0 and span == HEAP_BYTES:
            heaps += 1
            arenas += rss
        else:
            other += rss
    return AnonMemory(brk / 1024, heaps, arenas / 1024, other / 1024)


def sample(pid: int, requests: int, seconds: float, statuses: dict[str, int]) -> Sample:
    status = _kib_fields(Path(f"/proc/{pid}/status"), ("VmRSS", "RssAnon", "Threads"))
    rollup = _kib_fields(Path(f"/proc/{pid}/smaps_rollup"), ("Pss",))
    return Sample(
        requests,
        seconds,
        status["VmRSS"],
        status["RssAnon"],
        rollup["Pss"],
        int(status["Threads"]),
        anon_memory(pid),
        statuses,
    )


# -------------------------------------------------------------- tracemalloc


def tracemalloc_snapshot(pid: int, out: Path, index: int) -> tracemalloc.Snapshot:
    os.kill(pid, signal.SIGUSR1)
    path = Path(f"{out}.{index}")
    deadline = time.monotonic() + 120
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server wrote no tracemalloc snapshot to {path}")
        time.sleep(0.2)
    return tracemalloc.Snapshot.load(str(path))


def print_growth(first: tracemalloc.Snapshot, last: tracemalloc.Snapshot, top: int = 15) -> None:
    stats = last.compare_to(first, "traceback")
    total = sum(s.size_diff for s in stats)
    print(f"\nPython allocations, end vs the first mark: {total / MIB:+.1f} MiB; the largest:")
    for stat in stats[:top]:
        print(f"  {stat.size_diff / 1024:+9.0f} KiB {stat.count_diff:+7d} blocks")
        for line in stat.traceback.format()[-6:]:
            print(f"      {line}")


# ----------------------------------------------------------------- report


def table(samples: list[Sample], mark: Sample | None) -> list[str]:
    versus = f"vs {mark.requests:,}" if mark else "vs the mark"
    lines = [
        f"| requests | req/s | RSS MiB | {versus} | PSS MiB | [heap] MiB | arenas MiB (heaps) "
        "| other anon MiB | threads | answers since the last row |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    previous: Sample | None = None
    for s in samples:
        rate = "-"
        if previous is not None and s.seconds > previous.seconds:
            rate = f"{(s.requests - previous.requests) / (s.seconds - previous.seconds):.0f}"
        growth = f"{100 * (s.rss_mib / mark.rss_mib - 1):+.1f}%" if mark else "-"
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(s.statuses.items())) or "-"
        a = s.anon
        lines.append(
            f"| {s.requests:,} | {rate} | {s.rss_mib:.1f} | {growth} | {s.pss_mib:.1f} "
            f"| {a.brk_heap_mib:.1f} | {a.arena_mib:.1f} ({a.arena_heaps}) | {a.other_mib:.1f} "
            f"| {s.threads} | {answers} |"
        )
        previous = s
    return lines


def kinds_table(kinds: list[Kind], tally: Tally) -> list[str]:
    lines = ["| request | expected | answers |", "|---|---|---|"]
    for kind in kinds:
        counts = tally.by_kind.get(kind.name, collections.Counter())
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        expected = ", ".join(map(str, kind.expected))
        lines.append(f"| {kind.name} | {expected} | {answers} |")
    return lines


def summary(samples: list[Sample], every: int) -> dict[str, Any]:
    marked = [s for s in samples if s.requests >= every]
    mark, end = (marked[0], samples[-1]) if marked else (None, samples[-1])
    growth = end.rss_mib / mark.rss_mib if mark else None
    return {
        "mark": mark,
        "end": end,
        "growth": growth,
        "met": growth is not None and growth <= TARGET_GROWTH,
    }


def write_json(path: Path, args: argparse.Namespace, samples: list[Sample], tally: Tally) -> None:
    result = summary(samples, args.every)
    mark, end, growth = result["mark"], result["end"], result["growth"]
    measured = (
        f"end RSS {end.rss_mib:.0f} MiB = {100 * (growth - 1):+.1f}% of {mark.rss_mib:.0f} MiB "
        f"after {mark.requests:,} requests ({end.requests:,} in all)"
        if growth is not None
        else "run too short for the first mark"
    )
    document = {
        "name": "soak: RSS over mixed requests",
        "measured": measured,
        "target": f"end RSS <= {TARGET_GROWTH:.2f} x RSS after the first {args.every:,}",
        "met": result["met"],
        "details": {
            "requests": end.requests,
            "growth_ratio": growth,
            "rss_mib_start": samples[0].rss_mib,
            "rss_mib_mark": mark.rss_mib if mark else None,
            "rss_mib_end": end.rss_mib,
            "seconds": end.seconds,
            "model": args.model,
            "precision": args.precision,
            "clients": args.clients,
            "server_env": args.env,
            "statuses": dict(tally.totals()),
            "by_request": {name: dict(counts) for name, counts in tally.by_kind.items()},
            "unexpected": tally.unexpected,
            "first_unexpected": tally.first_unexpected,
            "broken_after_s": tally.broken_after_s,
            "samples": [dataclasses.asdict(s) for s in samples],
        },
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


# -------------------------------------------------------------------- run


def server_env(work: Path, extra: list[str]) -> dict[str, str]:
    env = dict(os.environ, HANDSPRING_CACHE=str(work / "cache"), HF_HUB_OFFLINE="1")
    for item in extra:
        name, _, value = item.partition("=")
        if value:
            env[name] = value
        else:  # NAME= : unset in the server, to compare with a default the server sets
            env.pop(name, None)
    return env


def run(args: argparse.Namespace, work: Path) -> tuple[list[Kind], list[Sample], Tally]:
    build_env = server_env(work, [])
    model = prepare_model(work, args.model, args.precision, build_env)
    env = server_env(work, args.env)
    serve = ["serve", "--model", f"{MODEL}={model}:{args.precision}", "--preload"]
    serve += ["--max-body-bytes", str(MAX_BODY_BYTES), "--log-level", "warning", *args.server_arg]
    trace_out = work / "tracemalloc.snapshot"
    if args.tracemalloc:
        env |= {
            "SOAK_TRACEMALLOC_FRAMES": str(args.tracemalloc),
            "SOAK_TRACEMALLOC_OUT": str(trace_out),
        }
        argv = [sys.executable, "-c", TRACEMALLOC_BOOTSTRAP, *serve]
    else:
        argv = [str(Path(sys.executable).parent / "handspring"), *serve]
    server = Server("handspring", "CLIP", argv, env, work / "server.log")
    kinds = request_kinds(np.random.default_rng(args.seed))
    plan = schedule(kinds, args.requests, args.seed)
    print(f"starting the server (log: {server.log}) ...", file=sys.stderr)
    server.start()
    assert server.process is not None
    pid = server.process.pid
    tally = Tally()
    samples = [sample(pid, 0, 0.0, {})]
    snapshots: list[tracemalloc.Snapshot] = []
    start = time.perf_counter()
    try:
        for begin in range(0, args.requests, args.every):
            chunk = iter(plan[begin : begin + args.every])
            asyncio.run(drive(server.url, kinds, chunk, args.clients, tally))
            done = min(begin + args.every, args.requests)
            samples.append(sample(pid, done, time.perf_counter() - start, dict(tally.interval)))
            tally.interval.clear()
            print("\n".join(table(samples, None)[-1:]), file=sys.stderr)
            if args.tracemalloc and (begin == 0 or done == args.requests):
                snapshots.append(tracemalloc_snapshot(pid, trace_out, len(snapshots)))
    finally:
        server.stop()
    if len(snapshots) == 2:
        print_growth(*snapshots)
    return kinds, samples, tally


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=10_000, help="requests between samples")
    parser.add_argument("--clients", type=int, default=6, help="concurrent connections")
    parser.add_argument(
        "--model",
        default="mid",
        choices=["mid", "b32", "tiny"],
        help="mid: ViT-B/32 at half width and depth (224 px, 77 tokens); b32: full size",
    )
    parser.add_argument("--precision", default="int8", choices=["int8", "fp32"])
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set (NAME=VALUE) or unset (NAME=) a variable in the server's environment",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="one more `serve` argument, e.g. --server-arg=--no-spinning",
    )
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="FRAMES",
        help="trace the server's Python allocations; print what grew after the first mark",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="keep the model and graphs here")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        kinds, samples, tally = run(args, work)
    result = summary(samples, args.every)
    print(
        f"\nCLIP {args.model} (random weights, {args.precision}); {args.clients} clients on "
        f"keep-alive connections; {os.cpu_count()} CPUs shared with the rest of the machine; "
        f"server environment: {', '.join(args.env) or 'as inherited'}.\n"
    )
    print("\n".join(table(samples, result["mark"])))
    print()
    print("\n".join(kinds_table(kinds, tally)))
    if result["growth"] is not None:
        verdict = "met" if result["met"] else "NOT met"
        print(
            f"\nend RSS / RSS after {result['mark'].requests:,}: {result['growth']:.3f} "
            f"(target <= {TARGET_GROWTH:.2f}): {verdict}"
        )
    if tally.unexpected:
        print(f"{tally.unexpected} unexpected answers; the first: {tally.first_unexpected}")
    if tally.broken_after_s:
        after = ", ".join(f"{s:.2f}" for s in sorted(tally.broken_after_s))
        print(f"connections broken after (s): {after}")
    if args.json:
        write_json(args.json, args, samples, tally)


if __name__ == "__main__":
    main()
