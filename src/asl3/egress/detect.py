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

State across restarts, `to_state(wall_now)` / `load_state(state, wall_now)`: the window counts,
the baselines (mean, variance, warm-up count, frozen flag) and the open alerts as plain JSON
values, so that restarting the proxy (which an attacker may be able to provoke) neither hands
out a fresh 24 h budget nor a fresh, alert-free warm-up. The detector's clock is monotonic and
means nothing to another process, so every time is saved as wall-clock (Unix) seconds and put
back on the new process's clock; counts that have left their window by then are dropped. Both
stay pure: the caller reads the wall clock and does the file I/O (`asl3.egress.state`).

What this does not catch: a ramp slow enough to stay under n_sigma at each step moves the
baseline along with it (the budgets bound what it can move); traffic before `warmup` intervals
only meets the budgets and the floor-free rate limit.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from asl3.egress.units import format_duration, format_rate, format_size

Clock = Callable[[], float]
DEFAULT_WINDOWS = (60.0, 3600.0, 86400.0)
STATE_SCHEMA = "asl3.egress.detector-state"
STATE_VERSION = 1
MAX_KEY_CHARS = 300  # a client address or a destination host:port


class StateError(ValueError):
    """A saved detector state that cannot be loaded; the message names the part that is wrong.
    Loading is all or nothing: a state that fails leaves the detector as it was."""


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
    dest: str | None = None  # the destination, when one is known (budget: the chunk's; rate:
                             # the destination's own alert; None for a client's rate alert)

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
                   window_s=float(d.get("window_s") or 0), at=float(d.get("at") or 0),
                   dest=None if d.get("dest") is None else str(d["dest"]))


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
                    used + n, c.limit, c.window, now, dest))
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
                        rate, b.threshold, elapsed, now,
                        key if scope == "destination" else None)))
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

    # -- state across restarts ------------------------------------------------------------------
    def to_state(self, wall_now: float) -> dict[str, Any]:
        """What a restart must not forget, as plain JSON values with wall-clock times.

        `wall_now` is `time.time()` read by the caller at the same moment (this stays pure).
        Slots are saved by the wall-clock time their slot began, so a later process can tell
        how much of each window is left; slots already out of their window are not saved."""
        now = self.clock()
        off = wall_now - now
        counters: dict[str, list[dict[str, Any]]] = {}
        for client, cs in self._counters.items():
            saved = []
            for c in cs:
                c._expire(now)
                if c._q:
                    saved.append({"window_s": c.window, "slot_s": c.slot_len,
                                  "slots": [[idx * c.slot_len + off, b] for idx, b in c._q]})
            if saved:
                counters[client] = saved
        baselines = {scope: {key: {"mean": k.baseline.mean, "var": k.baseline.var,
                                   "n": k.baseline.n, "frozen": k.baseline.frozen}
                             for key, k in table.items()}
                     for scope, table in (("client", self._clients), ("destination", self._dests))}
        return {"schema": STATE_SCHEMA, "version": STATE_VERSION, "saved_at": wall_now,
                "counters": counters, "baselines": baselines,
                "open": [{**a.to_dict(), "at": a.at + off} for a in self.open.values()]}

    def load_state(self, state: Any, wall_now: float) -> None:
        """Replace this detector's counts, baselines and open alerts with a saved state.

        Checked in full before anything changes (StateError names what is wrong; nothing is
        half loaded). Every count must be a finite number >= 0: a negative count in a tampered
        file would otherwise be budget handed out. Counts go back into the windows configured
        now: from the saved counter of the same window, else from the shortest longer one (a
        coarse slot reaching into the window counts in full), else from the longest there is;
        a slot counts as sent at the latest moment it could have been, and a slot stamped in
        the future (the wall clock went back) as sent now, so rounding errs towards blocking.
        Baselines keep their warm-up count: a warmed-up key alerts at once after a restart."""
        if not isinstance(state, dict):
            raise StateError("the state is not a JSON object")
        if state.get("schema") != STATE_SCHEMA:
            raise StateError(f"'schema' is {state.get('schema')!r}, not {STATE_SCHEMA!r}: "
                             "not an egress detector state")
        if state.get("version") != STATE_VERSION:
            raise StateError(f"state version {state.get('version')!r} is not supported (this "
                             f"asl3 reads version {STATE_VERSION})")
        _number(state.get("saved_at"), "saved_at")
        now = self.clock()
        off = wall_now - now

        counters: dict[str, list[RollingCounter]] = {}
        for client, saved in _mapping(state.get("counters"), "counters").items():
            where = f"counters[{client!r}]"
            _key_text(client, where)
            parsed = [_saved_counter(e, f"{where}[{i}]") for i, e in enumerate(
                _sequence(saved, where))]
            cs = [RollingCounter(w, lim) for lim, w in self.budgets]
            for c in cs:
                _restore_counter(c, parsed, now, off)
            if any(c._q for c in cs):
                counters[client] = cs

        tables: dict[str, dict[str, _Key]] = {}
        baselines = _mapping(state.get("baselines"), "baselines")
        for scope, floor in (("client", self.floor_bps), ("destination", self.dest_floor_bps)):
            table: dict[str, _Key] = {}
            for key, v in _mapping(baselines.get(scope, {}), f"baselines.{scope}").items():
                where = f"baselines.{scope}[{key!r}]"
                _key_text(key, where)
                v = _mapping(v, where)
                b = Baseline(floor=floor, **self._mk)  # type: ignore[arg-type]
                b.mean = _number(v.get("mean"), f"{where}.mean")
                b.var = _number(v.get("var"), f"{where}.var")
                b.n = int(_number(v.get("n"), f"{where}.n", integer=True))
                if not isinstance(v.get("frozen"), bool):
                    raise StateError(f"{where}.frozen: {v.get('frozen')!r} is not true or false")
                b.frozen = v["frozen"]
                table[key] = _Key(b)
            tables[scope] = table

        open_: dict[tuple[str, str], Alert] = {}
        for i, d in enumerate(_sequence(state.get("open", []), "open")):
            a = _saved_alert(d, f"open[{i}]")
            open_[(a.scope, a.key)] = replace(a, at=a.at - off)

        self._counters, self._clients, self._dests = counters, tables["client"], tables["destination"]
        self.open = open_

    def reconcile(self, blocked: Mapping[str, Alert]) -> None:
        """Make the open alerts agree with who is blocked now (`blocked`: client -> the alert
        that blocked it, from the proxy's record, which is what counts).

        An open alert none of whose clients is blocked is closed: it was lifted after the state
        was saved, and stale state must not block anyone again. A blocked client that no open
        alert names gets its alert back, so its baseline stays frozen and an unblock closes it
        as usual. Then each baseline is frozen exactly while its key has an open alert."""
        for k, a in list(self.open.items()):
            if not any(c in blocked for c in a.clients):
                del self.open[k]
        for c, a in blocked.items():
            if any(c in o.clients for o in self.open.values()):
                continue
            old = self.open.get((a.scope, a.key))
            self.open[(a.scope, a.key)] = a if old is None else replace(
                old, clients=tuple(sorted({*old.clients, c})))
        for scope, table in (("client", self._clients), ("destination", self._dests)):
            for key, k in table.items():
                k.baseline.frozen = (scope, key) in self.open


