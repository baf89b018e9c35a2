"""Blocks and unblocks into the event store (`asl3 egress proxy --store URL`), off the event loop.

The alert file (`--alerts`) and the audit log stay the record the proxy relies on: they are
written first, and they are what a restart replays. The store is for people and tools: one
table (`egress_alerts`) that `asl3 egress alerts`, a dashboard or offline monitoring can query
next to the gateway's decision events, in the same SQLite file or PostgreSQL database.

A database must never delay or undo a block. `submit` only appends to an in-memory queue; one
thread of its own opens the store (a PostgreSQL host that does not answer can take seconds) and
writes what is queued, in order, in one transaction per batch. A failed write is logged with the
reason and counted (`asl3_egress_store_failures_total`), and the records stay queued and are
tried again with growing pauses (1 s up to 30 s) for as long as the proxy runs; at shutdown one
last try is made and whatever still did not reach the store is named in the log (it is in the
alert file). At most `MAX_PENDING` records wait; beyond that new ones are given up, counted as
failures too.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from asl3.store.engine import display, resolve_url
from asl3.store.records import EgressAlert

log = logging.getLogger("asl3.egress")

RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)
MAX_PENDING = 10_000
BATCH = 256


def _float(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _text(v: Any) -> str | None:
    return None if v is None else str(v)


def store_records(record: dict[str, Any]) -> list[EgressAlert]:
    """The store's rows for one proxy record (`{"event": "block" | "unblock", ...}`): a block
    gives one row per client it blocked, an unblock one row; the whole record rides along as
    `details`."""
    when = datetime.fromtimestamp(_float(record.get("time")) or time.time(), timezone.utc)
    details = json.loads(json.dumps(record, default=str))
    if record.get("event") == "block":
        clients = tuple(str(c) for c in record.get("clients") or ())
        return [EgressAlert(
            time=when, event="block", client=c, clients=clients, kind=_text(record.get("kind")),
            scope=_text(record.get("scope")), key=_text(record.get("key")),
            dest=_text(record.get("dest")), reason=_text(record.get("reason")),
            observed=_float(record.get("observed")), limit=_float(record.get("limit")),
            window_s=_float(record.get("window_s")), details=details) for c in clients]
    if record.get("event") == "unblock":
        was = record.get("was") if isinstance(record.get("was"), dict) else {}
        client = str(record.get("client"))
        return [EgressAlert(
            time=when, event="unblock", client=client,
            clients=tuple(str(c) for c in was.get("clients") or ()) or (client,),
            kind=_text(was.get("kind")), scope=_text(was.get("scope")),
            key=_text(was.get("key")), dest=_text(was.get("dest")),
            reason=_text(record.get("reason")), observed=_float(was.get("observed")),
            limit=_float(was.get("limit")), window_s=_float(was.get("window_s")),
            by=_text(record.get("by")), change=_text(record.get("change")), details=details)]
    return []


class AlertStore:
    """Writes the proxy's blocks and unblocks to a Store on a thread of its own (see the module
    docstring). `url` is resolved at once, exactly as the gateway's store resolves it
    (`asl3.store.engine.resolve_url`), so a malformed URL stops the proxy from starting; a
    database that cannot be reached does not."""

    def __init__(self, url: str, *, metrics: Any = None,
                 open_store: Callable[[str], Any] | None = None) -> None:
        self.url = display(resolve_url(url))  # StoreError, one line, for a malformed URL
        self._raw = url
        self._metrics = metrics
        self._open_store = open_store
        self._queue: deque[EgressAlert] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._store: Any = None
        self.failures = 0   # failed attempts (and records given up when the queue overflowed)
        self.written = 0    # rows written

    @property
    def pending(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="asl3-egress-alert-store",
                                                daemon=True)
                self._thread.start()

    def submit(self, record: dict[str, Any]) -> None:
        """Queue one proxy record; never blocks (safe on the event loop), never raises."""
        try:
            rows = store_records(record)
        except Exception as e:  # a record the store cannot take must not break a block
            log.error("egress: alert not queued for store %s: %s", self.url, e)
            self._failed()
            return
        with self._cond:
            room = max(0, MAX_PENDING - len(self._queue))
            self._queue.extend(rows[:room])
            self._cond.notify_all()
        if len(rows) > room:  # only the writer takes from the queue's head: drop the newest
            over = len(rows) - room
            log.error("egress: %d alert(s) for store %s given up: %d are already waiting (they "
                      "are in the alert file)", over, self.url, MAX_PENDING)
            self._failed(over)
        self._gauge()

    def close(self, timeout: float = 5.0) -> None:
        """Try once more to write what is queued, then stop (waits up to `timeout` s)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        if self._queue:
            log.error("egress: %d alert(s) did not reach store %s (they are in the alert file "
                      "and the audit log, when configured)", len(self._queue), self.url)

    # -- the writer thread ----------------------------------------------------------------
    def _failed(self, n: int = 1) -> None:
        self.failures += n
        if self._metrics is not None:
            self._metrics.store_failures.inc(n)

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.store_pending.set(len(self._queue))

    def _open(self) -> Any:
        if self._store is None:
            if self._open_store is not None:
                self._store = self._open_store(self._raw)
            else:
                from asl3.store import Store

                self._store = Store(self._raw)
            log.info("egress: blocks and unblocks also go to store %s", self.url)
        return self._store

    def _run(self) -> None:
        try:  # at once, so that a store that cannot be opened is in the log before any block
            self._open()
        except Exception as e:
            log.error("egress: cannot open store %s: %s; blocks and unblocks go to the alert "
                      "file (and audit log) only until it opens (tried again with each one)",
                      self.url, e)
        attempt = 0
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    break
                batch = [self._queue[i] for i in range(min(BATCH, len(self._queue)))]
                closing = self._closing
            try:
                self._open().add_egress_alerts(batch)
            except Exception as e:
                self._failed()
                log.error("egress: writing %d alert(s) to store %s failed (attempt %d; the block "
                          "holds, the alert file has it): %s", len(batch), self.url, attempt + 1,
                          e)
                if closing:
                    break
                wait = RETRY_S[min(attempt, len(RETRY_S) - 1)]
                attempt += 1
                with self._cond:
                    self._cond.wait_for(lambda: self._closing, timeout=wait)
                continue
            attempt = 0
            with self._cond:
                for _ in batch:  # only this thread takes from the head: these are the batch
                    self._queue.popleft()
            self.written += len(batch)
            self._gauge()
        if self._store is not None:
            try:
                self._store.close()
            except Exception as e:
                log.debug("egress: closing store %s: %r", self.url, e)
