"""Prometheus metrics of one gateway process (its own registry, so apps in tests don't collide).

With ``--workers N`` each process exports its own counters (the scrape reaches whichever
worker accepts it); the event store is the complete record across workers.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                    10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("asl3_requests", "Chat completion requests by outcome",
                                ["stream", "status"], registry=r)
        self.blocks = Counter("asl3_blocks", "Blocked requests by stage and category",
                              ["stage", "category"], registry=r)
        self.exempted = Counter("asl3_exempted", "Blocks lifted by a principal's exemption",
                                ["stage", "category"], registry=r)
        self.latency = Histogram("asl3_request_seconds",
                                 "Time to the response headers (non-streaming: whole response)",
                                 ["stream"], buckets=_LATENCY_BUCKETS, registry=r)
        self.classify = Histogram("asl3_classifier_seconds", "Classifier time per request",
                                  ["stage"], buckets=_LATENCY_BUCKETS, registry=r)
        self.upstream_errors = Counter("asl3_upstream_errors", "Upstream failures by kind",
                                       ["kind"], registry=r)
        self.auth_failures = Counter("asl3_auth_failures", "Requests refused for their key",
                                     ["reason"], registry=r)
        self.events_dropped = Counter("asl3_events_dropped",
                                      "Decision events not written because the queue was full",
                                      registry=r)
        self.events_pending = Gauge("asl3_events_pending", "Decision events waiting for the store",
                                    registry=r)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