# -- checking a saved state -------------------------------------------------------------------
def _number(v: Any, where: str, *, integer: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise StateError(f"{where}: {v!r} is not a finite number >= 0")
    if integer and v != int(v):
        raise StateError(f"{where}: {v!r} is not a whole number")
    return float(v)


def _mapping(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise StateError(f"{where}: expected a JSON object, found {type(v).__name__}")
    return v


def _sequence(v: Any, where: str) -> list[Any]:
    if not isinstance(v, list):
        raise StateError(f"{where}: expected a JSON list, found {type(v).__name__}")
    return v


def _key_text(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v or len(v) > MAX_KEY_CHARS:
        raise StateError(f"{where}: not a client address or destination")
    return v


def _saved_counter(e: Any, where: str) -> tuple[float, float, list[tuple[float, float]]]:
    """(window seconds, slot seconds, [(wall-clock start, bytes)]) of one saved counter."""
    e = _mapping(e, where)
    window = _number(e.get("window_s"), f"{where}.window_s")
    slot = _number(e.get("slot_s"), f"{where}.slot_s")
    if not 0 < slot <= window:
        raise StateError(f"{where}: slot_s {slot!r} must be more than 0 and at most window_s")
    pairs = []
    for j, p in enumerate(_sequence(e.get("slots"), f"{where}.slots")):
        w = f"{where}.slots[{j}]"
        if not isinstance(p, list) or len(p) != 2:
            raise StateError(f"{w}: expected [start, bytes]")
        pairs.append((_number(p[0], f"{w} start"), _number(p[1], f"{w} bytes")))
    return window, slot, pairs


def _restore_counter(c: RollingCounter, saved: list[tuple[float, float, list[tuple[float, float]]]],
                     now: float, off: float) -> None:
    """Put saved slots into counter c on this process's clock (`off` = wall - this clock)."""
    if not saved:
        return
    same = [s for s in saved if math.isclose(s[0], c.window)]
    longer = sorted((s for s in saved if s[0] > c.window), key=lambda s: s[0])
    _, slot_s, pairs = same[0] if same else longer[0] if longer else max(saved,
                                                                          key=lambda s: s[0])
    cur = int(now // c.slot_len)
    by_idx: dict[int, float] = {}
    for start, n in pairs:
        if n <= 0:
            continue
        end = start + slot_s - off  # on this clock: the latest these bytes can have been sent
        idx = min(math.ceil(end / c.slot_len) - 1, cur)
        if idx <= cur - c.slots:
            continue  # out of the window by now
        by_idx[idx] = by_idx.get(idx, 0.0) + n
    c._q = deque([i, by_idx[i]] for i in sorted(by_idx))
    c._total = sum(by_idx.values())


def _saved_alert(d: Any, where: str) -> Alert:
    d = _mapping(d, where)
    if d.get("scope") not in ("client", "destination"):
        raise StateError(f"{where}.scope: {d.get('scope')!r} is not 'client' or 'destination'")
    if d.get("kind") not in ("budget", "rate"):
        raise StateError(f"{where}.kind: {d.get('kind')!r} is not 'budget' or 'rate'")
    _key_text(d.get("key"), f"{where}.key")
    clients = _sequence(d.get("clients"), f"{where}.clients")
    for c in clients:
        _key_text(c, f"{where}.clients")
    if not isinstance(d.get("reason"), str):
        raise StateError(f"{where}.reason: not a string")
    if d.get("dest") is not None:
        _key_text(d.get("dest"), f"{where}.dest")
    for f in ("observed", "limit", "window_s", "at"):
        _number(d.get(f), f"{where}.{f}")
    return Alert.from_dict(d)
