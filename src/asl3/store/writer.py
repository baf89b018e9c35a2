"""``EventWriter``: decision events reach the database without ever slowing a request.

The request path only does ``queue.put_nowait``; one background thread takes events off the
queue in batches and inserts each batch in one transaction. Nothing is lost without being
counted: an event that finds the queue full, or whose batch still fails after a few retries
(database down), is counted as dropped, reported through ``on_drop`` (the gateway's metric),
and the count itself is written to the store's ``dropped_events`` table as soon as the database
takes writes again.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

from asl3.store.db import Store
from asl3.store.records import Event

log = logging.getLogger("asl3.store")

_WAKE = object()  # put by close() so the thread need not wait out its poll interval


class EventWriter:
    """Writes never block the request path: a bounded ``queue.Queue`` and one background thread
    that batches inserts. ``submit()`` never blocks: if the queue is full the event is counted as
    dropped (and the drop count is itself written to the store as a ``dropped_events`` row by
    the writer thread, and reported through ``on_drop`` so the gateway exports a metric);
    ``close()`` drains."""

    RETRIES = 4  # attempts per batch before its events count as dropped
    BACKOFF_S = 0.25  # wait before the first retry; doubled for each further one
    POLL_S = 0.5  # how often an idle writer wakes to record pending drop counts
    LINGER_S = 0.05  # after the first event, wait this long for more to share its transaction

    def __init__(self, store: Store, maxsize: int = 10_000, batch: int = 256,
                 on_drop: Callable[[int], None] | None = None) -> None:
        self._store = store
        self._queue: queue.Queue[object] = queue.Queue(maxsize)
        self._batch = max(1, batch)
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dropped = 0  # ever dropped
        self._unrecorded = 0  # dropped, not yet in the store's dropped_events table
        self._written = 0
        self._drop_retry_at = 0.0

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    @property
    def written(self) -> int:
        return self._written

    def start(self) -> None:
        """Start the writer thread (once; events submitted before are kept and written)."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="asl3-event-writer", daemon=True)
            self._thread.start()

    def submit(self, event: Event) -> bool:
        """Queue ``event``; False (and counted as dropped) when the queue is full or the writer
        is closed. Never blocks, so it is safe on an asyncio event loop."""
        with self._lock:  # held for a put_nowait only; makes submit-vs-close race free
            if not self._closed:
                try:
                    self._queue.put_nowait(event)
                    return True
                except queue.Full:
                    pass
            closed = self._closed
        if closed:
            log.warning("event %s submitted after the event writer closed: counted as dropped",
                        event.request_id)
        self._drop(1)
        return False

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, record any drop count, and stop the thread (waits up to
        ``timeout`` seconds). Later submits are dropped."""
        with self._lock:
            self._closed = True
        self.start()  # a never-started writer still drains what it was given
        self._stop.set()
        with contextlib.suppress(queue.Full):  # then the thread is busy and sees the flag itself
            self._queue.put_nowait(_WAKE)
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("event writer did not finish within %.0f s: %d events still queued",
                      timeout, self.pending)

    # -- the writer thread ----------------------------------------------------------------
    def _drop(self, n: int) -> None:
        with self._lock:
            self._dropped += n
            self._unrecorded += n
        if self._on_drop is not None:
            try:
                self._on_drop(n)
            except Exception:  # a metrics hook must never break the writer or the request
                log.exception("on_drop callback failed")

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch:
                self._write(batch)
            self._record_drops()
            if self._stop.is_set() and self._queue.empty():
                break
        self._record_drops(final=True)

    def _take(self) -> list[Event]:
        """Up to ``batch`` events: wait for the first one, then take what is already there."""
        try:
            first = self._queue.get(timeout=self.POLL_S)
        except queue.Empty:
            return []
        items = [first]
        # Light traffic would otherwise cost one transaction (and its CPU, on the request
        # path's cores) per event: linger briefly so events share a commit.
        deadline = time.monotonic() + (0.0 if self._stop.is_set() else self.LINGER_S)
        while len(items) < self._batch:
            try:
                wait = deadline - time.monotonic()
                items.append(self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
            if items[-1] is _WAKE:
                deadline = 0.0  # closing: write what is there now
        return [x for x in items if x is not _WAKE]  # type: ignore[misc]

    def _write(self, batch: list[Event]) -> None:
        for attempt in range(1, self.RETRIES + 1):
            try:
                self._store.add_events(batch)
            except Exception as e:
                if attempt == self.RETRIES:
                    log.error("writing %d events failed %d times (%s): counted as dropped",
                              len(batch), attempt, e, exc_info=True)
                    break
                delay = self.BACKOFF_S * 2 ** (attempt - 1)
                log.warning("writing %d events failed (attempt %d of %d, retry in %.2f s): %s",
                            len(batch), attempt, self.RETRIES, delay, e)
                time.sleep(delay)
            else:
                with self._lock:
                    self._written += len(batch)
                return
        self._drop(len(batch))

    def _record_drops(self, final: bool = False) -> None:
        """Write the drop count not yet in the store; on failure keep it for the next try
        (every ``POLL_S`` at most once a second), and at close retry like a batch."""
        attempts = self.RETRIES if final else 1
        for attempt in range(1, attempts + 1):
            with self._lock:
                n = self._unrecorded
            if n == 0 or (not final and time.monotonic() < self._drop_retry_at):
                return
            try:
                self._store.record_dropped(n, datetime.now(timezone.utc))
            except Exception as e:
                self._drop_retry_at = time.monotonic() + 1.0
                log.warning("recording %d dropped events failed (kept for later): %s", n, e)
                if attempt < attempts:
                    time.sleep(self.BACKOFF_S * 2 ** (attempt - 1))
                continue
            with self._lock:
                self._unrecorded -= n
            return
        if final:
            log.error("%d dropped events could not be recorded in the store", self._unrecorded)
