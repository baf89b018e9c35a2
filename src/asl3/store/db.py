"""``Store``: principals, API keys, exemptions and decision events in one SQL database.

Every method is one short transaction and returns plain records (``asl3.store.records``), so a
Store can be shared by threads (the gateway's request handlers and its event writer) and by
several processes on one database. Database failures surface as ``StoreError`` with one line.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from asl3.errors import StoreError
from asl3.store.engine import display, one_line, open_engine, resolve_url
from asl3.store.models import (
    ApiKeyRow,
    DroppedRow,
    EgressAlertRow,
    EventRow,
    ExemptionRow,
    PrincipalRow,
    as_utc,
)
from asl3.store.records import EVENT_FIELDS, EgressAlert, Event, ExemptionInfo, KeyInfo, NewKey

KEY_START = "asl3_"
PREFIX_CHARS = 12  # "asl3_" + 7 random characters (42 bits): enough to name a key uniquely
MAX_NAME_CHARS = 200


def key_sha256(key: str) -> str:
    """How a key is stored and looked up.

    Keys are 256 random bits (``secrets.token_urlsafe(32)``), not passwords: nobody can guess or
    dictionary-attack them, so a slow password hash (bcrypt, argon2) would add latency to every
    lookup and no security. One SHA-256 makes a stolen table useless and lookups an index hit.
    ``surrogatepass`` so that any string a client sends hashes (and simply matches nothing)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise StoreError("a principal name must be a non-empty string")
    if len(name) > MAX_NAME_CHARS:
        raise StoreError(f"principal name is {len(name)} characters long; at most {MAX_NAME_CHARS}")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise StoreError(f"principal name {name!r} contains control or invisible characters")
    if name.startswith(KEY_START):  # `revoke NAME|PREFIX` must never mistake one for the other
        raise StoreError(f"principal name {name!r} starts with {KEY_START!r}, which marks keys")
    return name


def _check_exemption(e: ExemptionInfo) -> None:
    if not isinstance(e.category, str) or not e.category.strip():
        raise StoreError("an exemption needs a category")
    if not isinstance(e.until, datetime):
        raise StoreError(f"exemption for {e.category!r}: 'until' must be a datetime")


def _key_info(row: ApiKeyRow) -> KeyInfo:
    p = row.principal
    return KeyInfo(name=p.name, prefix=row.prefix, created=row.created, revoked=row.revoked,
                   exemptions=tuple(ExemptionInfo(x.category, x.until) for x in p.exemptions))


def _event(row: Any) -> Event:
    return Event(**{f: getattr(row, f) for f in EVENT_FIELDS})


def _egress_row(a: EgressAlert) -> dict[str, Any]:
    if a.event not in ("block", "unblock"):
        raise StoreError(f"an egress alert is a 'block' or an 'unblock', not {a.event!r}")
    if not isinstance(a.client, str) or not a.client:
        raise StoreError(f"egress alert: client {a.client!r} is not an address")
    if not isinstance(a.time, datetime):
        raise StoreError("egress alert: 'time' must be a datetime")
    try:
        details = None if a.details is None else json.dumps(a.details, sort_keys=True,
                                                             default=str)
    except (TypeError, ValueError) as e:
        raise StoreError(f"egress alert details are not JSON ({e})") from None
    return {"time": as_utc(a.time), "event": a.event, "client": a.client,
            "clients": ",".join(a.clients), "kind": a.kind, "scope": a.scope, "key": a.key,
            "dest": a.dest, "reason": a.reason, "observed": a.observed, "limit": a.limit,
            "window_s": a.window_s, "by": a.by, "change": a.change, "details": details}


