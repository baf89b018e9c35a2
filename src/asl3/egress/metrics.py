"""Prometheus metrics of the egress proxy (its own registry, so several proxies may coexist)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge


class EgressMetrics:
    def __init__(self, registry: Any = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.bytes = Counter("asl3_egress_bytes", "bytes relayed", ["direction"], registry=r)
        self.client_bytes = Counter("asl3_egress_client_bytes", "outbound bytes per client",
                                    ["client"], registry=r)
        self.requests = Counter("asl3_egress_requests", "proxy requests by HTTP status",
                                ["status"], registry=r)
        self.blocks = Counter("asl3_egress_blocks", "clients blocked, by alert kind", ["kind"],
                              registry=r)
        self.blocked = Gauge("asl3_egress_blocked_clients", "clients blocked now", registry=r)
        self.tunnels = Gauge("asl3_egress_open_tunnels", "tunnels open now", registry=r)
        self.shaping_wait = Counter("asl3_egress_shaping_wait_seconds",
                                    "seconds chunks waited for tokens", registry=r)
        self.store_failures = Counter(
            "asl3_egress_store_failures", "failed attempts to write blocks and unblocks to the "
            "event store (--store); the alert file still has them", registry=r)
        self.store_pending = Gauge("asl3_egress_store_pending",
                                   "blocks and unblocks waiting for the event store", registry=r)
        self.state_failures = Counter(
            "asl3_egress_state_failures", "failed saves of the detector state file (--state)",
            registry=r)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
