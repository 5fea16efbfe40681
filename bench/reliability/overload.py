"""Overload: what `handspring serve` does with more images than it can embed, with and
without load shedding, in one run.

A server process hosts a full-size random-weight CLIP ViT-B/32 (int8) and is sent one
640x480 JPEG per request, as base64, on the OpenAI route. First its capacity is measured
with closed-loop clients (each sends its next request when the last is answered); then
requests arrive open-loop (Poisson, whatever the server answers) at 2x and 10x that rate
for a fixed time, and every request is waited for (up to 75 s after the last arrival).
Each configuration runs in a server of its own, its rows in the order of `--factors`.
Per server and load, one row:

- useful: requests answered 200 within the latency budget, per second of arrivals, as a
  share of capacity (a late answer is no use to a client that has given up);
- 200 and 429 latency, p50 and p99, from each request's scheduled arrival (so a client
  that falls behind shows as latency, not as a lower rate);
- shed: the share of requests answered 429; failed: any other answer, a broken
  connection, or no answer within those 75 s;
- others' CPU: what the rest of the machine used meanwhile (the client runs on the same
  cores; a busy machine shows here).

Servers: the old behaviour (`--max-queue-ms 0`, with `--max-queue 128` and with the default
1024), and the new default (admission control with `--max-queue-ms`, the budget).

With `--pin`, the server runs on one CPU and this client on another (sched_setaffinity,
for both the capacity and the open-loop rows): a 10x load is hundreds of requests a
second, each costing the client about as much CPU as the server spends refusing it, so on
shared cores the client takes cores from the server it measures and its own lag shows as
429 latency. Pinned, the capacity is one CPU's; the header says which way a run was made.
Report both: pinned figures alone would hide what a client on the same machine costs.

    python bench/reliability/overload.py                    # the full run, 5-6 minutes
    python bench/reliability/overload.py --pin              # server and client on a CPU each
    python bench/reliability/overload.py --seconds 4 --capacity-seconds 4   # a quick look
    python bench/reliability/overload.py --servers new      # the admission-controlled one only
    python bench/reliability/overload.py --work /tmp/overload   # keep the model and graphs

Needs the test extra (torch writes the random checkpoint).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import h11
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.server_bench import (  # noqa: E402
    Connection,
    Route,
    Server,
    _drive,
    build_graphs,
    machine_busy_seconds,
    only,
    openai_image_route,
    photos_base64,
)

# uvicorn closes a connection idle this long (its default keep-alive is 5 s).
IDLE_CONNECTION_S = 4.0
CAPACITY_CLIENTS = 64  # two batches' worth: one runs while the next is read and decoded
WARMUP_CLIENTS = 32
# Every request is waited for up to the server's own request timeout, and a little more.
DRAIN_S = 75.0


@dataclass(frozen=True)
class Config:
    key: str  # for --servers
    label: str
    flags: tuple[str, ...]
    rows: bool = True  # False: started only to measure the capacity


@dataclass(frozen=True)
class Pinning:
    """Which CPUs the server and this client run on; None: wherever the kernel puts them."""

    server: int | None = None
    client: int | None = None

    @classmethod
    def split(cls) -> Pinning:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            sys.exit(f"--pin needs two CPUs; this process may use {len(cpus)}")
        return cls(server=cpus[0], client=cpus[1])

    def server_argv(self, argv: list[str]) -> list[str]:
        # Pinned before it starts: ONNX Runtime sizes its thread pool from the affinity.
        return argv if self.server is None else ["taskset", "-c", str(self.server), *argv]

    def pin_client(self) -> None:
        if self.client is not None:
            os.sched_setaffinity(0, {self.client})

    def describe(self) -> str:
        if self.server is None:
            return (
                f"{os.cpu_count()} CPUs shared by the server, the client and the rest of the "
                "machine"
            )
        return (
            f"pinned: the server on CPU {self.server}, the client on CPU {self.client} "
            f"(of {os.cpu_count()}; the rest of the machine may use either)"
        )


@dataclass
class Phase:
    """The answers to one open-loop run."""

    server: str
    factor: float
    offered: float  # requests per second sent
    capacity: float
    seconds: float
    budget_s: float
    latencies: dict[int, list[float]] = field(default_factory=dict)  # status -> seconds
    failed: int = 0
    first_failure: str | None = None
    others_cpu: float = 0.0  # cores

    @property
    def sent(self) -> int:
        return sum(map(len, self.latencies.values())) + self.failed

    def useful_share(self) -> float:
        within = sum(1 for s in self.latencies.get(200, []) if s <= self.budget_s)
        return within / self.seconds / self.capacity

    def percentiles_ms(self, status: int) -> str:
        values = self.latencies.get(status)
        if not values:
            return "-"
        p50, p99 = np.percentile(1000 * np.asarray(values), [50, 99])
        return f"{p50:.0f} / {p99:.0f}"

    def share(self, status: int) -> float:
        return len(self.latencies.get(status, [])) / max(self.sent, 1)


class ConnectionPool:
    """Keep-alive connections for an open-loop client: an arrival takes the most recently
    used idle one, or opens one, so the pool grows to what the server holds in flight."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._idle: list[tuple[Connection, float]] = []

    async def take(self) -> Connection:
        while self._idle:
            connection, used = self._idle.pop()
            if time.perf_counter() - used < IDLE_CONNECTION_S:
                return connection
            await connection.close()
        return Connection(self.port)

    def give(self, connection: Connection) -> None:
        self._idle.append((connection, time.perf_counter()))

    async def close(self) -> None:
        while self._idle:
            await self._idle.pop()[0].close()