def _egress_alert(row: EgressAlertRow) -> EgressAlert:
    try:
        details = None if row.details is None else json.loads(row.details)
    except ValueError:  # written by hand or cut short: keep the text rather than fail the list
        details = {"text": row.details}
    return EgressAlert(time=row.time, event=row.event, client=row.client,
                       clients=tuple(c for c in (row.clients or "").split(",") if c),
                       kind=row.kind, scope=row.scope, key=row.key, dest=row.dest,
                       reason=row.reason, observed=row.observed, limit=row.limit,
                       window_s=row.window_s, by=row.by, change=row.change, details=details,
                       id=row.id)


class Store:
    """The SQL store. ``url``: None -> $ASL3_DB, else ``sqlite:///asl3.db``; ``postgresql://``
    and ``postgres://`` use psycopg 3; a plain path is a SQLite file. Tables are created if
    missing. ``self.url`` is the URL for display (password masked)."""

    def __init__(self, url: str | None = None) -> None:
        resolved = resolve_url(url)
        self.url: str = display(resolved)
        self._engine = open_engine(resolved)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        """One transaction; committed on success. Driver errors become one-line StoreErrors
        (the original stays attached as ``__cause__`` for logs)."""
        try:
            with self._sessions.begin() as s:
                yield s
        except SQLAlchemyError as e:
            raise StoreError(f"store {self.url}: {one_line(e)}") from e

    # -- principals and keys ----------------------------------------------------------------
    def add_key(self, name: str, exemptions: Sequence[ExemptionInfo] = ()) -> NewKey:
        """A new key for ``name`` (the principal is created if new; it may hold several keys).
        ``exemptions`` are granted to the principal, replacing earlier ones of the same category."""
        _check_name(name)
        for e in exemptions:
            _check_exemption(e)
        now = _now()
        with self._tx() as s:
            p = s.scalar(select(PrincipalRow).where(PrincipalRow.name == name))
            if p is None:
                p = PrincipalRow(name=name, created=now)
                s.add(p)
            for e in exemptions:
                self._grant(s, p, e, now)
            while True:  # a repeated prefix is a 1 in 2**42 event; it would make `revoke` ambiguous
                key = KEY_START + secrets.token_urlsafe(32)
                prefix = key[:PREFIX_CHARS]
                if s.scalar(select(ApiKeyRow.id).where(ApiKeyRow.prefix == prefix)) is None:
                    break
            s.add(ApiKeyRow(principal=p, key_sha256=key_sha256(key), prefix=prefix, created=now))
        return NewKey(name=name, key=key, prefix=prefix)

    @staticmethod
    def _grant(s: Session, p: PrincipalRow, e: ExemptionInfo, now: datetime) -> None:
        for row in p.exemptions:
            if row.category == e.category:
                row.until = as_utc(e.until)
                return
        p.exemptions.append(ExemptionRow(category=e.category, until=as_utc(e.until), created=now))

    def lookup_key(self, key: str) -> KeyInfo | None:
        """The key's holder and exemptions; None if the key is unknown or revoked."""
        with self._tx() as s:
            row = s.scalar(
                select(ApiKeyRow)
                .where(ApiKeyRow.key_sha256 == key_sha256(key), ApiKeyRow.revoked.is_(None))
                .options(selectinload(ApiKeyRow.principal).selectinload(PrincipalRow.exemptions)))
            return None if row is None else _key_info(row)

    def list_keys(self) -> list[KeyInfo]:
        """Every key, revoked ones included, oldest first (prefixes only: keys are not stored)."""
        with self._tx() as s:
            rows = s.scalars(
                select(ApiKeyRow).order_by(ApiKeyRow.created, ApiKeyRow.id)
                .options(selectinload(ApiKeyRow.principal).selectinload(PrincipalRow.exemptions)))
            return [_key_info(r) for r in rows]

    def revoke(self, name_or_prefix: str) -> int:
        """Revoke every active key of the principal so named, or else the one key with that
        prefix. Returns how many keys this revoked (0 when nothing active matched)."""
        with self._tx() as s:
            pid = s.scalar(select(PrincipalRow.id).where(PrincipalRow.name == name_or_prefix))
            match = (ApiKeyRow.principal_id == pid if pid is not None
                     else ApiKeyRow.prefix == name_or_prefix)
            res = s.execute(update(ApiKeyRow).where(match, ApiKeyRow.revoked.is_(None))
                            .values(revoked=_now()))
            return int(res.rowcount or 0)  # type: ignore[attr-defined]

    def add_exemption(self, name: str, exemption: ExemptionInfo) -> None:
        """Grant an exemption to an existing principal (replacing one of the same category)."""
        _check_exemption(exemption)
        with self._tx() as s:
            p = s.scalar(select(PrincipalRow).where(PrincipalRow.name == name))
            if p is None:
                raise StoreError(f"no principal named {name!r} in {self.url} "
                                 f"(create it with 'asl3 keys add {name}')")
            self._grant(s, p, exemption, _now())

    # -- events -----------------------------------------------------------------------------
    def add_events(self, events: Sequence[Event]) -> None:
        """Insert events in one transaction (one executemany-style statement)."""
        if not events:
            return
        rows = [{f: getattr(e, f) for f in EVENT_FIELDS} for e in events]
        with self._tx() as s:
            s.execute(insert(EventRow), rows)

    def record_dropped(self, count: int, time: datetime) -> None:
        """Note that ``count`` events never reached the store (counted, never silently lost)."""
        if count <= 0:
            return
        with self._tx() as s:
            s.add(DroppedRow(time=time, count=count))

    def dropped_total(self) -> int:
        with self._tx() as s:
            return int(s.scalar(select(func.coalesce(func.sum(DroppedRow.count), 0))) or 0)

    def count_events(self, *, action: str | None = None, stage: str | None = None) -> int:
        q = select(func.count()).select_from(EventRow)
        if action is not None:
            q = q.where(EventRow.action == action)
        if stage is not None:
            q = q.where(EventRow.stage == stage)
        with self._tx() as s:
            return int(s.scalar(q) or 0)

    def events(self, limit: int = 100, *, since: datetime | None = None) -> list[Event]:
        """The newest ``limit`` events (at or after ``since``), newest first."""
        q = select(EventRow).order_by(EventRow.time.desc(), EventRow.id.desc()).limit(limit)
        if since is not None:
            q = q.where(EventRow.time >= since)
        with self._tx() as s:
            return [_event(r) for r in s.scalars(q)]

    def purge_texts(self, older_than: datetime) -> int:
        """Retention: erase the request and response texts of events older than ``older_than``
        (the decision itself is kept). Returns how many events lost their texts."""
        with self._tx() as s:
            res = s.execute(
                update(EventRow)
                .where(EventRow.time < older_than,
                       or_(EventRow.input_text.is_not(None), EventRow.output_text.is_not(None)))
                .values(input_text=None, output_text=None))
            return int(res.rowcount or 0)  # type: ignore[attr-defined]

    # -- egress alerts ----------------------------------------------------------------------
    def add_egress_alerts(self, alerts: Sequence[EgressAlert]) -> None:
        """Insert blocks and unblocks of the egress proxy in one transaction (all or none)."""
        if not alerts:
            return
        rows = [_egress_row(a) for a in alerts]
        with self._tx() as s:
            s.execute(insert(EgressAlertRow), rows)

    def egress_alerts(self, limit: int = 100, *, client: str | None = None,
                      since: datetime | None = None) -> list[EgressAlert]:
        """The newest ``limit`` egress blocks and unblocks (of ``client``, at or after
        ``since``), newest first."""
        q = (select(EgressAlertRow)
             .order_by(EgressAlertRow.time.desc(), EgressAlertRow.id.desc()).limit(limit))
        if client is not None:
            q = q.where(EgressAlertRow.client == client)
        if since is not None:
            q = q.where(EgressAlertRow.time >= as_utc(since))
        with self._tx() as s:
            return [_egress_alert(r) for r in s.scalars(q)]
