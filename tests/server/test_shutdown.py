"""`handspring serve` as its own process: SIGTERM finishes the requests in flight, answers
the ones the graceful timeout cuts with 503 in their contract's shape, exits 0, and every
log line is a JSON object."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from handspring.server.app import create_app
from handspring.server.config import ModelSpec, ServerConfig
from handspring.server.guards.shutdown import RETRY_AFTER_S
from tests.server.metrics_text import metric_value
from tests.support.gates import wait_until
from tests.support.live_server import free_port, running

ROOT = Path(__file__).resolve().parents[2]
IN_FLIGHT = 4
TEXTS = 4  # per request; also the batch size, so each request is a run of its own
MINILM = "minilm=all-minilm-l6-v2:fp32"


@dataclass(frozen=True)
class Call:
    """One text request in one contract, and the error body that contract gives."""

    method: str
    path: str
    body: dict
    form: bool = False

    def send(self, url: str) -> requests.Response:
        sent = {"data": self.body} if self.form else {"json": self.body}
        return requests.request(self.method, f"{url}{self.path}", timeout=120, **sent)


# Every contract's text route, each asking for one text (one engine run apiece).
CALLS = {
    "openai": Call("POST", "/v1/embeddings", {"input": "a few words", "model": "minilm"}),
    "tei": Call("POST", "/embed", {"inputs": "a few words"}),
    "native": Call("POST", "/api/embed/texts", {"texts": ["a few words"]}),
    "weaviate": Call("POST", "/vectors", {"text": "a few words"}),
    "photo-search": Call("POST", "/v1/embed", {"query": "a few words"}, form=True),
}


def _assert_retry_later(contract: str, answer: requests.Response) -> None:
    """503, Retry-After, and the contract's own JSON error shape."""
    assert answer.status_code == 503, (contract, answer.status_code, answer.text)
    assert answer.headers["Retry-After"] == str(RETRY_AFTER_S), contract
    assert answer.headers["Content-Type"] == "application/json", contract
    body = answer.json()
    if contract in ("openai", "native"):
        assert set(body) == {"error"} and body["error"]["type"] == "server_error", body
        message = body["error"]["message"]
    elif contract == "tei":
        assert body["error_type"] == "Unhealthy", body
        message = body["error"]
    elif contract == "photo-search":
        message = body["message"]
    else:
        assert set(body) == {"error"}, body
        message = body["error"]
    assert "shut" in message and "retry" in message, message


def _log_records(path: Path) -> list[dict]:
    lines = [line for line in path.read_text().splitlines() if line]
    return [json.loads(line) for line in lines]  # each line is one JSON object


def _assert_no_500(records: list[dict]) -> None:
    assert not [r for r in records if r.get("status") == 500], records[-5:]
    assert not [r for r in records if "Exception in ASGI application" in r["msg"]]


@dataclass
class HeldServer:
    url: str
    process: subprocess.Popen
    hold: Path
    log: Path

    def text_metric(self, name: str) -> float:
        return metric_value(self.url, name, model="minilm", modality="text")

    def wait_for_runs(self, held: int, queued_items: int) -> None:
        """Until the warm-up's run and `held` runs have started, and `queued_items` wait."""
        wait_until(
            lambda: (
                self.text_metric("handspring_batch_size_count") == 1 + held
                and self.text_metric("handspring_queue_depth") == queued_items
            ),
            f"{held} held run(s) started and {queued_items} item(s) queued",
        )

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        # Polled as text: the last line may be half written.
        wait_until(
            lambda: '"msg": "Shutting down"' in self.log.read_text(),
            "the server begins its shutdown",
        )