async def open_loop(
    port: int, route: Route, rate: float, seconds: float, phase: Phase, seed: int
) -> None:
    """Poisson arrivals at `rate` for `seconds`; waits for every answer (up to DRAIN_S)."""
    rng = np.random.default_rng(seed)
    bodies = itertools.cycle(route.bodies)
    pool = ConnectionPool(port)

    async def one(scheduled: float, body: bytes) -> None:
        connection = await pool.take()
        try:
            status, answer = await connection.post(route.path, body, route.content_type)
        except (OSError, h11.ProtocolError) as exc:
            await connection.close()
            phase.failed += 1
            phase.first_failure = phase.first_failure or repr(exc)
            return
        except asyncio.CancelledError:  # never answered: counted by the caller
            await connection.close()
            raise
        pool.give(connection)
        latency = time.perf_counter() - scheduled
        if status in (200, 429):
            phase.latencies.setdefault(status, []).append(latency)
        else:
            phase.failed += 1
            phase.first_failure = phase.first_failure or f"{status} {answer[:200]!r}"

    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    at = rng.exponential(1 / rate)
    while at < seconds:
        delay = start + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.add(asyncio.create_task(one(start + at, next(bodies))))
        at += rng.exponential(1 / rate)
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=DRAIN_S)
        for task in pending:
            task.cancel()
        phase.failed += len(pending)
        if pending:
            phase.first_failure = phase.first_failure or f"{len(pending)} never answered"
    await pool.close()


def closed_loop_rate(server: Server, route: Route, clients: int, seconds: float) -> float:
    """Requests answered 200 per second by `clients` closed-loop clients."""
    start = time.perf_counter()
    out = asyncio.run(_drive(server.port, only(route), clients, start + seconds))
    elapsed = time.perf_counter() - start
    if out.errors:
        print(f"    {out.errors} errors, the first: {out.first_error}", file=sys.stderr)
    return (out.sent - out.errors) / elapsed


def run_phase(
    server: Server, route: Route, factor: float, capacity: float, args: argparse.Namespace
) -> Phase:
    rate = factor * capacity
    phase = Phase(server.engine, factor, rate, capacity, args.seconds, args.budget_ms / 1000)
    print(f"  {factor:g}x: {rate:.0f} requests/s for {args.seconds:g} s ...", file=sys.stderr)
    server_cpu, client_cpu, busy = server.cpu_seconds(), time.process_time(), machine_busy_seconds()
    start = time.perf_counter()
    asyncio.run(open_loop(server.port, route, rate, args.seconds, phase, seed=int(factor * 100)))
    elapsed = time.perf_counter() - start
    server_cpu = server.cpu_seconds() - server_cpu
    client_cpu = time.process_time() - client_cpu
    phase.others_cpu = max(machine_busy_seconds() - busy - server_cpu - client_cpu, 0) / elapsed
    if phase.failed:
        print(f"    {phase.failed} failed, the first: {phase.first_failure}", file=sys.stderr)
    return phase


def prepare_model(work: Path, precision: str, env: dict[str, str]) -> Path:
    from tests.support.checkpoints import VIT_B32, write_sentence_transformers_clip

    folder = work / "clip-vit-b-32"
    if not (folder / "modules.json").exists():
        print("writing a random-weight ViT-B/32 ...", file=sys.stderr)
        write_sentence_transformers_clip(folder, VIT_B32, seed=0)
    print(f"building its {precision} graphs ...", file=sys.stderr)
    build_graphs(str(folder), precision, env)
    return folder


