"""Prometheus metrics of the server, in a registry of its own (served at GET /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


class Metrics:
    """Request counts by status, queue and in-flight sizes, batch shapes, and time histograms."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series only double the output
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "embed_requests", "HTTP requests by route and status code", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "embed_request_duration_seconds",
            "Time from request start to response",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "embed_queue_duration_seconds",
            "Time a request waited before its first session run",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokenize_seconds = Histogram(
            "embed_tokenization_duration_seconds", "Tokenisation time per request", buckets=LATENCY_BUCKETS, registry=r
        )
        self.run_seconds = Histogram(
            "embed_batch_duration_seconds", "Time of one session run", buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_inputs = Histogram("embed_batch_size", "Inputs per session run", buckets=SIZE_BUCKETS, registry=r)
        self.batch_tokens = Histogram(
            "embed_batch_tokens", "Padded tokens (rows x longest) per session run", buckets=TOKEN_BUCKETS, registry=r
        )
        self.inputs = Counter("embed_inputs", "Inputs embedded", registry=r)
        self.tokens = Counter("embed_tokens", "Tokens embedded, [CLS]/[SEP] included, after truncation", registry=r)
        self.dropped = Counter(
            "embed_inputs_dropped", "Inputs dropped before inference because their client disconnected", registry=r
        )
        self.worker_busy_seconds = Counter(
            "embed_worker_busy_seconds",
            "Time each inference worker spent tokenising and running batches",
            ["worker"],
            registry=r,
        )
        self.queue_inputs = Gauge("embed_queue_inputs", "Inputs admitted and waiting for a session run", registry=r)
        self.inflight_inputs = Gauge("embed_inflight_inputs", "Inputs admitted and not yet answered", registry=r)
