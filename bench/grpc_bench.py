"""gRPC against HTTP on one `handspring serve --grpc-port`, for the same load.

The server runs as its own process on loopback with one CLIP model. One client process
drives it with 1, 8 and 32 concurrent clients, one item per request, each client looping
for a fixed time: over HTTP, the OpenAI route (`POST /v1/embeddings`, a text, or a JPEG as
base64 with `"modality": "image"`) on keep-alive HTTP/1.1 connections (h11, as
server_bench.py drives it); over gRPC, `inference.GRPCInferenceService/ModelInfer` with
the item as raw BYTES (as Triton's clients send it) on one grpc.aio channel. HTTP and gRPC
cells alternate per concurrency. Printed: items/s, p50 and p99 latency for each, and the
ratios gRPC / HTTP (items/s above 1 and latency below 1 favour gRPC).

Models: `b32` (default), a random-weight full-size ViT-B/32 CLIP in transformers' layout
(int8, the server's default), texts being search queries and images 640x480 JPEGs; or
`tiny`, the test suite's tiny CLIP, where the engine costs next to nothing and what is
left is each protocol's own cost.

    python bench/grpc_bench.py                      # ViT-B/32, 4 s per cell
    python bench/grpc_bench.py --model tiny --seconds 2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import h11
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from server_bench import QUERIES, Connection, build_graphs, photos_base64  # noqa: E402

from handspring.server.grpc.generated import grpc_predict_v2_pb2 as pb  # noqa: E402
from handspring.server.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc  # noqa: E402
from tests.support.live_server import free_port  # noqa: E402

CONCURRENCY = (1, 8, 32)
MODEL = "clip"

Send = Callable[[int], Awaitable[bool]]  # request number -> answered with success


@dataclass
class Cell:
    kind: str  # "text" or "image"
    protocol: str  # "HTTP" or "gRPC"
    clients: int
    done: int
    errors: int
    seconds: float
    latencies_ms: np.ndarray

    @property
    def items_per_s(self) -> float:
        return self.done / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))


# ------------------------------------------------------------------ clients


def http_bodies(kind: str, photos: list[str]) -> list[bytes]:
    if kind == "text":
        return [json.dumps({"input": q, "model": MODEL}).encode() for q in QUERIES]
    return [json.dumps({"input": p, "model": MODEL, "modality": "image"}).encode() for p in photos]


def grpc_requests(kind: str, photos: list[str]) -> list[pb.ModelInferRequest]:
    items = (
        [q.encode() for q in QUERIES] if kind == "text" else [base64.b64decode(p) for p in photos]
    )
    requests = []
    for item in items:
        tensor = pb.ModelInferRequest.InferInputTensor(name=kind, datatype="BYTES", shape=[1])
        raw = len(item).to_bytes(4, "little") + item
        requests.append(
            pb.ModelInferRequest(model_name=MODEL, inputs=[tensor], raw_input_contents=[raw])
        )
    return requests


async def drive(make_sender: Callable[[], Awaitable[tuple[Send, Callable]]], clients: int,
                seconds: float) -> tuple[int, int, float, list[float]]:  # fmt: skip
    """`clients` loops sending one request after another until the deadline."""
    latencies: list[float] = []
    counts = {"done": 0, "errors": 0, "first": None}
    deadline = time.perf_counter() + seconds

    async def loop(offset: int) -> None:
        send, close = await make_sender()
        n = offset
        try:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                ok = await send(n)
                latencies.append(time.perf_counter() - start)
                counts["done" if ok else "errors"] += 1
                n += 1
        finally:
            await close()

    start = time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(clients)))
    return counts["done"], counts["errors"], time.perf_counter() - start, latencies


def http_sender(port: int, bodies: list[bytes]) -> Callable[[], Awaitable[tuple[Send, Callable]]]:
    async def make() -> tuple[Send, Callable]:
        connection = Connection(port)

        async def send(n: int) -> bool:
            try:
                status, _ = await connection.post("/v1/embeddings", bodies[n % len(bodies)],
                                                  "application/json")  # fmt: skip
            except (OSError, h11.ProtocolError):
                await connection.close()
                return False
            return status == 200

        return send, connection.close

    return make


def grpc_sender(
    stub: pb_grpc.GRPCInferenceServiceStub, requests: list[pb.ModelInferRequest]
) -> Callable[[], Awaitable[tuple[Send, Callable]]]:
    async def make() -> tuple[Send, Callable]:
        async def send(n: int) -> bool:
            try:
                await stub.ModelInfer(requests[n % len(requests)])
            except grpc.aio.AioRpcError:
                return False
            return True

        async def close() -> None:
            return None

        return send, close

    return make


async def measure(port: int, grpc_port: int, kind: str, photos: list[str], seconds: float,
                  warmup: float) -> list[Cell]:  # fmt: skip
    bodies, requests = http_bodies(kind, photos), grpc_requests(kind, photos)
    cells = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        senders = {"HTTP": http_sender(port, bodies), "gRPC": grpc_sender(stub, requests)}
        for clients in CONCURRENCY:
            for protocol, make in senders.items():
                await drive(make, clients, warmup)
                done, errors, elapsed, latencies = await drive(make, clients, seconds)
                if errors:
                    print(f"  {protocol} {kind} x{clients}: {errors} errors", file=sys.stderr)
                cell = Cell(kind, protocol, clients, done, errors, elapsed,
                            1000 * np.asarray(latencies))  # fmt: skip
                print(
                    f"  {kind:5} {protocol:4} x{clients:<2}: {cell.items_per_s:7.1f} items/s, "
                    f"p50 {cell.percentile(50):7.1f} ms, p99 {cell.percentile(99):7.1f} ms",
                    file=sys.stderr,
                )
                cells.append(cell)
    return cells


# ------------------------------------------------------------------- server


def start_server(source: Path, precision: str, env: dict[str, str], log: Path) -> tuple[
    subprocess.Popen, int, int
]:  # fmt: skip
    port, grpc_port = free_port(), free_port()
    cli = str(Path(sys.executable).parent / "handspring")
    argv = [cli, "serve", "--model", f"{MODEL}={source}:{precision}", "--preload",
            "--port", str(port), "--grpc-port", str(grpc_port), "--log-level", "warning"]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                return process, port, grpc_port
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError("the server did not become ready")


def table(cells: list[Cell]) -> list[str]:
    rows = [
        "| input | clients | HTTP items/s | gRPC items/s | HTTP p50 ms | gRPC p50 ms "
        "| HTTP p99 ms | gRPC p99 ms | items/s gRPC/HTTP | p50 gRPC/HTTP | p99 gRPC/HTTP |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_key = {(c.kind, c.protocol, c.clients): c for c in cells}
    for kind in ("text", "image"):
        for clients in CONCURRENCY:
            http, rpc = by_key.get((kind, "HTTP", clients)), by_key.get((kind, "gRPC", clients))
            if http is None or rpc is None:
                continue
            rows.append(
                f"| {kind} | {clients} | {http.items_per_s:.1f} | {rpc.items_per_s:.1f} "
                f"| {http.percentile(50):.1f} | {rpc.percentile(50):.1f} "
                f"| {http.percentile(99):.1f} | {rpc.percentile(99):.1f} "
                f"| {rpc.items_per_s / http.items_per_s:.2f}x "
                f"| {rpc.percentile(50) / http.percentile(50):.2f}x "
                f"| {rpc.percentile(99) / http.percentile(99):.2f}x |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["b32", "tiny"], default="b32")
    parser.add_argument("--precision", choices=["int8", "fp32"], default="int8")
    parser.add_argument("--seconds", type=float, default=4.0, help="per text cell")
    parser.add_argument("--image-seconds", type=float, default=6.0, help="per image cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each cell")
    args = parser.parse_args()
    from tests.support.checkpoints import TINY, VIT_B32, write_hf_clip

    with tempfile.TemporaryDirectory(prefix="grpc-bench-") as tmp:
        work = Path(tmp)
        env = dict(os.environ, HANDSPRING_CACHE=str(work / "cache"), HF_HUB_OFFLINE="1")
        config = VIT_B32 if args.model == "b32" else TINY
        source = write_hf_clip(work / "clip", config, seed=0)
        seconds, _ = build_graphs(str(source), args.precision, env)
        print(f"graphs built in {seconds:.0f} s", file=sys.stderr)
        process, port, grpc_port = start_server(source, args.precision, env, work / "server.log")
        try:
            photos = photos_base64()
            cells = asyncio.run(measure(port, grpc_port, "text", photos, args.seconds, args.warmup))
            cells += asyncio.run(
                measure(port, grpc_port, "image", photos, args.image_seconds, args.warmup)
            )
        finally:
            process.terminate()
            process.wait(timeout=60)
    name = "random ViT-B/32" if args.model == "b32" else "tiny random CLIP"
    print(f"\ngRPC (ModelInfer, raw BYTES) vs HTTP (OpenAI /v1/embeddings), {name}, "
          f"{args.precision}, one item per request:\n")  # fmt: skip
    print("\n".join(table(cells)))


if __name__ == "__main__":
    main()
