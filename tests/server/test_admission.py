"""Load shedding: once the admitted backlog is full, work requests get 429 with Retry-After
in their contract's shape before their body is read; admitted requests always finish.

The engine is held with EngineGate, so "the backlog is full" is a state the tests reach
and wait for, never a timing. The servers' budget is a microsecond: once two warm-up
answers have given a rate, the limit is the floor (`max_batch` requests here) whatever that
rate is (it would take two million answers a second to admit one more), and the tests
fill exactly that.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
from urllib.parse import urlsplit

import h11
import numpy as np
import pytest
import requests
from click.testing import CliRunner
from fastapi import FastAPI

import handspring
from handspring.server.app import create_app
from handspring.server.command import serve
from handspring.server.config import ModelSpec, ServerConfig
from handspring.server.guards.admission import (
    ADMIT_SHARE,
    MAX_RETRY_AFTER_S,
    MAX_SAMPLES,
    AdmissionController,
    AdmissionGate,
    floor_for,
)
from handspring.server.guards.middleware import Observed, RequestGate
from handspring.server.guards.shutdown import RefusedWhileDraining
from handspring.server.metrics import Metrics
from tests.server.images import png_b64
from tests.server.metrics_text import metric_value
from tests.support.gates import EngineGate, wait_until
from tests.support.live_server import running

KEY = "s3cret"
AUTH = {"Authorization": f"Bearer {KEY}"}
FLOOR = 2  # max_batch of the servers below
TINY_BUDGET_MS = 0.001


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _answer_all(controller: AdmissionController, clock: Clock, count: int, step: float) -> None:
    """`count` requests one after the other, each answered `step` seconds after it came."""
    for _ in range(count):
        assert controller.admit().admitted
        clock.now += step
        controller.release()


def _measured(controller: AdmissionController, clock: Clock, count: int, step: float) -> None:
    """A first answer after a second (a model's load), then `count` answers `step` apart."""
    _answer_all(controller, clock, 1, 1.0)
    _answer_all(controller, clock, count, step)


# ------------------------------------------------------------- the arithmetic


def test_before_a_rate_is_measured_the_cap_holds() -> None:
    controller = AdmissionController(budget_s=1.0, floor=2, unmeasured_cap=3, clock=Clock())
    assert [controller.admit().admitted for _ in range(3)] == [True] * 3
    refused = controller.admit()
    assert not refused.admitted
    assert (refused.in_flight, refused.wait_s, refused.retry_after_s) == (3, None, 1)
    assert controller.in_flight == 3  # a refusal holds no place


def test_a_first_answer_alone_is_no_rate() -> None:
    clock = Clock()
    controller = AdmissionController(
        budget_s=1.0, floor=1, window_s=2.0, unmeasured_cap=3, clock=clock
    )
    _answer_all(controller, clock, 1, 1.0)  # a model's load, then nothing answered
    assert controller.admit().admitted
    clock.now += 1.0
    assert controller.rate() is None and controller.limit() == 3
    clock.now += 1.0  # a whole window busy without an answer: stalled
    assert controller.rate() == 0.0 and controller.limit() == 1


def test_the_time_before_the_first_answer_is_left_out() -> None:
    clock = Clock()
    controller = AdmissionController(budget_s=1.0, floor=1, window_s=100.0, clock=clock)
    _answer_all(controller, clock, 1, 5.0)  # a model's load
    assert controller.rate() is None
    _answer_all(controller, clock, 10, 0.125)
    assert controller.rate() == 8.0


def test_the_first_batch_is_left_out() -> None:
    clock = Clock()
    controller = AdmissionController(budget_s=1.0, floor=1, window_s=100.0, clock=clock)
    for _ in range(3):
        assert controller.admit().admitted
    clock.now = 5.0
    for _ in range(3):  # answered together, as one batch
        controller.release()
    assert controller.rate() is None
    _answer_all(controller, clock, 4, 0.25)
    assert controller.rate() == 4.0


def test_the_rate_counts_busy_time_only() -> None:
    clock = Clock()
    controller = AdmissionController(budget_s=1.0, floor=1, window_s=10.0, clock=clock)
    _answer_all(controller, clock, 2, 0.25)
    clock.now = 100.0  # idle: no time passes on the busy clock
    _answer_all(controller, clock, 1, 0.25)
    assert controller.busy_seconds() == 0.75
    assert controller.rate() == 4.0


def test_the_limit_is_the_rate_times_a_share_of_the_budget() -> None:
    clock = Clock()
    controller = AdmissionController(budget_s=1.0, floor=2, clock=clock)
    _measured(controller, clock, 64, 1 / 64)  # 64 answers in 1 busy second
    assert controller.rate() == 64.0
    limit = math.floor(64 * 1.0 * ADMIT_SHARE)
    assert controller.limit() == limit
    for _ in range(limit):
        assert controller.admit().admitted
    refused = controller.admit()
    assert not refused.admitted and refused.wait_s == limit / 64
    assert refused.retry_after_s == math.ceil(limit / 64)
    wide = AdmissionController(budget_s=1.0, floor=100, clock=clock)
    _measured(wide, clock, 64, 1 / 64)
    assert wide.limit() == 100  # never below the floor


def test_retry_after_is_the_backlogs_wait_rounded_up() -> None:
    clock = Clock()
    controller = AdmissionController(budget_s=5.0, floor=1, clock=clock)
    _measured(controller, clock, 64, 1 / 64)
    while controller.admit().admitted:
        pass
    assert controller.in_flight == math.floor(64 * 5.0 * ADMIT_SHARE)
    refused = controller.admit()
    assert refused.wait_s == controller.in_flight / 64
    assert refused.retry_after_s == math.ceil(controller.in_flight / 64)


def test_old_answers_leave_the_window_and_a_stall_falls_back_to_the_floor() -> None:
    clock = Clock()
    controller = AdmissionController(budget_s=1.0, floor=2, window_s=2.0, clock=clock)
    _measured(controller, clock, 64, 1 / 64)  # the busy clock at 2.0
    assert controller.rate() == 64.0
    clock.now = 10.0
    assert controller.admit().admitted  # the busy clock runs again, with no answer
    clock.now = 11.0  # busy 3.0: the window holds all 64 answers, over 2 s
    assert controller.rate() == 32.0
    clock.now = 12.0  # busy 4.0: none of them is in the window
    assert controller.rate() == 0.0 and controller.limit() == 2
    assert controller.expected_wait_s() == math.inf
    assert controller.admit().admitted  # the floor still admits
    stalled = controller.admit()
    assert not stalled.admitted and stalled.retry_after_s == MAX_RETRY_AFTER_S


def test_a_stall_reads_as_no_answers_not_as_no_rate() -> None:
    # A whole window without an answer is a rate of 0 (the floor), never "no rate yet"
    # (the larger unmeasured cap), wherever the window's edges fall.
    for tenths in range(1, 60):
        clock = Clock()
        controller = AdmissionController(budget_s=1.0, floor=1, window_s=3.0, clock=clock)
        _answer_all(controller, clock, 2, tenths / 10)
        assert controller.admit().admitted
        clock.now += 3.0 + tenths / 10
        assert controller.rate() == 0.0, tenths


def test_once_the_server_is_full_the_budget_rules_below_the_floor() -> None:
    clock = Clock()
    controller = AdmissionController(budget_s=1.0, floor=32, window_s=3.0, clock=clock)
    _measured(controller, clock, 64, 1 / 32)  # 32 answers a busy second
    by_budget = math.floor(32 * 1.0 * ADMIT_SHARE)
    assert by_budget < 32
    assert controller.limit() == 32 and not controller.full_lately()  # quiet: the floor
    for _ in range(31):  # a burst of a batch's worth at a quiet server: all admitted
        assert controller.admit().admitted
    assert controller.limit() == 32 and not controller.full_lately()
    assert controller.admit().admitted
    assert controller.full_lately() and controller.limit() == by_budget  # a batch in flight
    assert not controller.admit().admitted
    assert controller.in_flight == 32  # those admitted stay admitted, above the limit
    clock.now += (32 - by_budget) / 32
    for _ in range(32 - by_budget):  # answered at the same rate: 32 a second
        controller.release()
    assert controller.rate() == 32.0 and controller.in_flight == by_budget
    refused_at = clock.now
    refused = controller.admit()  # the budget's limit, not the floor's
    assert not refused.admitted and refused.wait_s == by_budget / 32
    clock.now += 1 / 32
    controller.release()
    assert controller.admit().admitted  # room under the budget's limit
    while controller.in_flight:
        clock.now += 1 / 32
        controller.release()
    clock.now = refused_at + 3.0 - 1 / 32  # idle since, and a refusal still this recent
    assert controller.full_lately() and controller.limit() == by_budget
    clock.now = refused_at + 3.0  # not full for a whole window: a quiet server again
    assert not controller.full_lately() and controller.limit() == 32
    assert math.floor(controller.rate() * 1.0 * ADMIT_SHARE) == by_budget  # the same rate


def test_a_stall_of_a_full_server_is_not_given_the_floor() -> None:
    clock = Clock()
    controller = AdmissionController(budget_s=1.0, floor=4, window_s=2.0, clock=clock)
    _measured(controller, clock, 64, 1 / 64)
    for _ in range(math.floor(64 * ADMIT_SHARE)):
        assert controller.admit().admitted
    assert not controller.admit().admitted
    clock.now += 2.0  # busy a whole window without an answer, refusing all the while
    for _ in range(8):
        assert not controller.admit().admitted
        clock.now += 0.25
    assert controller.rate() == 0.0 and controller.limit() == 1  # not the floor's 4


def test_at_very_high_rates_the_window_is_the_samples_kept() -> None:
    clock = Clock()
    controller = AdmissionController(budget_s=1.0, floor=1, window_s=10.0, clock=clock)
    _measured(controller, clock, MAX_SAMPLES + 1000, 1 / 1024)
    assert controller.rate() == 1024.0


def test_refusals_are_logged_a_line_a_second(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    gate = AdmissionGate(
        None,  # type: ignore[arg-type]  # only the log is exercised
        controller=AdmissionController(budget_s=1.0, floor=1, clock=clock),
        metrics=Metrics(),
        clock=clock,
    )
    caplog.set_level(logging.WARNING, logger="handspring.server.access")
    for n in range(250):  # 250 a second for 2 s: the first at once, then one a second
        clock.now = n / 125
        gate._log_shed(f"reason {n}")
    clock.now = 2.0
    gate._log_shed("reason 250")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "shed a request (429): reason 0",
        "shed 125 requests (429) in the last 1.0 s; the last: reason 125",
        "shed 125 requests (429) in the last 1.0 s; the last: reason 250",
    ]


def test_the_floor_is_a_batch() -> None:
    assert [floor_for(b) for b in (0, 1, 32)] == [1, 1, 32]


def test_misuse_is_refused() -> None:
    with pytest.raises(RuntimeError, match="release without a matching admit"):
        AdmissionController(budget_s=1.0, floor=1).release()
    with pytest.raises(ValueError, match="floor >= 1"):
        AdmissionController(budget_s=1.0, floor=0)
    with pytest.raises(ValueError, match="--max-queue-ms"):
        ServerConfig(models=(ModelSpec("m", "m"),), max_queue_ms=-1)


def test_flags_and_off_switch(models: tuple[ModelSpec, ...]) -> None:
    usage = CliRunner().invoke(serve, ["--help"], terminal_width=200).output
    assert "--max-queue-ms" in usage and "HANDSPRING_MAX_QUEUE_MS" in usage
    assert "Hard cap" in usage
    gates = create_app(ServerConfig(models=models)).guard_layers()
    assert gates == [Observed, RefusedWhileDraining, RequestGate, AdmissionGate]  # by default
    off = create_app(ServerConfig(models=models, max_queue_ms=0))
    assert off.guard_layers() == [Observed, RefusedWhileDraining, RequestGate]


# ----------------------------------------------------------------- over HTTP


def _headers_only(url: str, path: str, headers: dict[str, str]) -> tuple[int, dict, bytes]:
    """POST `path` declaring a 10 kB JSON body that is never sent; (status, headers, body)
    of the answer, read while the body is still owed."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    client = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="POST",
        target=path,
        headers=[
            ("host", parts.netloc),
            ("content-type", "application/json"),
            ("content-length", "10000"),
            *headers.items(),
        ],
    )
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall(client.send(request))
        status, answer_headers, body = 0, {}, b""
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(sock.recv(1 << 16))
            elif isinstance(event, h11.Response):
                status = event.status_code
                answer_headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        assert client.our_state is h11.SEND_BODY  # the body was never sent
    return status, answer_headers, body


def _texts(client: int) -> list[str]:
    return [f"held request {client}, text {j}" for j in range(2)]


def _post_texts(url: str, client: int) -> requests.Response:
    body = {"input": _texts(client), "model": "minilm", "encoding_format": "float"}
    return requests.post(f"{url}/v1/embeddings", json=body, headers=AUTH, timeout=120)


def _vectors(response: requests.Response) -> np.ndarray:
    return np.float32([d["embedding"] for d in response.json()["data"]])


def _admitted(url: str) -> float:
    return metric_value(url, "handspring_admitted_requests")


def _app(models: tuple[ModelSpec, ...]) -> FastAPI:
    config = ServerConfig(
        models=models, max_batch=FLOOR, max_queue_ms=TINY_BUDGET_MS, api_keys=(KEY,)
    )
    return create_app(config)


def _measure_then_hold(app: FastAPI, url: str) -> EngineGate:
    """Two answers on CLIP's image batcher give the server a rate; then the engine runs
    of batchers made from now on (MiniLM's) are held."""
    for seed in range(2):
        body = {"input": [png_b64(seed)], "model": "clip", "modality": "image"}
        answer = requests.post(f"{url}/v1/embeddings", json=body, headers=AUTH, timeout=120)
        assert answer.status_code == 200, answer.text
    assert metric_value(url, "handspring_completion_rate") > 0
    return EngineGate.install(app)


def test_a_full_backlog_is_429_before_the_body_is_sent(models: tuple[ModelSpec, ...]) -> None:
    app = _app(models)
    answers: dict[int, requests.Response] = {}
    with running(app) as url, _measure_then_hold(app, url) as gate:
        held = [
            threading.Thread(target=lambda c=c: answers.__setitem__(c, _post_texts(url, c)))
            for c in range(FLOOR)
        ]
        for thread in held:
            thread.start()
        wait_until(lambda: _admitted(url) == FLOOR, f"{FLOOR} requests admitted")

        for path, shape in (
            ("/v1/embeddings", lambda b: b["error"]["type"] == "rate_limit_error"),
            ("/embed", lambda b: b["error_type"] == "Overloaded"),
            ("/api/embed/texts", lambda b: b["error"]["code"] == "overloaded"),
        ):
            status, headers, body = _headers_only(url, path, AUTH)
            assert status == 429, (path, body)
            assert int(headers["retry-after"]) >= 1, path
            assert shape(json.loads(body)), (path, body)
            assert b"overloaded: 2 requests are already in flight" in body, body
        # Without the key: 401 whatever the load, and it takes no place.
        status, _, _ = _headers_only(url, "/v1/embeddings", {})
        assert status == 401
        for path in ("/.well-known/live", "/.well-known/ready", "/health", "/_health", "/metrics"):
            assert requests.get(url + path, timeout=30).status_code in (200, 204), path
        assert requests.get(f"{url}/v1/models", headers=AUTH, timeout=30).status_code == 200
        shed = {
            contract: metric_value(url, "handspring_shed_requests_total", contract=contract)
            for contract in ("openai", "tei", "native")
        }
        assert shed == {"openai": 1, "tei": 1, "native": 1}
        assert not answers  # the 429s came while the admitted requests were held
        gate.open()
        for thread in held:
            thread.join()
        wait_until(lambda: _admitted(url) == 0, "the admitted requests answered")

    minilm = handspring.load("all-minilm-l6-v2", precision="fp32")
    for client in range(FLOOR):
        assert answers[client].status_code == 200, answers[client].text
        assert np.array_equal(_vectors(answers[client]), minilm.embed_texts(_texts(client)))


def test_an_admitted_request_is_never_shed_later(models: tuple[ModelSpec, ...]) -> None:
    """A burst larger than the floor: whichever requests get in all finish with 200; the
    others are 429 at the door (every 429 is counted as shed, none came from the queue)."""
    burst = FLOOR + 4
    app = _app(models)
    answers: dict[int, requests.Response] = {}
    with running(app) as url, _measure_then_hold(app, url) as gate:
        threads = [
            threading.Thread(target=lambda c=c: answers.__setitem__(c, _post_texts(url, c)))
            for c in range(burst)
        ]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(answers) == burst - FLOOR, "every request beyond the floor shed")
        assert {a.status_code for a in answers.values()} == {429}
        assert _admitted(url) == FLOOR
        shed = metric_value(url, "handspring_shed_requests_total", contract="openai")
        assert shed == burst - FLOOR
        refused = set(answers)
        gate.open()
        for thread in threads:
            thread.join()
        wait_until(lambda: _admitted(url) == 0, "the admitted requests answered")
        assert _post_texts(url, burst).status_code == 200  # room again: admitted

    minilm = handspring.load("all-minilm-l6-v2", precision="fp32")
    admitted = [c for c in range(burst) if c not in refused]
    assert len(admitted) == FLOOR
    for client in admitted:
        assert answers[client].status_code == 200, answers[client].text
        assert np.array_equal(_vectors(answers[client]), minilm.embed_texts(_texts(client)))
