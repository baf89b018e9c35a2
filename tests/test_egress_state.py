"""Budgets and baselines survive a restart of the egress proxy (`--state PATH`).

Specification: restarting the proxy, which an attacker may be able to provoke, must hand no
client a fresh budget or a fresh alert-free warm-up. The detector's window counts, baselines
(mean, variance, warm-up count, frozen flag) and open alerts are saved as JSON in wall-clock
terms (its own clock is monotonic and restarts with the process), atomically, at every tick and
at a clean shutdown, and loaded at start; counts that have left their window by then are
dropped. A client that sent 60% of its hour budget before a restart is blocked after sending
another 60% (and, without --state, is not: the test means something). A missing file starts
empty; an unreadable, invalid or tampered file stops the start with one line naming it, no
traceback, unless --reset-state discards it (moved aside, logged, recorded in the audit log).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from asl3.egress.detect import STATE_SCHEMA, Detector, StateError
from asl3.egress.proxy import EgressProxy, ProxyConfig
from asl3.egress.state import StateFile, read_state, write_state
from asl3.errors import EgressError
from asl3.security import identity
from test_egress_proxy import A, B, connect, running, send

WALL = 1_800_000_000.0  # a wall-clock time (2027)
HOUR = 3600.0


class FakeTime:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def restarted(state: dict, wall: float, **kw) -> Detector:
    """A new detector, as in a new process: its monotonic clock starts somewhere else."""
    d = Detector(clock=FakeTime(7.0), **kw)
    d.load_state(json.loads(json.dumps(state)), wall)  # through JSON, as on disk
    return d


# -- the detector's state (pure) ----------------------------------------------------------------
def test_window_counts_survive_a_restart_in_wall_clock_terms():
    t = FakeTime(50_000.0)
    d = Detector([(1000, 60), (10_000, HOUR)], clock=t)
    assert d.admit("10.0.0.7", "x:443", 600) is None
    state = d.to_state(WALL)
    assert state["schema"] == STATE_SCHEMA and state["saved_at"] == WALL
    json.dumps(state, allow_nan=False)  # plain JSON

    d2 = restarted(state, WALL + 10, budgets=[(1000, 60), (10_000, HOUR)])
    assert [u["bytes"] for u in d2.usage("10.0.0.7")] == [600, 600]
    alert = d2.admit("10.0.0.7", "x:443", 600)  # 60% + 60% of the minute budget
    assert alert is not None and alert.kind == "budget" and alert.window_s == 60
    assert alert.dest == "x:443"

    d3 = restarted(state, WALL + 70, budgets=[(1000, 60), (10_000, HOUR)])
    assert [u["bytes"] for u in d3.usage("10.0.0.7")] == [0, 600]  # the minute has passed
    assert d3.admit("10.0.0.7", "x:443", 900) is None


def test_counts_older_than_the_longest_window_are_dropped():
    t = FakeTime(50_000.0)
    d = Detector([(10**6, 60), (10**7, HOUR)], clock=t)
    d.admit("10.0.0.7", "x:443", 5000)
    state = d.to_state(WALL)
    d2 = restarted(state, WALL + HOUR + 120, budgets=[(10**6, 60), (10**7, HOUR)])
    assert d2._counters == {}
    assert d2.to_state(WALL + HOUR + 120)["counters"] == {}


def test_rounding_to_slots_errs_towards_blocking():
    """Bytes restored never leave their window earlier than they would have without the
    restart, whatever the two processes' clocks."""
    for mono in (50_000.0, 50_029.9, 50_030.1, 3.3):
        t = FakeTime(mono)
        d = Detector([(1000, HOUR)], clock=t)
        d.admit("c", "x:443", 999)
        state = d.to_state(WALL)
        for later in (0.0, 1.7, 59.9, 3000.0, HOUR - 61):
            d2 = restarted(state, WALL + later, budgets=[(1000, HOUR)])
            assert d2.usage("c")[0]["bytes"] == 999, (mono, later)


