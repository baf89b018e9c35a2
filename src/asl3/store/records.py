"""The store's public records: plain frozen dataclasses, so callers never hold ORM objects.

The gateway builds ``Event`` values on the request path and hands them to a background writer;
keeping them free of SQLAlchemy state means they can cross threads and outlive any session.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Event:
    """One proxied request's final decision (one row per request)."""

    request_id: str
    time: datetime  # timezone-aware UTC
    principal: str | None  # principal name; None = anonymous
    model: str | None
    stream: bool
    stage: str  # "input" | "output" | "none": which check decided ("none": no block, or an error first)
    action: str  # "pass" | "block" | "error"
    status: int  # HTTP status sent to the client
    latency_ms: float
    category: str | None = None
    score: float | None = None  # the deciding score
    input_score: float | None = None
    output_score: float | None = None
    threshold: float | None = None
    exempted: str | None = None  # comma-joined categories whose exemption turned a block into a pass
    error: str | None = None  # e.g. "upstream_timeout", "upstream_unreachable", "client_disconnected"
    bundle: str | None = None  # the classifier bundle that decided (name@sha prefix)
    input_text: str | None = None  # texts only when the gateway's retention setting keeps them
    output_text: str | None = None


EVENT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Event))


@dataclass(frozen=True)
class ExemptionInfo:
    """A principal may have ``category`` removed from its harmful score until ``until``."""

    category: str
    until: datetime


@dataclass(frozen=True)
class KeyInfo:
    """One API key as the store knows it: never the key itself, only its display prefix."""

    name: str
    prefix: str
    created: datetime
    revoked: datetime | None
    exemptions: tuple[ExemptionInfo, ...]


@dataclass(frozen=True)
class NewKey:
    """A key just created. ``key`` is the only time the clear key exists anywhere."""

    name: str
    key: str
    prefix: str


@dataclass(frozen=True)
class EgressAlert:
    """One block or unblock of one egress client, as the egress proxy records it.

    ``kind``/``scope``/``key``/``dest``/``observed``/``limit``/``window_s`` describe the alert
    (for an unblock: the alert whose block was lifted, when known); ``by`` and ``change`` only
    belong to unblocks. ``details`` is the proxy's full record (plain JSON values)."""

    time: datetime  # timezone-aware UTC
    event: str  # "block" | "unblock"
    client: str
    clients: tuple[str, ...] = ()
    kind: str | None = None
    scope: str | None = None
    key: str | None = None
    dest: str | None = None
    reason: str | None = None
    observed: float | None = None
    limit: float | None = None
    window_s: float | None = None
    by: str | None = None
    change: str | None = None
    details: dict[str, Any] | None = None
    id: int | None = None  # set when read back from the store

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (time as ISO 8601), for ``asl3 egress alerts --json``."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["time"] = self.time.isoformat()
        d["clients"] = list(self.clients)
        return d
