"""Anomaly detection on outbound bytes: hard budgets and rate baselines (pure; clock injected).

Two detectors, both per client (a client's parallel connections are summed: every byte is
counted against the client, whatever the connection):

- Hard budgets, `admit(client, dest, n)` before a chunk is sent: a rolling byte budget per
  window (for example 100 MB per minute, 2 GB per hour, 10 GB per 24 h). A chunk that would
  cross any budget is not counted and opens an alert, so nothing beyond a budget leaves, and a
  low-and-slow transfer that never trips a rate alarm still meets the 24 h budget. Windows are
  kept as 60 slots each: bytes leave the window up to one slot (1/60 of it) late, which errs on
  the side of blocking early.
- Rate baselines, `tick()` once per interval: the bytes of the interval as a rate, per client
  and per destination, against an EWMA mean and variance. An interval is anomalous when its rate
  is above mean + n_sigma * std (std at least `min_std_ratio` of the mean) *and* above the
  absolute floor (`floor_bps`; a quiet client's baseline is near zero, the floor keeps ordinary
  bursts from alerting). No alerts during the first `warmup` intervals of a key. An anomalous
  interval is never folded into the baseline, and while a key's alert is open its baseline is
  frozen, so an attacker cannot ramp it up by pushing while blocked. A destination anomaly names
  the clients that sent to it in that interval.

What this does not catch: a ramp slow enough to stay under n_sigma at each step moves the
baseline along with it (the budgets bound what it can move); traffic before `warmup` intervals
only meets the budgets and the floor-free rate limit.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from asl3.egress.units import format_duration, format_rate, format_size

Clock = Callable[[], float]
DEFAULT_WINDOWS = (60.0, 3600.0, 86400.0)


@dataclass(frozen=True)
class Alert:
    kind: str            # "budget" | "rate"
    scope: str           # "client" | "destination"
    key: str             # the client address or the destination host:port
    clients: tuple[str, ...]  # the clients to block
    reason: str
    observed: float      # bytes (budget) or bytes per second (rate)
    limit: float
    window_s: float
    at: float            # detector clock

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["clients"] = list(self.clients)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Alert:
        """An alert read back from the record (alert file or audit log)."""
        return cls(kind=str(d.get("kind", "budget")), scope=str(d.get("scope", "client")),
                   key=str(d.get("key", "")), clients=tuple(str(c) for c in d.get("clients") or ()),
                   reason=str(d.get("reason", "blocked before a restart")),
                   observed=float(d.get("observed") or 0), limit=float(d.get("limit") or 0),
                   window_s=float(d.get("window_s") or 0), at=float(d.get("at") or 0))


class RollingCounter:
    """Bytes in the last `window` seconds, kept in `slots` slots."""

    def __init__(self, window: float, limit: float = math.inf, slots: int = 60) -> None:
        self.window, self.limit, self.slots = float(window), float(limit), slots
        self.slot_len = self.window / slots
        self._q: deque[list[float]] = deque()  # [slot index, bytes]
        self._total = 0.0

    def _expire(self, now: float) -> int:
        idx = int(now // self.slot_len)
        while self._q and self._q[0][0] <= idx - self.slots:
            self._total -= self._q.popleft()[1]
        return idx

    def total(self, now: float) -> float:
        self._expire(now)
        return self._total

    def add(self, n: float, now: float) -> float:
        idx = self._expire(now)
        if self._q and self._q[-1][0] == idx:
            self._q[-1][1] += n
        else:
            self._q.append([idx, float(n)])
        self._total += n
        return self._total


class Baseline:
    """EWMA mean and variance of a rate, with an n-sigma threshold and an absolute floor."""

    def __init__(self, alpha: float = 0.1, n_sigma: float = 6.0, floor: float = 1e6,
                 warmup: int = 30, min_std_ratio: float = 0.1) -> None:
        self.alpha, self.n_sigma, self.floor = alpha, n_sigma, floor
        self.warmup, self.min_std_ratio = warmup, min_std_ratio
        self.mean = 0.0
        self.var = 0.0
        self.n = 0
        self.frozen = False

    @property
    def threshold(self) -> float:
        std = max(math.sqrt(self.var), self.min_std_ratio * self.mean)
        return max(self.mean + self.n_sigma * std, self.floor)

    def anomalous(self, x: float) -> bool:
        return self.n >= self.warmup and x > self.threshold

    def update(self, x: float) -> None:
        if self.frozen:
            return
        if self.n == 0:
            self.mean = x
        else:
            diff = x - self.mean
            incr = self.alpha * diff
            self.mean += incr
            self.var = (1 - self.alpha) * (self.var + diff * incr)
        self.n += 1


@dataclass
class _Key:
    baseline: Baseline
    interval_bytes: float = 0.0
    clients: set[str] = field(default_factory=set)


class Detector:
    def __init__(self, budgets: Sequence[tuple[float, float]] = (), *, interval: float = 1.0,
                 alpha: float = 0.1, n_sigma: float = 6.0, floor_bps: float = 1e6,
                 dest_floor_bps: float | None = None, warmup: int = 30,
                 min_std_ratio: float = 0.1, clock: Clock = time.monotonic) -> None:
        """`budgets`: (limit bytes, window seconds) pairs, per client."""
        self.budgets = [(float(lim), float(win)) for lim, win in budgets]
        self.interval = interval
        self._mk = {"alpha": alpha, "n_sigma": n_sigma, "warmup": warmup,
                    "min_std_ratio": min_std_ratio}
        self.floor_bps = floor_bps
        self.dest_floor_bps = floor_bps if dest_floor_bps is None else dest_floor_bps
        self.clock = clock
        self._counters: dict[str, list[RollingCounter]] = {}
        self._clients: dict[str, _Key] = {}
        self._dests: dict[str, _Key] = {}
        self.open: dict[tuple[str, str], Alert] = {}
        self._last_tick = clock()

    # -- budgets ------------------------------------------------------------------------------
    def counters(self, client: str) -> list[RollingCounter]:
        c = self._counters.get(client)
        if c is None:
            c = self._counters[client] = [RollingCounter(w, lim) for lim, w in self.budgets]
        return c

    def usage(self, client: str) -> list[dict[str, float]]:
        now = self.clock()
        return [{"window_s": c.window, "bytes": c.total(now), "limit": c.limit}
                for c in self.counters(client)]

    def admit(self, client: str, dest: str, n: int) -> Alert | None:
        """Count n outbound bytes from client to dest, or return the alert that blocks them."""
        if ("client", client) in self.open:
            return self.open[("client", client)]
        now = self.clock()
        counters = self.counters(client)
        for c in counters:
            used = c.total(now)
            if used + n > c.limit:
                return self._open(Alert(
                    "budget", "client", client, (client,),
                    f"budget of {format_size(c.limit)} per {format_duration(c.window)} would be "
                    f"exceeded ({format_size(used)} used, {n} more bytes)",
                    used + n, c.limit, c.window, now))
        for c in counters:
            c.add(n, now)
        ck = self._key(self._clients, client, self.floor_bps)
        ck.interval_bytes += n
        dk = self._key(self._dests, dest, self.dest_floor_bps)
        dk.interval_bytes += n
        dk.clients.add(client)
        return None

    # -- baselines ----------------------------------------------------------------------------
    def _key(self, table: dict[str, _Key], key: str, floor: float) -> _Key:
        k = table.get(key)
        if k is None:
            k = table[key] = _Key(Baseline(floor=floor, **self._mk))  # type: ignore[arg-type]
        return k

    def tick(self) -> list[Alert]:
        """Close the current interval: judge every key's rate, then fold normal ones in."""
        now = self.clock()
        elapsed = now - self._last_tick
        if elapsed < self.interval / 2:
            return []
        self._last_tick = now
        alerts: list[Alert] = []
        for scope, table in (("client", self._clients), ("destination", self._dests)):
            for key, k in table.items():
                rate = k.interval_bytes / elapsed
                clients = tuple(sorted(k.clients)) if scope == "destination" else (key,)
                k.interval_bytes = 0.0
                k.clients = set()
                b = k.baseline
                if (scope, key) in self.open:
                    continue  # frozen while its alert is open
                if b.anomalous(rate):
                    alerts.append(self._open(Alert(
                        "rate", scope, key, clients,
                        f"{scope} rate {format_rate(rate)} above its baseline threshold "
                        f"{format_rate(b.threshold)} (mean {format_rate(b.mean)})",
                        rate, b.threshold, elapsed, now)))
                else:
                    b.update(rate)
        return alerts

    # -- alerts -------------------------------------------------------------------------------
    def _open(self, alert: Alert) -> Alert:
        self.open[(alert.scope, alert.key)] = alert
        for t, key in ((self._clients, alert.key), (self._dests, alert.key)):
            if alert.scope == ("client" if t is self._clients else "destination") and key in t:
                t[key].baseline.frozen = True
        return alert

    def close(self, client: str) -> list[Alert]:
        """Close the client's alert and the destination alerts that named it (on unblock)."""
        closed = []
        for (scope, key), a in list(self.open.items()):
            if (scope == "client" and key == client) or (scope == "destination"
                                                          and client in a.clients):
                closed.append(self.open.pop((scope, key)))
                table = self._clients if scope == "client" else self._dests
                if key in table:
                    table[key].baseline.frozen = False
        return closed

    def baseline(self, scope: str, key: str) -> Baseline | None:
        k = (self._clients if scope == "client" else self._dests).get(key)
        return k.baseline if k else None