def test_a_slot_stamped_in_the_future_counts_as_sent_now():
    """The wall clock went back between save and load: the bytes still count, in full."""
    d = Detector([(1000, 60)], clock=FakeTime(100.0))
    d.admit("c", "x:443", 700)
    d2 = restarted(d.to_state(WALL), WALL - 500, budgets=[(1000, 60)])
    assert d2.usage("c")[0]["bytes"] == 700
    assert d2.admit("c", "x:443", 400) is not None


def test_a_new_budget_window_is_filled_from_a_longer_saved_one():
    """The operator adds a 1 h budget next to the 24 h one: the hour is not started empty."""
    d = Detector([(10**9, 86400.0)], clock=FakeTime(500.0))
    d.admit("c", "x:443", 700_000)
    d2 = restarted(d.to_state(WALL), WALL + 60, budgets=[(10**6, HOUR), (10**9, 86400.0)])
    assert [u["bytes"] for u in d2.usage("c")] == [700_000, 700_000]
    assert d2.admit("c", "x:443", 400_000) is not None


def test_a_restored_warmed_up_baseline_flags_a_spike_without_a_new_warm_up():
    def warmed() -> tuple[Detector, FakeTime]:
        t = FakeTime(1000.0)
        d = Detector(interval=1.0, n_sigma=4, floor_bps=10_000, warmup=5, clock=t)
        for _ in range(10):
            d.admit("c", "x:443", 1000)
            t.now += 1
            assert d.tick() == []
        return d, t

    d, _ = warmed()
    state = d.to_state(WALL)
    assert state["baselines"]["client"]["c"]["n"] == 10

    def spike(d: Detector) -> list:
        t = d.clock
        d._last_tick = t()
        d.admit("c", "x:443", 1_000_000)
        t.now += 1
        return d.tick()

    d2 = restarted(state, WALL + 5, interval=1.0, n_sigma=4, floor_bps=10_000, warmup=5)
    b = d2.baseline("client", "c")
    assert b.n == 10 and b.mean == pytest.approx(d.baseline("client", "c").mean)
    assert {a.scope for a in spike(d2)} == {"client", "destination"}  # at once
    fresh = Detector(interval=1.0, n_sigma=4, floor_bps=10_000, warmup=5, clock=FakeTime(7.0))
    assert spike(fresh) == []  # without the state: in warm-up, no alert


def test_open_alerts_and_frozen_baselines_come_back_but_the_record_decides():
    t = FakeTime(1000.0)
    d = Detector(interval=1.0, n_sigma=4, floor_bps=10_000, warmup=3, clock=t)
    for c in ("a", "b"):
        for _ in range(5):
            d.admit(c, f"{c}:443", 100)
            t.now += 1
            d.tick()
    d.admit("a", "a:443", 10**6)
    d.admit("b", "b:443", 10**6)
    t.now += 1
    assert {a.key for a in d.tick()} == {"a", "b", "a:443", "b:443"}
    state = d.to_state(WALL)
    d2 = restarted(state, WALL + 1, interval=1.0, n_sigma=4, floor_bps=10_000, warmup=3)
    assert set(d2.open) == set(d.open) and d2.baseline("client", "a").frozen
    # the record says: a is still blocked, b was unblocked after the state was saved
    d2.reconcile({"a": d.open[("client", "a")]})
    assert set(d2.open) == {("client", "a"), ("destination", "a:443")}
    assert d2.baseline("client", "a").frozen and not d2.baseline("client", "b").frozen
    assert not d2.baseline("destination", "b:443").frozen
    assert len(d2.close("a")) == 2 and not d2.baseline("client", "a").frozen