def configs(budget_ms: float) -> list[Config]:
    return [
        Config("old128", "old: --max-queue 128", ("--max-queue-ms", "0", "--max-queue", "128")),
        Config("old1024", "old: --max-queue 1024 (default)", ("--max-queue-ms", "0")),
        Config(
            "new",
            f"new default: --max-queue-ms {budget_ms:g}",
            ("--max-queue-ms", f"{budget_ms:g}"),
        ),
    ]


def report(phases: list[Phase], args: argparse.Namespace, pinning: Pinning) -> None:
    budget = f"{args.budget_ms:g} ms"
    print(
        f"CLIP ViT-B/32 (random weights, {args.precision}), one 640x480 JPEG (base64) per "
        f"request on POST /v1/embeddings; {pinning.describe()}. Capacity: "
        f"{CAPACITY_CLIENTS} closed-loop "
        f"clients for {args.capacity_seconds:g} s. Open-loop Poisson arrivals for "
        f"{args.seconds:g} s per row; every request waited for. Useful: 200s within "
        f"{budget}.\n"
    )
    print(
        f"| server | offered | capacity | useful (200 within {budget}) | 200 p50 / p99 ms "
        "| 429 p50 / p99 ms | shed | failed | others' CPU |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in phases:
        print(
            f"| {p.server} | {p.factor:g}x = {p.offered:.0f}/s | {p.capacity:.1f}/s "
            f"| {100 * p.useful_share():.0f}% | {p.percentiles_ms(200)} "
            f"| {p.percentiles_ms(429)} | {100 * p.share(429):.0f}% | {p.failed} "
            f"| {p.others_cpu:.2f} cores |"
        )


def raise_open_files_limit() -> None:
    # The old behaviour holds a connection per queued request: a thousand and more. The
    # server inherits the limit.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="of arrivals per row")
    parser.add_argument("--capacity-seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds, closed-loop")
    parser.add_argument("--factors", default="2,10", help="offered load, x capacity")
    parser.add_argument("--budget-ms", type=float, default=1000.0, help="the latency budget")
    parser.add_argument("--precision", default="int8", choices=["int8", "fp32"])
    parser.add_argument("--work", type=Path, help="keep the model and graphs here")
    parser.add_argument(
        "--pin", action="store_true", help="the server on one CPU, this client on another"
    )
    parser.add_argument(
        "--servers", default="old128,old1024,new", help="which of old128, old1024, new, in order"
    )
    args = parser.parse_args()
    raise_open_files_limit()
    factors = [float(f) for f in args.factors.split(",")]
    known = {c.key: c for c in configs(args.budget_ms)}
    chosen = [known[k] for k in args.servers.split(",") if k in known]
    if not chosen or len(chosen) != len(args.servers.split(",")):
        parser.error(f"--servers: a comma-separated list of {', '.join(known)}")
    pinning = Pinning.split() if args.pin else Pinning()
    with tempfile.TemporaryDirectory(prefix="overload-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, HANDSPRING_CACHE=str(work / "cache"), HF_HUB_OFFLINE="1")
        model = prepare_model(work, args.precision, env)
        pinning.pin_client()  # after the model is written and built, on every CPU
        route = openai_image_route(photos_base64(), "clip")
        cli = str(Path(sys.executable).parent / "handspring")
        phases: list[Phase] = []
        capacity: float | None = None
        # Capacity is measured where nothing is shed: on an old server, run first (its own
        # when --servers leaves them out).
        if chosen[0].key == "new":
            chosen = [replace(known["old1024"], rows=False), *chosen]
        for index, config in enumerate(chosen):
            argv = [cli, "serve", "--model", f"clip={model}:{args.precision}", "--preload"]
            argv += ["--graceful-timeout", "1"]  # a backlog left after a row is not waited for
            argv = pinning.server_argv([*argv, *config.flags])
            log = work / f"server-{index}.log"
            server = Server(config.label, "CLIP", argv, env, log)
            print(f"starting {config.label} ...", file=sys.stderr)
            server.start()
            try:
                closed_loop_rate(server, route, WARMUP_CLIENTS, args.warmup)
                if capacity is None:
                    capacity = closed_loop_rate(
                        server, route, CAPACITY_CLIENTS, args.capacity_seconds
                    )
                    print(f"  capacity: {capacity:.1f} requests/s", file=sys.stderr)
                for factor in factors if config.rows else ():
                    phases.append(run_phase(server, route, factor, capacity, args))
            finally:
                server.stop()
    report(phases, args, pinning)


if __name__ == "__main__":
    main()
