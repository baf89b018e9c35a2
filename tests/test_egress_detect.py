"""Shaping and detection logic with a fake clock (no sockets).

Specification: a token bucket slows traffic to its rate (never drops it) and lets a burst through
at once; a client's own bucket and the enclave-wide bucket both apply. Hard budgets over rolling
windows refuse the chunk that would cross them, whichever connection of the client sends it;
rate baselines alert above n-sigma *and* an absolute floor, and a baseline is frozen while its
alert is open so that it cannot be ramped up.
"""

from __future__ import annotations

import asyncio

import pytest

from asl3.egress.bucket import Limiter, TokenBucket
from asl3.egress.detect import Baseline, Detector, RollingCounter


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_bucket_lets_the_burst_through_then_holds_the_rate():
    t = FakeTime()
    b = TokenBucket(1000, 500, clock=t, sleep=t.sleep)
    assert asyncio.run(b.consume(500)) == 0           # the burst passes at once
    assert asyncio.run(b.consume(1000)) == pytest.approx(1.0)   # then 1000 B/s
    t.now += 10                                       # idle: refills only up to the burst
    assert b.reserve(0) == 0 and b.tokens == 500


def test_bucket_rate_is_exact_over_many_chunks_whatever_the_chunk_size():
    t = FakeTime()
    b = TokenBucket(1e6, 64 * 1024, clock=t, sleep=t.sleep)
    start = t.now

    async def send() -> None:
        for _ in range(100):
            await b.consume(100_000)                  # chunks bigger than the burst

    asyncio.run(send())
    elapsed = t.now - start
    assert elapsed == pytest.approx((10e6 - 64 * 1024) / 1e6)


def test_limiter_applies_client_and_global_buckets():
    t = FakeTime()
    lim = Limiter(rate=1000, burst=1, client_rate=100, client_burst=1, clock=t, sleep=t.sleep)
    asyncio.run(lim.consume("a", 101))                # client bucket: ~1 s
    assert t.now - 1000 == pytest.approx(1.0 + 0.1, abs=0.01)
    assert lim.bucket("b") is not lim.bucket("a")
    assert Limiter().global_bucket is None and Limiter().bucket("x") is None


def test_rolling_counter_forgets_old_bytes():
    c = RollingCounter(60, limit=100)
    c.add(80, now=0)
    assert c.total(30) == 80
    assert c.total(61) == 0                           # out of the window


def test_budget_refuses_the_chunk_that_would_cross_it_summed_over_connections():
    t = FakeTime()
    d = Detector([(1000, 60)], clock=t)
    # two "connections" of one client to different destinations share its budget
    assert d.admit("10.0.0.7", "a:443", 600) is None
    alert = d.admit("10.0.0.7", "b:443", 500)
    assert alert is not None and alert.kind == "budget" and alert.clients == ("10.0.0.7",)
    assert "per 60.0 s" in alert.reason
    assert d.admit("10.0.0.7", "a:443", 1) is alert   # stays blocked until closed
    assert d.admit("10.0.0.8", "a:443", 900) is None  # another client is not affected
    d.close("10.0.0.7")
    t.now += 61
    assert d.admit("10.0.0.7", "a:443", 900) is None


def test_low_and_slow_meets_the_daily_budget():
    t = FakeTime()
    d = Detector([(10**6, 60), (10**7, 86400)], clock=t)
    sent = 0
    while (a := d.admit("h", "x:443", 10_000)) is None:  # 10 kB per minute: under 1 MB/min
        sent += 10_000
        t.now += 60
    assert a.window_s == 86400 and sent == 10**7


def test_baseline_needs_both_n_sigma_and_the_floor():
    b = Baseline(alpha=0.1, n_sigma=4, floor=1000, warmup=5)
    for x in (10, 12, 9, 11, 10, 10):
        assert not b.anomalous(x)
        b.update(x)
    assert not b.anomalous(500)                       # far above n-sigma, under the floor
    assert b.anomalous(5000)


def test_rate_alert_blocks_and_the_frozen_baseline_cannot_be_ramped():
    t = FakeTime()
    d = Detector(interval=1.0, n_sigma=4, floor_bps=10_000, warmup=5, clock=t)

    def second(n: int):
        if n:
            assert d.admit("c", "x:443", n) is None or ("client", "c") in d.open
        t.now += 1
        return d.tick()

    for _ in range(10):
        assert second(1000) == []                     # 1 kB/s is normal
    alerts = second(1_000_000)
    assert {a.scope for a in alerts} == {"client", "destination"}
    assert all(a.clients == ("c",) for a in alerts)
    mean = d.baseline("client", "c").mean
    for _ in range(20):                               # pushing while blocked changes nothing
        second(1_000_000)
    assert d.baseline("client", "c").mean == mean and d.baseline("client", "c").frozen
    assert len(d.close("c")) == 2
    assert not d.baseline("client", "c").frozen


def test_destination_alert_names_every_client_that_sent_to_it():
    t = FakeTime()
    d = Detector(interval=1.0, n_sigma=4, floor_bps=10_000, warmup=3, clock=t)
    for _ in range(5):
        d.admit("a", "x:443", 100)
        t.now += 1
        d.tick()
    for c in ("a", "b", "c"):                         # each under the client floor... together over
        d.admit(c, "x:443", 9_000)
    t.now += 1
    dest = [a for a in d.tick() if a.scope == "destination"]
    assert dest and dest[0].clients == ("a", "b", "c")