def test_a_client_blocked_in_the_record_but_not_in_the_state_gets_its_alert_back():
    d = Detector([(1000, 60)], clock=FakeTime(5.0))
    other = Detector([(1000, 60)], clock=FakeTime(5.0))
    alert = other.admit("c", "x:443", 5000)
    d.reconcile({"c": alert})
    assert d.admit("c", "x:443", 1) is alert
    assert d.close("c") == [alert] and d.admit("c", "x:443", 1) is None


def _state(**changes) -> dict:
    d = Detector([(1000, 60)], n_sigma=4, floor_bps=10, warmup=1, clock=FakeTime(100.0))
    d.admit("c", "x:443", 10)
    d.clock.now += 1
    d.tick()
    s = d.to_state(WALL)
    for path, value in changes.items():
        node = s
        *parents, last = path.split("/")
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return s


@pytest.mark.parametrize("changes, message", [
    ({"schema": "something.else"}, "not an egress detector state"),
    ({"version": 2}, "version 2 is not supported"),
    ({"saved_at": "yesterday"}, "saved_at"),
    ({"counters/c/0/slots/0/1": -1e12}, "is not a finite number >= 0"),  # negative: free budget
    ({"counters/c/0/slots/0/1": math.inf}, "is not a finite number >= 0"),
    ({"counters/c/0/slot_s": 0}, "slot_s"),
    ({"counters/c/0/slots/0": [1.0]}, "expected [start, bytes]"),
    ({"counters/c": {"window_s": 60}}, "expected a JSON list"),
    ({"baselines/client/c/n": 1.5}, "not a whole number"),
    ({"baselines/client/c/var": -3}, "baselines.client['c'].var"),
    ({"baselines/client/c/frozen": "no"}, "not true or false"),
    ({"baselines": []}, "baselines: expected a JSON object"),
    ({"open": [{"scope": "client", "kind": "budget", "key": "c"}]}, "open[0].clients"),
])
def test_an_invalid_state_is_refused_whole_naming_the_bad_part(changes, message):
    d = Detector([(1000, 60)], clock=FakeTime(5.0))
    d.admit("z", "x:443", 123)
    with pytest.raises(StateError) as e:
        d.load_state(_state(**changes), WALL)
    assert message in str(e.value)
    assert list(d._counters) == ["z"] and d.usage("z")[0]["bytes"] == 123  # left as it was


def test_a_valid_state_passes_the_checks():
    d = Detector([(1000, 60)], clock=FakeTime(5.0))
    d.load_state(_state(), WALL)
    assert d.usage("c")[0]["bytes"] == 10 and d.baseline("client", "c").n == 1


# -- the state file -----------------------------------------------------------------------------
def test_write_state_is_atomic_private_and_never_goes_backwards(tmp_path):
    path = str(tmp_path / "state.json")
    assert read_state(path) is None
    write_state(path, {"a": 1})
    assert read_state(path) == {"a": 1}
    assert os.stat(path).st_mode & 0o077 == 0
    assert sorted(os.listdir(tmp_path)) == ["state.json"]  # no temporary file left behind
    f = StateFile(path)
    late, early = f.next(), f.next()
    assert f.save({"n": 2}, early) and not f.save({"n": 1}, late)
    assert read_state(path) == {"n": 2}
    with pytest.raises(ValueError):
        write_state(path, {"x": math.nan})
    assert read_state(path) == {"n": 2} and sorted(os.listdir(tmp_path)) == ["state.json"]


@pytest.mark.parametrize("content, message", [
    (b"{not json", "is not valid JSON"),
    (b"[1, 2]", "does not hold a JSON object"),
    (b"\xff\xfe", "is not valid JSON"),
])
def test_read_state_names_the_file_it_cannot_use(tmp_path, content, message):
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(EgressError) as e:
        read_state(str(path))
    assert str(path) in str(e.value) and message in str(e.value)
    with pytest.raises(EgressError, match="no such directory"):
        read_state(str(tmp_path / "missing" / "state.json"))


