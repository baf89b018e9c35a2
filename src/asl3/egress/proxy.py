"""The enforcing egress proxy: an asyncio forward proxy for HTTP and HTTPS (CONNECT tunnels).

Every outbound connection of the secure environment goes through it (the kernel rules of
`rules.py` refuse the rest). A client is its source IP address: hosts behind one NAT share one
identity, so give each secure host its own address. Per connection:

1. The request head is read under `header_timeout`, lines at most `max_line` bytes, at most
   `max_headers` header lines; anything else is answered 400 (408 on time-out) and closed.
   `CONNECT host:port` opens a tunnel; `GET http://host[:port]/path` (any method) is forwarded
   with `Connection: close` (one request per connection); https:// URLs must use CONNECT.
2. A blocked client gets 403 with the block's reason; a destination off the allowlist 403.
3. Outbound bytes (client -> destination) are admitted by the detector one chunk at a time,
   before the chunk is sent (hard budgets: the chunk that would cross one is not sent and blocks
   the client). With a rate (`--rate`/`--client-rate`) chunks are at most 64 KiB and each waits
   for its tokens (the client's bucket, then the global one). Then the chunk is written in full:
   a destination that stops reading stops the client too (TCP backpressure), nothing is dropped.
   Inbound bytes are relayed unshaped and uncounted by the budgets, with the same backpressure.
4. A half-close is passed on (EOF -> shutdown(SHUT_WR)) and the tunnel lives until both sides
   ended; a tunnel with no byte either way for `idle_timeout`, or a peer that stops reading for
   that long, is closed.

The relay works on the raw non-blocking sockets, not on asyncio streams (whose buffering cost
about three copies per byte): a read goes into a buffer (the proxy's one 1 MiB buffer when the
direction is not shaped: it is filled and sent before anything else runs, so it can be shared),
then is sent. Unshaped, a chunk is up to 1 MiB. With `splice` (`--splice`, Linux), an unshaped
direction that has moved `SPLICE_AFTER` bytes (a bulk transfer) switches to `splice(2)` through a
pipe of up to 1 MiB: socket -> pipe, then the detector admits the bytes now in the pipe (counted
as before, per chunk), then pipe -> socket, with no copy through user space; small tunnels never
hold a pipe, and one whose pipe cannot be made (out of file descriptors) keeps copying. It is off
by default: on loopback it cut the proxy's CPU per GB by about a fifth but the receiver paid
more for the spliced segments, so transfers were not faster. The proxy spends about 90% of its
time in send/recv system calls; the command line runs it on uvloop when installed, which makes
little difference to bulk throughput.

On an alert (budget, or a rate anomaly from the once-per-`interval` baseline tick) the clients
it names are blocked: their open tunnels are aborted, new ones refused; the alert is appended
to the JSONL alert file at once, then to the audit log when one is configured (`egress.block`),
and POSTed to the webhook in the background (2 s time-out; the relay never waits for either).
With a store (`store_url`, `--store`) every block and unblock is also queued for the event
store's `egress_alerts` table, written by a thread of its own (`alertstore.py`): a database
that is slow or down delays and undoes nothing. Blocks last until an approved change lifts
them: see `admin.py` (`POST /unblock`).

With a state file (`state_path`, `--state`) the detector's window counts, baselines and open
alerts are loaded at start and saved after every baseline tick and at a clean shutdown
(atomically, on a worker thread: `state.py`), so a restart neither resets a 24 h budget nor
starts a new alert-free warm-up. A state file that is missing starts empty; one that cannot be
read or does not check out stops the start with one line naming it, unless `reset_state`
(`--reset-state`) discards it (moved aside, logged, and written to the audit log when one is
configured). A crash loses at most the bytes counted since the last tick's save.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import re
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from asl3.egress.allow import Allowlist
from asl3.egress.bucket import Limiter
from asl3.egress.detect import Alert, Detector, StateError
from asl3.errors import EgressError

log = logging.getLogger("asl3.egress")

CHUNK = 64 * 1024         # outbound reads when shaped (each waits for its tokens)
BIG_CHUNK = 1024 * 1024   # reads, and the pipe of a spliced direction, when nothing is shaped
SPLICE_AFTER = 1024 * 1024  # an unshaped direction switches to splice(2) after this many bytes
MAX_HEAD_BUFFER = 256 * 1024  # unterminated request-head bytes held before refusing the line
HAVE_SPLICE = sys.platform.startswith("linux") and hasattr(os, "splice")
_SPLICE_FLAGS = (os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK) if HAVE_SPLICE else 0
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_STATUS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
           502: "Bad Gateway", 504: "Gateway Timeout"}
_TOKEN = re.compile(r"[A-Z]{3,16}")
_HOSTNAME = re.compile(r"[A-Za-z0-9_\-.]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")
_HOP = {"proxy-connection", "proxy-authorization", "connection", "keep-alive", "te",
        "trailer", "upgrade"}


class BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class Blocked(Exception):
    pass


@dataclass
class ProxyConfig:
    host: str = "127.0.0.1"
    port: int = 3128
    rate: float | None = None            # bytes/s enclave-wide; None/inf = unlimited
    burst: float | None = None
    client_rate: float | None = None     # bytes/s per client
    client_burst: float | None = None
    budgets: list[tuple[int, float]] = field(default_factory=list)  # (bytes, window s)
    allow: list[str] = field(default_factory=list)
    idle_timeout: float = 300.0
    header_timeout: float = 10.0
    connect_timeout: float = 10.0
    max_line: int = 8192
    max_headers: int = 100
    interval: float = 1.0
    n_sigma: float = 6.0
    floor_bps: float = 50e6
    warmup: int = 60
    alerts_path: str | None = None
    webhook: str | None = None
    metrics_host: str | None = None
    metrics_port: int = 0
    safeguards: str | None = None    # change-management directory: unblocks need a change
    trusted: list[Any] = field(default_factory=list)  # PublicIdentity: pin change.json's signer
    audit_dir: str | None = None
    audit_identity: Any = None                           # Identity signing audit entries
    splice: bool = False             # bulk unshaped directions through splice(2) (Linux)
    store_url: str | None = None     # also write blocks and unblocks to this event store
    state_path: str | None = None    # detector state (budgets, baselines) kept across restarts
    reset_state: bool = False        # discard the state file at start instead of loading it


def parse_authority(target: str) -> tuple[str, int]:
    """'host:port' of a CONNECT line -> (host, port), or BadRequest."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadRequest(400, f"CONNECT target {target[:100]!r} is not host:port")
    if not _HOSTNAME.fullmatch(host) or (":" in host and not host.startswith("[")):
        raise BadRequest(400, f"CONNECT host {host[:100]!r} is not a host name or address")
    return host.strip("[]"), int(port)


