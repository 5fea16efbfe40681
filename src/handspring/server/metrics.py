"""Prometheus metrics, in a registry of the app's own (so tests can run several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "handspring_requests", "HTTP requests answered", ["route", "status"], registry=r
        )
        self.errors = Counter(
            "handspring_request_errors",
            "HTTP requests answered with a 4xx or 5xx status",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "handspring_request_duration_seconds",
            "Time from request to response",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "handspring_queue_depth",
            "Items waiting for a batch",
            ["model", "modality"],
            registry=r,
        )
        self.batch_size = Histogram(
            "handspring_batch_size",
            "Items per engine run",
            ["model", "modality"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.items = Counter(
            "handspring_embedded_items", "Items embedded", ["model", "modality"], registry=r
        )
        # gRPC calls (--grpc-port), by full method name and status code name.
        self.grpc_requests = Counter(
            "handspring_grpc_requests",
            "gRPC calls answered",
            ["method", "code"],
            registry=r,
        )
        self.grpc_latency = Histogram(
            "handspring_grpc_request_duration_seconds",
            "Time from a gRPC call to its answer",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Load shedding (see handspring.server.guards.admission).
        self.shed = Counter(
            "handspring_shed_requests",
            "Work requests refused with 429 before their body was read (gRPC calls: with "
            "RESOURCE_EXHAUSTED): the admitted backlog's expected wait was over its share "
            "of the --max-queue-ms budget",
            ["contract"],
            registry=r,
        )
        self.admitted = Gauge(
            "handspring_admitted_requests",
            "Work requests admitted and not yet answered",
            registry=r,
        )
        self.completion_rate = Gauge(
            "handspring_completion_rate",
            "Work requests answered per second of busy time, over the last busy seconds",
            registry=r,
        )
        self.admission_wait = Gauge(
            "handspring_admission_wait_seconds",
            "Expected wait of the admitted backlog: requests in flight / completion rate",
            registry=r,
        )
        self.model_load = Gauge(
            "handspring_model_load_seconds",
            "Time the last load of a model took",
            ["model"],
            registry=r,
        )
        self.model_loaded = Gauge(
            "handspring_model_loaded", "1 while a model is in memory", ["model"], registry=r
        )
