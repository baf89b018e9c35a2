"""Upstream client cost: sequential chat completions against the bench's fake upstream.

Why this exists: the gateway's added latency budget at one client is 2 ms, and the HTTP
client it uses to call the model server is the largest single part of it. This compares, on
one event loop (uvloop, as uvicorn runs the gateway), a pooled ``httpx.AsyncClient``, httpx
over an aiohttp transport (when ``httpx-aiohttp`` is installed) and a pooled
``aiohttp.ClientSession`` (what ``asl3.gateway.upstream.HttpUpstream`` uses). Each round
times ``--calls`` sequential calls per client, the clients taking turns, so drifts in the
machine's speed hit all of them alike. Prints JSON: per client, the median over rounds of
each round's median latency in ms. The fake upstream runs in its own process, as in
bench/gateway.py; its time is in every figure, so compare the differences.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).parent))
import gateway as bench  # noqa: E402  (the fake upstream and helpers)

BODY = {"model": "bench", "messages": [{"role": "user", "content": "How do vaccines work?"}]}


async def measure(base: str, rounds: int, calls: int) -> dict[str, float]:
    hx = httpx.AsyncClient(base_url=base)
    clients: dict[str, Callable[[], Awaitable[object]]] = {}

    async def via_httpx() -> object:
        return (await hx.post("chat/completions", json=BODY)).json()

    clients["httpx"] = via_httpx
    closers = [hx.aclose]
    try:
        from httpx_aiohttp import AiohttpTransport

        hxa = httpx.AsyncClient(base_url=base, transport=AiohttpTransport())

        async def via_httpx_aiohttp() -> object:
            return (await hxa.post("chat/completions", json=BODY)).json()

        clients["httpx_aiohttp_transport"] = via_httpx_aiohttp
        closers.append(hxa.aclose)
    except ImportError:
        pass
    session = aiohttp.ClientSession()

    async def via_aiohttp() -> object:
        async with session.post(base + "chat/completions", json=BODY) as r:
            return json.loads(await r.read())

    clients["aiohttp"] = via_aiohttp
    closers.append(session.close)
    medians: dict[str, list[float]] = {k: [] for k in clients}
    for _ in range(rounds):
        for name, call in clients.items():
            for _ in range(calls // 8):  # warm the pool and the caches
                await call()
            times = []
            for _ in range(calls):
                t = time.perf_counter()
                await call()
                times.append(time.perf_counter() - t)
            medians[name].append(statistics.median(times) * 1e3)
    for close in closers:
        await close()
    return {k: round(statistics.median(v), 3) for k, v in medians.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6, help="rounds (each client once per round)")
    ap.add_argument("--calls", type=int, default=400, help="timed calls per client per round")
    a = ap.parse_args()
    port = bench.free_port()
    fake = subprocess.Popen([sys.executable, str(Path(__file__).parent / "gateway.py"),
                             "--serve-fake", str(port)])
    try:
        bench.wait_up(f"http://127.0.0.1:{port}/v1/models", fake)
        import uvloop

        got = uvloop.run(measure(f"http://127.0.0.1:{port}/v1/", a.rounds, a.calls))
    finally:
        fake.terminate()
        fake.wait()
    print(json.dumps({"p50_ms_median_of_rounds": got, "rounds": a.rounds,
                      "calls_per_round": a.calls}, indent=2))


if __name__ == "__main__":
    main()