def parse_head(lines: list[bytes]) -> tuple[str, str, int, bytes | None]:
    """(method, host, port, head to send upstream or None for CONNECT) from request lines."""
    try:
        text = [ln.decode("ascii").rstrip("\r\n") for ln in lines]
    except UnicodeDecodeError:
        raise BadRequest(400, "request head is not ASCII") from None
    parts = text[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or parts[2] not in ("HTTP/1.1",
                                                                            "HTTP/1.0"):
        raise BadRequest(400, f"malformed request line {text[0][:100]!r} (expected "
                              "'CONNECT host:port HTTP/1.1' or 'GET http://host/path HTTP/1.1')")
    method, target, version = parts
    headers = []
    for h in text[1:]:
        name, sep, value = h.partition(":")
        if not sep or not name or name != name.strip() or " " in name:
            raise BadRequest(400, f"malformed header line {h[:100]!r}")
        headers.append((name, value.strip()))
    if method == "CONNECT":
        host, port = parse_authority(target)
        return method, host, port, None
    url = urlsplit(target)
    if url.scheme != "http" or not url.hostname:
        raise BadRequest(400, f"{method} {target[:100]!r}: a proxy request needs an absolute "
                              "http:// URL (use CONNECT for https)")
    try:
        port = url.port or 80
    except ValueError:
        raise BadRequest(400, f"bad port in {target[:100]!r}") from None
    if not _HOSTNAME.fullmatch(url.hostname) and not _HOSTNAME.fullmatch(f"[{url.hostname}]"):
        raise BadRequest(400, f"bad host in {target[:100]!r}")
    path = url.path or "/"
    if url.query:
        path += "?" + url.query
    out = [f"{method} {path} {version}"]
    names = {n.lower() for n, _ in headers}
    if "host" not in names:
        out.append(f"Host: {url.netloc}")
    out += [f"{n}: {v}" for n, v in headers if n.lower() not in _HOP]
    out.append("Connection: close")
    return method, url.hostname, port, ("\r\n".join(out) + "\r\n\r\n").encode("ascii")


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, write: bool) -> None:
    """Wait until fd is readable (or writable); one future, no task."""
    fut = loop.create_future()

    def done() -> None:
        if not fut.done():
            fut.set_result(None)

    if write:
        loop.add_writer(fd, done)
    else:
        loop.add_reader(fd, done)
    try:
        await fut
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


