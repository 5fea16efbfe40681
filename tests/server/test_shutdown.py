"""`handspring serve` as its own process: SIGTERM finishes the requests in flight, and
every log line is a JSON object."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import requests

from tests.server.metrics_text import metric_value
from tests.support.live_server import free_port

IN_FLIGHT = 4


def test_sigterm_finishes_requests_in_flight() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "handspring.server.command",
        "--model", "minilm=all-minilm-l6-v2:fp32", "--port", str(port),
        "--max-batch", "64", "--graceful-timeout", "30",
    ]  # fmt: skip
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline
            try:
                if requests.get(f"{url}/.well-known/ready", timeout=2).status_code == 204:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        requests.post(f"{url}/embed", json={"inputs": "warm"}, timeout=60).raise_for_status()

        answers: list[requests.Response] = []

        def client(i: int) -> None:
            # 64 texts of 256 tokens: about 1.5 s of engine time each, so all are in flight.
            body = {"inputs": [f"text {i} " + "word " * 300] * 64}
            answers.append(requests.post(f"{url}/embed", json=body, timeout=60))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(IN_FLIGHT)]
        for thread in threads:
            thread.start()
        # One request runs while the others wait in the queue.
        queued = (IN_FLIGHT - 1) * 64
        while metric_value(url, "handspring_queue_depth", model="minilm", modality="text") < queued:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        server.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join()
        # uvicorn re-raises the signal once it has shut down cleanly.
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
    assert [a.status_code for a in answers] == [200] * IN_FLIGHT
    assert all(len(a.json()) == 64 and len(a.json()[0]) == 384 for a in answers)

    lines = [line for line in (server.stderr.read() if server.stderr else "").splitlines() if line]
    records = [json.loads(line) for line in lines]  # each line is one JSON object
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    served = [r for r in records if r.get("path") == "/embed"]
    assert len(served) == IN_FLIGHT + 1
    assert all(r["status"] == 200 and isinstance(r["duration_ms"], float) for r in served)
    messages = [r["msg"] for r in records]
    assert any("Finished server process" in m for m in messages), messages[-5:]
