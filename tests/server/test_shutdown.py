"""`handspring serve` as its own process: SIGTERM finishes the requests in flight, and
every log line is a JSON object."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import requests

from tests.server.metrics_text import metric_value
from tests.support.gates import wait_until
from tests.support.live_server import free_port

ROOT = Path(__file__).resolve().parents[2]
IN_FLIGHT = 4
TEXTS = 4  # per request; also the batch size, so each request is a run of its own


def _log_records(path: Path) -> list[dict]:
    lines = [line for line in path.read_text().splitlines() if line]
    return [json.loads(line) for line in lines]  # each line is one JSON object


def test_sigterm_finishes_requests_in_flight(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    hold, log = tmp_path / "hold", tmp_path / "server.log"
    # The real `handspring serve`, whose engine runs wait while `hold` exists: requests
    # are in flight because the test holds them, not because they are big.
    command = [
        sys.executable, "-m", "tests.server.held_serve", str(hold),
        "--model", "minilm=all-minilm-l6-v2:fp32", "--port", str(port),
        "--max-batch", str(TEXTS), "--graceful-timeout", "120",
    ]  # fmt: skip
    with log.open("w") as stderr:
        server = subprocess.Popen(command, stderr=stderr, cwd=ROOT, env=os.environ.copy())
    try:

        def ready() -> bool:
            assert server.poll() is None, log.read_text()
            try:
                return requests.get(f"{url}/.well-known/ready", timeout=10).status_code == 204
            except requests.ConnectionError:
                return False

        wait_until(ready, "the server is ready")
        requests.post(f"{url}/embed", json={"inputs": "warm"}, timeout=60).raise_for_status()

        hold.touch()
        answers: list[requests.Response] = []

        def client(i: int) -> None:
            body = {"inputs": [f"text {i}: a few words"] * TEXTS}
            answers.append(requests.post(f"{url}/embed", json=body, timeout=120))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(IN_FLIGHT)]
        for thread in threads:
            thread.start()

        def metric(name: str) -> float:
            return metric_value(url, name, model="minilm", modality="text")

        # The warm-up's run and one held run have started; the others wait in the queue.
        wait_until(
            lambda: (
                metric("handspring_batch_size_count") == 2
                and metric("handspring_queue_depth") == (IN_FLIGHT - 1) * TEXTS
            ),
            "one request running and the others queued",
        )
        server.send_signal(signal.SIGTERM)
        # Polled as text: the last line may be half written.
        wait_until(
            lambda: '"msg": "Shutting down"' in log.read_text(), "the server begins its shutdown"
        )
        hold.unlink()  # only now may the requests in flight finish
        for thread in threads:
            thread.join()
        # uvicorn re-raises the signal once it has shut down cleanly.
        assert server.wait(timeout=120) in (0, -signal.SIGTERM)
    finally:
        hold.unlink(missing_ok=True)
        if server.poll() is None:
            server.kill()
    assert [a.status_code for a in answers] == [200] * IN_FLIGHT
    assert all(len(a.json()) == TEXTS and len(a.json()[0]) == 384 for a in answers)

    records = _log_records(log)
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    messages = [r["msg"] for r in records]
    shutdown = messages.index("Shutting down")
    served = [r for r in records if r.get("path") == "/embed"]
    assert len(served) == IN_FLIGHT + 1
    assert all(r["status"] == 200 and isinstance(r["duration_ms"], float) for r in served)
    after = [r for r in records[shutdown:] if r.get("path") == "/embed"]
    assert len(after) == IN_FLIGHT  # answered once the shutdown had begun
    assert any("Finished server process" in m for m in messages[shutdown:]), messages[-5:]