def _make_pipe() -> tuple[int, int, int] | None:
    """(read fd, write fd, capacity) of a non-blocking pipe of up to BIG_CHUNK, or None."""
    try:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        cap = fcntl.fcntl(w, _F_SETPIPE_SZ, BIG_CHUNK)
    except OSError:  # over the user's pipe quota: the default size still works
        try:
            cap = fcntl.fcntl(w, _F_GETPIPE_SZ)
        except OSError:
            cap = 65536
    return r, w, cap


class _Tunnel:
    def __init__(self, client: str, dest: str) -> None:
        self.client, self.dest = client, dest
        self.tasks: list[asyncio.Task[Any]] = []
        self.last = time.monotonic()
        self.stalled = 0.0  # when a write began waiting for the peer to read
        self.closed = False

    def abort(self) -> None:
        """Stop both directions now; the relay closes the sockets once they have stopped."""
        self.closed = True
        for t in self.tasks:
            t.cancel()


class EgressProxy:
    def __init__(self, config: ProxyConfig, *, detector: Detector | None = None,
                 limiter: Limiter | None = None, clock: Callable[[], float] = time.monotonic,
                 registry: Any = None) -> None:
        self.cfg = config
        self.allow = Allowlist(config.allow)
        self.detector = detector or Detector(
            config.budgets, interval=config.interval, n_sigma=config.n_sigma,
            floor_bps=config.floor_bps, warmup=config.warmup, clock=clock)
        self.limiter = limiter or Limiter(config.rate, config.burst, config.client_rate,
                                          config.client_burst)
        self.shaped = self.limiter.global_bucket is not None or self.limiter.client_rate is not None
        self.blocked: dict[str, Alert] = {}
        self.blocked_since: dict[str, float] = {}   # client -> wall-clock time of its block
        self.used_changes: dict[str, float] = {}    # unblock change id -> when it was used
        self.conns: dict[str, set[_Tunnel]] = {}
        self.open_connections = 0          # accepted client sockets not yet closed
        self.splice = HAVE_SPLICE and config.splice
        self._buf = memoryview(bytearray(BIG_CHUNK))  # shared: filled and sent synchronously
        self._listeners: list[socket.socket] = []
        self._servers: list[asyncio.base_events.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._nonces: dict[str, float] = {}
        from asl3.egress.metrics import EgressMetrics

        self.metrics = EgressMetrics(registry)
        self.alert_store: Any = None
        if config.store_url:
            from asl3.egress.alertstore import AlertStore

            self.alert_store = AlertStore(config.store_url, metrics=self.metrics)
        self._state_file: Any = None
        self._state_saving = False

    # -- life cycle -----------------------------------------------------------------------
    async def start(self) -> None:
        await self._load_state()  # a bad state file stops the start before anything listens
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.cfg.host or None, self.cfg.port,
                                       type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        port = self.cfg.port
        try:
            for family, kind, proto, _, addr in infos:
                s = socket.socket(family, kind, proto)
                self._listeners.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((addr[0], port, *addr[2:]))
                s.listen(1024)
                s.setblocking(False)
                port = s.getsockname()[1]  # port 0: every address gets the first one's port
        except OSError:
            for s in self._listeners:
                s.close()
            self._listeners.clear()
            raise
        self.cfg.port = port
        used, still_blocked = self._replay_record()
        self.used_changes.update(used)
        for client, rec in still_blocked.items():  # a restart must not lift a block
            self.blocked[client] = Alert.from_dict(rec)
            self.blocked_since[client] = float(rec.get("time") or time.time())
        if still_blocked:
            self.metrics.blocked.set(len(self.blocked))
            log.warning("egress: %d client(s) still blocked from before this start: %s",
                        len(still_blocked), ", ".join(sorted(still_blocked)))
        self.detector.reconcile(self.blocked)  # the record decides who is blocked, not the state
        if self.alert_store is not None:
            self.alert_store.start()
        if self.cfg.metrics_host:
            from asl3.egress.admin import serve_admin

            msrv = await serve_admin(self, self.cfg.metrics_host, self.cfg.metrics_port)
            self._servers.append(msrv)
            self.cfg.metrics_port = msrv.sockets[0].getsockname()[1]
        for s in self._listeners:
            self._spawn(self._accept(s))
        self._spawn(self._ticker())
        self._spawn(self._watchdog())

    async def stop(self) -> None:
        for s in self._servers:
            s.close()
        for tunnels in list(self.conns.values()):
            for t in list(tunnels):
                t.abort()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for ls in self._listeners:
            ls.close()
        if self._state_file is not None:  # a clean shutdown keeps everything counted until now
            await self._save_state(self.detector.to_state(time.time()), self._state_file.next())
        if self.alert_store is not None:
            await asyncio.to_thread(self.alert_store.close)
        for s in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.wait_closed(), 1)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _accept(self, lsock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(lsock)
            except (ConnectionAbortedError, InterruptedError):
                continue
            except OSError as e:
                if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                log.error("egress: cannot accept a connection (%s); pausing 0.1 s", e.strerror)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._spawn(self._handle(conn, peer))

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.interval)
            for alert in self.detector.tick():
                self.on_alert(alert)
            if self._state_file is not None and not self._state_saving:
                # the snapshot is taken here, on the loop, so it is consistent; the disk write
                # (and its fsync) runs on a worker thread. One save at a time: a slow disk
                # skips ticks rather than queueing writes.
                self._state_saving = True
                self._spawn(self._save_state(self.detector.to_state(time.time()),
                                             self._state_file.next()))

    # -- state across restarts --------------------------------------------------------------
    async def _save_state(self, state: dict[str, Any], seq: int) -> None:
        try:
            await asyncio.to_thread(self._state_file.save, state, seq)
        except Exception as e:  # the proxy keeps enforcing; the next tick tries again
            self.metrics.state_failures.inc()
            log.error("egress: cannot save the detector state to %s: %s", self.cfg.state_path, e)
        finally:
            self._state_saving = False

    async def _load_state(self) -> None:
        """Load the detector's state from `state_path`, or with `reset_state` discard it.

        Missing file: a first start, budgets and baselines start empty (logged). A file that
        cannot be read or does not check out: EgressError naming it, so the proxy does not
        start; silently starting empty would hand out fresh budgets to whoever can corrupt
        the file. `--reset-state` is the operator's deliberate way past that."""
        path = self.cfg.state_path
        if not path:
            return
        from asl3.egress.state import StateFile, read_state

        if self.cfg.reset_state:
            await self._reset_state(path)
            self._state_file = StateFile(path)
            return
        hint = "fix or move it, or start with --reset-state to discard it"
        try:
            state = read_state(path)
        except EgressError as e:  # unreadable, not JSON, no such directory
            raise EgressError(f"{e}; {hint}") from None
        if state is None:
            log.info("egress: no state file %s yet: budgets and baselines start empty; it is "
                     "written from the first tick on", path)
            self._state_file = StateFile(path)
            return
        try:
            self.detector.load_state(state, time.time())
        except StateError as e:
            raise EgressError(f"state file {path} is not a valid egress detector state ({e}); "
                              f"{hint}") from None
        # only now: a proxy that failed to load must never save over the file it refused
        self._state_file = StateFile(path)
        saved = state.get("saved_at")
        age = f"{time.time() - saved:.0f} s ago" if isinstance(saved, (int, float)) else "?"
        log.info("egress: detector state restored from %s (saved %s): %d client(s) with "
                 "budget use, %d baseline(s), %d open alert(s)", path, age,
                 len(self.detector._counters),
                 len(self.detector._clients) + len(self.detector._dests),
                 len(self.detector.open))

    async def _reset_state(self, path: str) -> None:
        """`--reset-state`: move the old file aside (it may be evidence), warn, and record the
        reset in the audit log when one is configured. A reset that the configured audit log
        cannot record does not happen: it hands every client a fresh budget."""
        import hashlib

        moved: str | None = None
        digest: str | None = None
        if os.path.lexists(path):
            try:
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            except OSError:
                digest = None
            moved = f"{path}.reset-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        if self.cfg.audit_dir and self.cfg.audit_identity is not None:  # on record first
            from asl3.security.audit import AuditLog

            try:
                await asyncio.to_thread(
                    AuditLog(self.cfg.audit_dir).append, self.cfg.audit_identity,
                    "egress.state_reset", path,
                    {"path": path, "moved_to": moved, "sha256": digest, "time": time.time()})
            except Exception as e:
                raise EgressError(f"--reset-state: cannot record the reset in the audit log in "
                                  f"{self.cfg.audit_dir}: {e}") from None
        if moved:
            try:
                os.replace(path, moved)
            except OSError as e:
                raise EgressError(f"--reset-state: cannot move the state file {path} aside: "
                                  f"{e.strerror or e}") from None
        log.warning("egress: --reset-state: the detector state %s was discarded%s; budgets and "
                    "baselines start empty", path, f" (kept as {moved})" if moved else
                    " (there was none)")

    @property
    def open_tunnels(self) -> int:
        return sum(len(s) for s in self.conns.values())

    # -- blocking -------------------------------------------------------------------------
    def on_alert(self, alert: Alert) -> None:
        new = [c for c in alert.clients if c not in self.blocked]
        now = time.time()
        for c in alert.clients:
            if c not in self.blocked:
                self.blocked[c] = alert
                self.blocked_since[c] = now
            for t in list(self.conns.get(c, ())):
                t.abort()
        if not new:
            return
        self.metrics.blocks.labels(alert.kind).inc()
        self.metrics.blocked.set(len(self.blocked))
        record = {"event": "block", "time": now, **alert.to_dict(), "clients": new}
        log.warning("egress: blocked %s: %s", ", ".join(new), alert.reason)
        self._append_alert(record)  # at once: the block is on record before anyone sees it
        if self.alert_store is not None:
            self.alert_store.submit(record)  # a queue append; a thread writes the database
        self._spawn(self._record(record, "egress.block", ",".join(new), alerts=False))

    def unblock(self, client: str, by: str, reason: str, extra: dict[str, Any] | None = None,
                ) -> dict[str, Any]:
        """Lift client's block now (the caller has checked that it may); returns the record,
        which `record_unblock` writes. Only this client: others blocked by the same destination
        alert stay blocked until their own unblock (the alert's baseline resumes learning)."""
        alert = self.blocked.pop(client, None)
        self.blocked_since.pop(client, None)
        self.detector.close(client)
        self.metrics.blocked.set(len(self.blocked))
        record = {"event": "unblock", "time": time.time(), "client": client, "by": by,
                  "reason": reason, "was": alert.to_dict() if alert else None, **(extra or {})}
        log.warning("egress: %s unblocked by %s: %s", client, by, reason)
        return record

    async def record_unblock(self, record: dict[str, Any]) -> None:
        """Write an unblock to the alert file and the audit log, and wait until it is there
        (the change id it used is read back from them at the next start)."""
        if self.alert_store is not None:
            self.alert_store.submit(record)
        await self._record(record, "egress.unblock", record["client"])

    def _append_alert(self, record: dict[str, Any]) -> None:
        if not self.cfg.alerts_path:
            return
        try:
            with open(self.cfg.alerts_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        except OSError as e:
            log.error("egress: cannot append to %s: %s", self.cfg.alerts_path, e)

    async def _record(self, record: dict[str, Any], action: str, subject: str, *,
                      alerts: bool = True) -> None:
        if alerts and self.cfg.alerts_path:
            await asyncio.to_thread(self._append_alert, record)
        if self.cfg.audit_dir and self.cfg.audit_identity is not None:
            try:
                from asl3.security.audit import AuditLog

                details = json.loads(json.dumps(record, default=str))
                await asyncio.to_thread(AuditLog(self.cfg.audit_dir).append,
                                        self.cfg.audit_identity, action, subject, details)
            except Exception as e:  # the block holds whether or not the log can be written
                log.error("egress: audit log append failed: %s", e)
        if self.cfg.webhook and record["event"] == "block":
            try:
                import httpx

                async with httpx.AsyncClient(timeout=2.0) as c:
                    await c.post(self.cfg.webhook, json=record)
            except Exception as e:
                log.error("egress: webhook %s failed: %s", self.cfg.webhook, e)

    def _replay_record(self) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
        """From the alert file and the audit log: the unblock change ids already used (so a
        restart does not make an approved unblock usable twice) and the clients whose block
        was never lifted (so a restart, or a crash an attacker provokes, does not lift it).
        A block open in either record counts: fail closed."""
        used: dict[str, float] = {}
        blocked: dict[str, dict[str, Any]] = {}

        def replay(records: Any) -> None:
            open_: dict[str, dict[str, Any]] = {}
            for rec in records:
                if not isinstance(rec, dict):
                    continue
                if rec.get("event") == "unblock":
                    if isinstance(rec.get("change"), str):
                        used.setdefault(rec["change"], float(rec.get("time") or 0))
                    open_.pop(str(rec.get("client")), None)
                elif rec.get("event") == "block":
                    for c in rec.get("clients") or ():
                        open_[str(c)] = rec
            for c, rec in open_.items():
                blocked.setdefault(c, rec)

        if self.cfg.alerts_path and os.path.exists(self.cfg.alerts_path):
            def lines() -> Any:
                with open(self.cfg.alerts_path, encoding="utf-8", errors="replace") as f:
                    for line in f:
                        with contextlib.suppress(ValueError):
                            yield json.loads(line)
            replay(lines())
        if self.cfg.audit_dir and os.path.exists(os.path.join(self.cfg.audit_dir, "audit")):
            from asl3.security.audit import AuditLog

            try:
                replay(e.details for e in AuditLog(self.cfg.audit_dir).entries()
                       if e.action in ("egress.block", "egress.unblock"))
            except Exception as e:
                log.error("egress: cannot read the audit log for blocks and used unblock "
                          "changes: %s", e)
        return used, blocked

    # -- connections ----------------------------------------------------------------------
    async def _reply(self, sock: socket.socket, status: int, reason: str) -> None:
        body = f"asl3 egress: {reason}\n".encode()
        head = (f"HTTP/1.1 {status} {_STATUS.get(status, 'Error')}\r\nContent-Type: text/plain"
                f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.get_running_loop().sock_sendall(sock, head + body), 2)
        self.metrics.requests.labels(str(status)).inc()

    async def _read_head(self, sock: socket.socket) -> tuple[list[bytes], bytes]:
        """The request head's lines and the bytes that followed it."""
        loop = asyncio.get_running_loop()
        buf = bytearray()
        pos = 0
        lines: list[bytes] = []
        too_long = BadRequest(400, f"request line longer than {self.cfg.max_line} bytes")
        while True:
            while (nl := buf.find(b"\n", pos)) >= 0:
                line = bytes(buf[pos:nl + 1])
                pos = nl + 1
                if len(line) > self.cfg.max_line:
                    raise too_long
                if line in (b"\r\n", b"\n"):
                    if not lines:
                        continue  # tolerate a stray empty line before the request (RFC 9112)
                    return lines, bytes(buf[pos:])
                lines.append(line)
                if len(lines) > self.cfg.max_headers + 1:
                    raise BadRequest(400, f"more than {self.cfg.max_headers} header lines")
            if len(buf) - pos > max(MAX_HEAD_BUFFER, self.cfg.max_line):
                raise too_long
            del buf[:pos]
            pos = 0
            data = await loop.sock_recv(sock, 65536)
            if not data:
                raise BadRequest(400, "connection closed before the request head ended"
                                 if lines or buf else "")
            buf += data

    async def _open(self, host: str, port: int) -> socket.socket:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        last: OSError | None = None
        for family, kind, proto, _, addr in infos:
            s = socket.socket(family, kind, proto)
            try:
                s.setblocking(False)
                await loop.sock_connect(s, addr)
            except OSError as e:
                s.close()
                last = e
                continue
            except BaseException:
                s.close()
                raise
            with contextlib.suppress(OSError):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s
        raise last or OSError(f"no address for {host}")

    async def _handle(self, sock: socket.socket, peer: Any) -> None:
        self.open_connections += 1
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        dsock: socket.socket | None = None
        try:
            try:
                lines, rest = await asyncio.wait_for(self._read_head(sock),
                                                     self.cfg.header_timeout)
                method, host, port, head = parse_head(lines)
            except asyncio.TimeoutError:
                return await self._reply(sock, 408, "request head not received in "
                                         f"{self.cfg.header_timeout:g} s")
            except BadRequest as e:
                if e.reason:
                    await self._reply(sock, e.status, e.reason)
                return None
            dest = f"{host}:{port}"
            if client in self.blocked:
                return await self._reply(sock, 403, f"client {client} is blocked: "
                                         f"{self.blocked[client].reason}")
            if not self.allow.allows(host, port):
                return await self._reply(sock, 403, f"destination {dest} is not on the "
                                         "allowlist")
            try:
                dsock = await asyncio.wait_for(self._open(host, port), self.cfg.connect_timeout)
            except asyncio.TimeoutError:
                return await self._reply(sock, 504, f"connecting to {dest} timed out")
            except OSError as e:
                return await self._reply(sock, 502, f"cannot connect to {dest}: "
                                         f"{e.strerror or e}")
            self.metrics.requests.labels("200").inc()
            if head is None:
                await asyncio.get_running_loop().sock_sendall(
                    sock, b"HTTP/1.1 200 Connection established\r\n\r\n")
            await self._relay(client, dest, sock, dsock, (head or b"") + rest)
        except Exception as e:  # never let one connection take the proxy down
            log.debug("egress: connection from %s ended: %r", client, e)
        finally:
            for s in (sock, dsock):
                if s is not None:
                    s.close()
            self.open_connections -= 1

    async def _relay(self, client: str, dest: str, csock: socket.socket, dsock: socket.socket,
                     first: bytes) -> None:
        t = _Tunnel(client, dest)
        self.conns.setdefault(client, set()).add(t)
        self.metrics.tunnels.inc()
        try:
            t.tasks = [asyncio.ensure_future(self._pump(t, csock, dsock, outbound=True,
                                                        first=first)),
                       asyncio.ensure_future(self._pump(t, dsock, csock, outbound=False))]
            if t.closed or client in self.blocked:  # blocked between the check and now
                t.abort()
            await asyncio.wait(t.tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in t.tasks:  # the sockets are closed (by _handle) only once both stopped
                task.cancel()
            if t.tasks:
                await asyncio.wait(t.tasks)
            for task in t.tasks:
                if not task.cancelled() and task.exception() is not None:
                    log.debug("egress: tunnel %s -> %s: %r", client, dest, task.exception())
            self.conns[client].discard(t)
            if not self.conns[client]:
                del self.conns[client]
            self.metrics.tunnels.dec()

    def _admit(self, t: _Tunnel, n: int) -> None:
        alert = self.detector.admit(t.client, t.dest, n)
        if alert is not None:
            self.on_alert(alert)
            raise Blocked(alert.reason)

    async def _pump(self, t: _Tunnel, src: socket.socket, dst: socket.socket, *,
                    outbound: bool, first: bytes = b"") -> None:
        """Relay one direction. Idle and stalled tunnels are closed by the watchdog, which
        costs nothing per chunk (a wait_for per read would create a task per chunk)."""
        loop = asyncio.get_running_loop()
        counter = self.metrics.bytes.labels("out" if outbound else "in")
        client_counter = self.metrics.client_bytes.labels(t.client) if outbound else None
        shaped = outbound and self.shaped
        # a shaped chunk waits for tokens between its read and its write: it needs its own buffer
        buf = memoryview(bytearray(CHUNK)) if shaped else self._buf
        sfd, dfd = src.fileno(), dst.fileno()
        moved = 0
        data = memoryview(first) if first else None
        while True:
            if data is None:
                try:
                    n = src.recv_into(buf)
                except BlockingIOError:
                    await _ready(loop, sfd, False)
                    continue
                if n == 0:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                data = buf[:n]
            n = len(data)
            t.last = time.monotonic()
            if outbound:
                self._admit(t, n)
                if shaped:
                    slept = await self.limiter.consume(t.client, n)
                    if slept:
                        self.metrics.shaping_wait.inc(slept)
                    if t.closed:
                        raise Blocked("tunnel closed")
                client_counter.inc(n)  # type: ignore[union-attr]
            try:
                sent = dst.send(data)
            except BlockingIOError:
                sent = 0
            if sent < n:  # the peer is slow: keep the rest (off the shared buffer) and wait
                await self._send_rest(t, loop, dst, dfd, data[sent:] if shaped
                                      else bytes(data[sent:]))
            counter.inc(n)
            t.last = time.monotonic()
            data = None
            moved += n
            if moved >= SPLICE_AFTER and self.splice and not shaped:
                pipe = _make_pipe()
                if pipe is not None:
                    return await self._splice(t, loop, src, dst, pipe, outbound)

    async def _send_rest(self, t: _Tunnel, loop: asyncio.AbstractEventLoop, dst: socket.socket,
                         dfd: int, data: Any) -> None:
        view = memoryview(data)
        t.stalled = t.stalled or time.monotonic()
        while view:
            await _ready(loop, dfd, True)  # a peer that stops reading: the watchdog closes it
            with contextlib.suppress(BlockingIOError):
                view = view[dst.send(view):]
        t.stalled = 0.0

    async def _splice(self, t: _Tunnel, loop: asyncio.AbstractEventLoop, src: socket.socket,
                      dst: socket.socket, pipe: tuple[int, int, int], outbound: bool) -> None:
        """The rest of a bulk direction, zero-copy: socket -> pipe, admit, pipe -> socket."""
        counter = self.metrics.bytes.labels("out" if outbound else "in")
        client_counter = self.metrics.client_bytes.labels(t.client) if outbound else None
        rfd, wfd, cap = pipe
        sfd, dfd = src.fileno(), dst.fileno()
        try:
            while True:
                try:
                    n = os.splice(sfd, wfd, cap, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    await _ready(loop, sfd, False)
                    continue
                except OSError as e:
                    if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise
                    self.splice = False  # not for these sockets: copy from now on
                    log.info("egress: splice(2) refused (%s); copying instead", e.strerror)
                    return await self._pump(t, src, dst, outbound=outbound)
                if n == 0:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                t.last = time.monotonic()
                if outbound:
                    self._admit(t, n)  # refused: the bytes in the pipe are never sent
                    client_counter.inc(n)  # type: ignore[union-attr]
                left = n
                while left:
                    try:
                        k = os.splice(rfd, dfd, left, flags=_SPLICE_FLAGS)
                    except BlockingIOError:
                        t.stalled = t.stalled or time.monotonic()
                        await _ready(loop, dfd, True)
                        continue
                    if k <= 0:
                        raise ConnectionError("splice to the peer made no progress")
                    left -= k
                t.stalled = 0.0
                counter.inc(n)
                t.last = time.monotonic()
        finally:
            os.close(rfd)
            os.close(wfd)

    async def _watchdog(self) -> None:
        idle = self.cfg.idle_timeout
        while True:
            await asyncio.sleep(min(1.0, idle / 4))
            now = time.monotonic()
            for tunnels in list(self.conns.values()):
                for t in list(tunnels):
                    if now - t.last > idle or (t.stalled and now - t.stalled > idle):
                        log.info("egress: closing %s tunnel of %s to %s",
                                 "stalled" if t.stalled else "idle", t.client, t.dest)
                        t.abort()

    # -- status ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "listen": f"{self.cfg.host}:{self.cfg.port}",
            "rate": None if self.cfg.rate is None or math.isinf(self.cfg.rate) else self.cfg.rate,
            "client_rate": self.cfg.client_rate,
            "open_tunnels": self.open_tunnels,
            "open_connections": self.open_connections,
            "blocked": {c: a.to_dict() for c, a in self.blocked.items()},
            "clients": {c: self.detector.usage(c) for c in list(self.detector._counters)},
        }
