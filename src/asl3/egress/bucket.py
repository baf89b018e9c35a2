"""Token buckets: shaping that slows traffic down instead of dropping it.

A bucket holds at most `burst` tokens (bytes) and gains `rate` per second. `consume(n)` takes n
tokens at once, letting the level go negative (a debt), and sleeps until the debt is paid back:
concurrent consumers queue behind each other's debt, so the long-run rate is exact whatever the
chunk sizes, and a chunk larger than the burst still passes (after waiting). Lateness of the
sleep is not lost: the refill uses the clock, capped at `burst` (which should therefore cover
the scheduler's jitter; `default_burst` gives 10 ms of traffic, at least 256 KiB).

`Limiter` composes an enclave-wide bucket with one bucket per client: a chunk waits for its
client's bucket first, then for the global one (so a client held back by its own limit does not
reserve global tokens it cannot use yet).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]


def default_burst(rate: float) -> float:
    return max(256 * 1024.0, rate * 0.01)


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None, *, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep) -> None:
        if not rate > 0:
            raise ValueError("a token bucket's rate must be above zero")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else default_burst(rate))
        if not self.burst > 0:
            raise ValueError("a token bucket's burst must be above zero")
        self._clock = clock
        self._sleep = sleep
        self.tokens = self.burst
        self._last = clock()

    @property
    def unlimited(self) -> bool:
        return math.isinf(self.rate)

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = now

    def reserve(self, n: int) -> float:
        """Take n tokens now; return the seconds to wait before sending them (0 if none)."""
        if self.unlimited:
            return 0.0
        self._refill()
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    async def consume(self, n: int) -> float:
        """Take n tokens, sleeping until they are paid for; returns the seconds slept."""
        wait = self.reserve(n)
        if wait > 0:
            await self._sleep(wait)
        return wait


class Limiter:
    """A global bucket (None: no enclave-wide limit) and per-client buckets (None: none)."""

    def __init__(self, rate: float | None = None, burst: float | None = None,
                 client_rate: float | None = None, client_burst: float | None = None, *,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        def usable(r: float | None) -> bool:
            return r is not None and math.isfinite(r)

        self._clock, self._sleep = clock, sleep
        self.global_bucket = (TokenBucket(rate, burst, clock=clock, sleep=sleep)  # type: ignore[arg-type]
                              if usable(rate) else None)
        self.client_rate = client_rate if usable(client_rate) else None
        self.client_burst = client_burst
        self.clients: dict[str, TokenBucket] = {}

    def bucket(self, client: str) -> TokenBucket | None:
        if self.client_rate is None:
            return None
        b = self.clients.get(client)
        if b is None:
            b = self.clients[client] = TokenBucket(self.client_rate, self.client_burst,
                                                   clock=self._clock, sleep=self._sleep)
        return b

    async def consume(self, client: str, n: int) -> float:
        slept = 0.0
        b = self.bucket(client)
        if b is not None:
            slept += await b.consume(n)
        if self.global_bucket is not None:
            slept += await self.global_bucket.consume(n)
        return slept