# -- the proxy across restarts ------------------------------------------------------------------
async def transfer(proxy, n: int, src: str = A) -> bool:
    """Send n bytes through one tunnel from src; True if all arrived, False if the proxy cut
    the tunnel (a block)."""
    r, w, head = await connect(proxy, proxy.sink.port, src)
    assert head.startswith("HTTP/1.1 200"), head
    try:
        await send(w, n)
        w.write_eof()
        reply = await asyncio.wait_for(r.read(), 10)
    except ConnectionError:
        return False
    finally:
        w.close()
    return reply == f"got {n}".encode()


def _hour_budget(tmp_path, state: bool) -> tuple[bool, bool, int]:
    """Two runs of the proxy, 1 MB/1h each: 600 kB in the first, 600 kB in the second.
    (first arrived, second arrived, bytes the second run's sink got)."""
    kw = {"budgets": [(1_000_000, HOUR)]}
    if state:
        kw["state_path"] = str(tmp_path / "state.json")

    async def main():
        async with running(tmp_path, **kw) as p:
            first = await transfer(p, 600_000)
        async with running(tmp_path, **kw) as p:
            second = await transfer(p, 600_000)
            assert (A in p.blocked) == (not second)
            return first, second, p.sink.total

    return asyncio.run(main())


def test_60_percent_of_the_hour_budget_twice_across_a_restart_is_blocked(tmp_path):
    first, second, got = _hour_budget(tmp_path, state=True)
    assert first and not second
    assert got <= 400_000  # nothing beyond the budget, summed over both runs


def test_without_state_the_restart_hands_out_a_fresh_budget(tmp_path):
    """The control: the same two runs without --state are not blocked (what --state fixes)."""
    first, second, got = _hour_budget(tmp_path, state=False)
    assert first and second and got == 600_000


def test_the_state_is_saved_at_every_tick_not_only_at_shutdown(tmp_path):
    """A crash (no clean shutdown) loses at most the last tick's bytes."""
    path = tmp_path / "state.json"

    async def main():
        async with running(tmp_path, budgets=[(10**7, HOUR)], state_path=str(path)) as p:
            assert await transfer(p, 300_000)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if path.exists():
                    saved = json.loads(path.read_text())
                    slots = saved["counters"].get(A, [{"slots": []}])[0]["slots"]
                    if sum(b for _, b in slots) == 300_000:
                        return saved
                await asyncio.sleep(0.1)
            raise AssertionError("the state file never showed the bytes sent")

    saved = asyncio.run(main())
    assert saved["schema"] == STATE_SCHEMA and abs(saved["saved_at"] - time.time()) < 30
    assert A in saved["baselines"]["client"]


def test_an_unblock_after_the_last_save_is_not_undone_by_the_state(tmp_path):
    """The alert file (the record) decides who is blocked after a restart, not the state."""
    path = str(tmp_path / "state.json")

    async def main():
        async with running(tmp_path, budgets=[(100_000, HOUR)], state_path=path) as p:
            assert not await transfer(p, 500_000)
            assert A in p.blocked
        saved = read_state(path)
        assert [a["key"] for a in saved["open"]] == [A]
        async with running(tmp_path, budgets=[(100_000, HOUR)], state_path=path) as p:
            assert A in p.blocked and ("client", A) in p.detector.open
            p._append_alert(p.unblock(A, "alice", "approved change"))
            p.detector.load_state(saved, time.time())  # as if the state predates the unblock
        async with running(tmp_path, budgets=[(100_000, HOUR)], state_path=path) as p:
            assert A not in p.blocked and p.detector.open == {}
            assert p.detector.usage(A)[0]["bytes"] <= 100_000  # the bytes still count
            assert await transfer(p, 1000, B)

    asyncio.run(main())


