"""The tables (SQLAlchemy 2 declarative, typed), portable between SQLite and PostgreSQL.

Two column types carry the portability rules, so no query has to think about them:

- ``UTCDateTime`` stores timestamps as UTC and always reads them back timezone-aware in UTC.
  SQLite keeps no time zone (SQLAlchemy writes a naive ISO string), PostgreSQL's timestamptz
  comes back in the session's zone; both are normalized here, and since every stored value is
  UTC, SQLite's string comparison orders them correctly.
- ``CleanText`` makes any Python string storable: PostgreSQL refuses NUL characters and both
  drivers refuse lone surrogates (which JSON request bodies can carry), and one such text must
  not make a whole batch of events fail. They are replaced with U+FFFD.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def as_utc(t: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already."""
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(s: str) -> str:
    if "\x00" in s:
        s = s.replace("\x00", "\ufffd")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        s = _SURROGATE.sub("\ufffd", s)
    return s


class CleanText(TypeDecorator[str]):
    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else clean_text(str(value))


class Base(DeclarativeBase):
    pass


class PrincipalRow(Base):
    """Who holds keys. Exemptions belong to the principal, so every key of it carries them."""

    __tablename__ = "principals"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    keys: Mapped[list[ApiKeyRow]] = relationship(back_populates="principal")
    exemptions: Mapped[list[ExemptionRow]] = relationship(
        back_populates="principal", order_by="ExemptionRow.category")


class ApiKeyRow(Base):
    """An API key: its SHA-256 (the lookup) and a short prefix to name it by; never the key."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    principal_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("principals.id"), index=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked: Mapped[datetime | None] = mapped_column(UTCDateTime)
    principal: Mapped[PrincipalRow] = relationship(back_populates="keys")


class ExemptionRow(Base):
    """One category exemption of a principal; granting the category again replaces ``until``."""

    __tablename__ = "exemptions"
    __table_args__ = (UniqueConstraint("principal_id", "category"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    principal_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("principals.id"))
    category: Mapped[str] = mapped_column(String(200))
    until: Mapped[datetime] = mapped_column(UTCDateTime)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    principal: Mapped[PrincipalRow] = relationship(back_populates="exemptions")


class EventRow(Base):
    """One proxied request's decision; columns mirror ``asl3.store.records.Event``.

    Strings are unbounded (``CleanText``): an over-long model name or error text must not cost
    the event. The principal is stored by name, not by foreign key, so events outlive keys and
    are cheap to insert in bulk."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_time", "time"), Index("ix_events_request_id", "request_id"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[str] = mapped_column(CleanText)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    principal: Mapped[str | None] = mapped_column(CleanText)
    model: Mapped[str | None] = mapped_column(CleanText)
    stream: Mapped[bool]
    stage: Mapped[str] = mapped_column(CleanText)
    action: Mapped[str] = mapped_column(CleanText)
    status: Mapped[int]
    latency_ms: Mapped[float]
    category: Mapped[str | None] = mapped_column(CleanText)
    score: Mapped[float | None]
    input_score: Mapped[float | None]
    output_score: Mapped[float | None]
    threshold: Mapped[float | None]
    exempted: Mapped[str | None] = mapped_column(CleanText)
    error: Mapped[str | None] = mapped_column(CleanText)
    bundle: Mapped[str | None] = mapped_column(CleanText)
    input_text: Mapped[str | None] = mapped_column(CleanText)
    output_text: Mapped[str | None] = mapped_column(CleanText)


class DroppedRow(Base):
    """Events that never reached the store (queue full, or the database down too long)."""

    __tablename__ = "dropped_events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    count: Mapped[int]


class EgressAlertRow(Base):
    """One block or unblock of one egress client (``asl3 egress proxy --store``); columns mirror
    ``asl3.store.records.EgressAlert``.

    One row per client, not per alert: a destination alert that blocks three clients is three
    rows sharing ``key`` and ``time``, so "what happened to 10.0.0.7" is an indexed equality and
    an unblock (always of one client) lines up with its block. ``details`` keeps the proxy's
    whole record as JSON (approvers, signed request, ...), so no field of it is lost to the
    columns chosen here."""

    __tablename__ = "egress_alerts"
    __table_args__ = (Index("ix_egress_alerts_time", "time"),
                      Index("ix_egress_alerts_client", "client"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    event: Mapped[str] = mapped_column(String(16))  # "block" | "unblock"
    client: Mapped[str] = mapped_column(CleanText)  # an IP address (IPv6 may carry a zone)
    clients: Mapped[str] = mapped_column(CleanText)  # every client of the alert, comma-joined
    kind: Mapped[str | None] = mapped_column(CleanText)  # "budget" | "rate"
    scope: Mapped[str | None] = mapped_column(CleanText)  # "client" | "destination"
    key: Mapped[str | None] = mapped_column(CleanText)  # the client, or the destination host:port
    dest: Mapped[str | None] = mapped_column(CleanText)  # the destination, when one is known
    reason: Mapped[str | None] = mapped_column(CleanText)
    observed: Mapped[float | None]  # bytes (budget) or bytes per second (rate)
    limit: Mapped[float | None]
    window_s: Mapped[float | None]
    by: Mapped[str | None] = mapped_column(CleanText)  # unblock: the member who used the change
    change: Mapped[str | None] = mapped_column(CleanText)  # unblock: the change id
    details: Mapped[str | None] = mapped_column(CleanText)  # the proxy's record, JSON