@contextmanager
def held_server(tmp_path: Path, *options: str) -> Iterator[HeldServer]:
    """The real `handspring serve` in its own process, whose engine runs wait while the
    hold file exists: requests are in flight because the test holds them, not because
    they are big. Warmed up (the model loaded) before it is handed over."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    hold, log = tmp_path / "hold", tmp_path / "server.log"
    command = [
        sys.executable, "-m", "tests.server.held_serve", str(hold),
        "--model", MINILM, "--port", str(port), *options,
    ]  # fmt: skip
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stderr=stderr, cwd=ROOT, env=os.environ.copy())
    try:

        def ready() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return requests.get(f"{url}/.well-known/ready", timeout=10).status_code == 204
            except requests.ConnectionError:
                return False

        wait_until(ready, "the server is ready")
        requests.post(f"{url}/embed", json={"inputs": "warm"}, timeout=60).raise_for_status()
        yield HeldServer(url, process, hold, log)
    finally:
        hold.unlink(missing_ok=True)
        if process.poll() is None:
            process.kill()
            process.wait()


def _in_threads(calls: dict[str, Callable[[], requests.Response]]) -> Callable[[], dict]:
    """Start each call in a thread; the returned function joins them and gives the answers."""
    answers: dict[str, requests.Response] = {}

    def run(name: str, call: Callable[[], requests.Response]) -> None:
        answers[name] = call()

    threads = [threading.Thread(target=run, args=item) for item in calls.items()]
    for thread in threads:
        thread.start()

    def join() -> dict[str, requests.Response]:
        for thread in threads:
            thread.join()
        return answers

    return join


def test_sigterm_finishes_requests_in_flight(tmp_path: Path) -> None:
    options = ("--max-batch", str(TEXTS), "--graceful-timeout", "120")
    with held_server(tmp_path, *options) as server:
        server.hold.touch()
        body = {"inputs": [f"{TEXTS} times a few words"] * TEXTS}
        join = _in_threads(
            {
                str(i): lambda: requests.post(f"{server.url}/embed", json=body, timeout=120)
                for i in range(IN_FLIGHT)
            }
        )
        # One held run has started; the others wait in the queue.
        server.wait_for_runs(held=1, queued_items=(IN_FLIGHT - 1) * TEXTS)
        server.terminate()
        server.hold.unlink()  # only now may the requests in flight finish
        answers = list(join().values())
        # A clean drain is a success, not death by the signal (143).
        assert server.process.wait(timeout=120) == 0
    assert [a.status_code for a in answers] == [200] * IN_FLIGHT
    assert all(len(a.json()) == TEXTS and len(a.json()[0]) == 384 for a in answers)

    records = _log_records(server.log)
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    _assert_no_500(records)
    messages = [r["msg"] for r in records]
    shutdown = messages.index("Shutting down")
    served = [r for r in records if r.get("path") == "/embed"]
    assert len(served) == IN_FLIGHT + 1
    assert all(r["status"] == 200 and isinstance(r["duration_ms"], float) for r in served)
    after = [r for r in records[shutdown:] if r.get("path") == "/embed"]
    assert len(after) == IN_FLIGHT  # answered once the shutdown had begun
    assert any("Finished server process" in m for m in messages[shutdown:]), messages[-5:]


def test_requests_the_graceful_timeout_cuts_get_503_in_their_contract(tmp_path: Path) -> None:
    # The engine stays held until every client has its answer, so each request is still
    # in flight when the (short) graceful timeout ends, however slow the machine.
    options = ("--max-batch", "1", "--graceful-timeout", "1")
    with held_server(tmp_path, *options) as server:
        server.hold.touch()
        join = _in_threads(
            {name: lambda c=call: c.send(server.url) for name, call in CALLS.items()}
        )
        server.wait_for_runs(held=1, queued_items=len(CALLS) - 1)
        server.terminate()
        answers = join()
        server.hold.unlink()  # the held run may end, and with it the process
        # Each request got an answer, so the shutdown was clean.
        assert server.process.wait(timeout=120) == 0
    assert set(answers) == set(CALLS)
    for contract, answer in answers.items():
        _assert_retry_later(contract, answer)

    records = _log_records(server.log)
    _assert_no_500(records)
    cut = [r for r in records if r.get("path") in {c.path for c in CALLS.values()}]
    assert sorted(r["status"] for r in cut) == [200] + [503] * len(CALLS)  # with the warm-up
    assert any("timeout graceful shutdown exceeded" in r["msg"] for r in records)
    assert any("Finished server process" in r["msg"] for r in records)


def test_requests_after_the_shutdown_began_get_503(models: tuple[ModelSpec, ...]) -> None:
    # The signal handler's flag, set directly: over HTTP, the window between the signal and
    # uvicorn closing its connections is too short to aim a request at.
    app = create_app(ServerConfig(models=models))
    with running(app) as url:
        app.state.handspring.draining.begin()
        for contract, call in CALLS.items():
            _assert_retry_later(contract, call.send(url))
        # Still alive, and still observable, while it drains.
        assert requests.get(f"{url}/.well-known/live", timeout=10).status_code == 204
        metrics = requests.get(f"{url}/metrics", timeout=10)
        assert metrics.status_code == 200
        assert 'status="503"' in metrics.text
        ready = requests.get(f"{url}/.well-known/ready", timeout=10)
        assert ready.status_code == 503 and ready.headers["Retry-After"] == str(RETRY_AFTER_S)