def test_a_bad_state_file_stops_the_proxy_before_it_listens(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps(_state(**{"counters/c/0/slots/0/1": -5})))

    async def main():
        p = EgressProxy(ProxyConfig(host="127.0.0.1", port=0, state_path=str(path)))
        with pytest.raises(EgressError) as e:
            await p.start()
        assert str(path) in str(e.value) and "--reset-state" in str(e.value)
        assert p._listeners == [] and p._tasks == set()
        await p.stop()  # even a stop after the failed start must not save over the file

    asyncio.run(main())
    assert json.loads(path.read_text())["counters"]["c"][0]["slots"][0][1] == -5  # untouched


def test_reset_state_starts_fresh_moves_the_old_file_aside_and_audits_it(tmp_path):
    from asl3.security.audit import AuditLog

    path = tmp_path / "state.json"
    d = Detector([(1_000_000, HOUR)], clock=FakeTime(5.0))
    d.admit(A, "x:443", 900_000)
    write_state(str(path), d.to_state(time.time()))
    kw = {"budgets": [(1_000_000, HOUR)], "state_path": str(path)}

    async def main():
        async with running(tmp_path, **kw) as p:  # loaded: 900 kB used
            assert p.detector.usage(A)[0]["bytes"] == 900_000
        async with running(tmp_path, reset_state=True, audit_dir=str(tmp_path),
                           audit_identity=identity.new("proxy"), **kw) as p:
            assert p.detector.usage(A)[0]["bytes"] == 0
            assert await transfer(p, 600_000)

    asyncio.run(main())
    moved = [f for f in os.listdir(tmp_path) if f.startswith("state.json.reset-")]
    assert len(moved) == 1
    entry = [e for e in AuditLog(tmp_path).entries() if e.action == "egress.state_reset"]
    assert len(entry) == 1 and entry[0].subject == str(path)
    assert entry[0].details["moved_to"] == str(tmp_path / moved[0])
    assert read_state(str(path))["counters"][A][0]["slots"]  # the fresh state, saved


# -- the command line ---------------------------------------------------------------------------
def _proxy_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "asl3.cli", "egress", "proxy", "--listen", "127.0.0.1:0",
         "--rate", "unlimited", "--event-loop", "asyncio", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    ('{"schema": "other"}', "not an egress detector state"),
    (None, "is not a finite number >= 0"),  # a tampered count: negative bytes
])
def test_cli_refuses_a_bad_state_file_in_one_line_without_a_traceback(tmp_path, content,
                                                                        message):
    path = tmp_path / "state.json"
    path.write_text(content if content is not None
                    else json.dumps(_state(**{"counters/c/0/slots/0/1": -1})))
    p = _proxy_cli("--state", str(path), "--budget", "1MB/1h")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("asl3: ")]
    assert len(lines) == 1 and str(path) in lines[0] and message in lines[0], err
    assert "--reset-state" in lines[0]


def test_cli_reset_state_needs_state(tmp_path):
    p = _proxy_cli("--reset-state")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and "--reset-state goes with --state" in err


def test_cli_reset_state_discards_a_corrupt_file_and_saves_a_fresh_one_at_shutdown(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("{garbage")
    p = _proxy_cli("--state", str(path), "--reset-state", "--budget", "1MB/1h", "--json")
    try:
        line = p.stdout.readline()
        assert json.loads(line)["listen"].startswith("127.0.0.1:")
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "--reset-state" in err and "discarded" in err and "Traceback" not in err
    assert read_state(str(path))["schema"] == STATE_SCHEMA  # written at the clean shutdown
    assert [f.read_text() for f in tmp_path.glob("state.json.reset-*")] == ["{garbage"]


def test_cli_missing_state_file_starts_empty_and_says_so(tmp_path):
    path = tmp_path / "state.json"
    p = _proxy_cli("--state", str(path), "--json")
    try:
        json.loads(p.stdout.readline())
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0 and "no state file" in err and "start empty" in err
    assert read_state(str(path))["schema"] == STATE_SCHEMA
