"""Gateway benchmark: a fast fake upstream and a load generator, all on loopback; prints JSON.

For 1, 16 and 128 concurrent clients it measures, directly against the fake upstream and
through `asl3 serve` in front of it (interleaved, same run, so only ratios matter):
- non-streaming latency p50/p99 and the gateway's added p50;
- streaming throughput (response characters/s, also as upstream tokens/s) and its ratio;
- errors;
- with --bare-proxy, non-streaming latency through a bare relay on the same stack (uvicorn,
  Starlette, the gateway's pooled upstream client) that checks nothing: the part of the added
  latency that any Python proxy on this stack pays, whatever it does.
Then a soak: 128 concurrent streams through the gateway for --soak seconds. Finally the
gateway is stopped (it drains its event queue) and the events in its store are counted
against the requests the load generator sent through it.

The fake upstream streams --tokens word tokens per response, --token-delay seconds apart
(default 0.01 s, 100 tokens/s per stream, faster than most served models); --token-delay 0
streams as fast as the machine allows, which measures CPU contention on a small machine
rather than the gateway's effect on a real model's stream.

Usage: python bench/gateway.py [--clients 1 16 128] [--seconds 8] [--soak 60]
                               [--token-delay 0.01] [--tokens 80] [--stage2 auto|on|off]
                               [--bare-proxy]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "How do mRNA vaccines train the immune system, and why do some need a booster?",
    "Summarize the history of the Biological Weapons Convention in a paragraph.",
    "What is the difference between fission and fusion, in simple terms?",
    "Write a short poem about autumn rain on a city street.",
    "Explain how a hash table handles collisions, with a small example in Python.",
    "Which safety rules apply when working with bleach and ammonia at home?",
]
ANSWER = (
    "Vaccines work by showing the immune system a harmless piece or copy of a pathogen, so "
    "that B cells learn to make matching antibodies and T cells learn to recognise infected "
    "cells. Memory cells formed during this first encounter stay in the body for years. When "
    "the real pathogen arrives later, these cells respond within days instead of weeks, which "
    "is why vaccinated people usually have milder illness. Some vaccines need boosters because "
    "antibody levels fall over time, and a second dose reminds the memory cells of the target. "
    "Public health agencies publish schedules that balance protection, safety and supply.")


# -- the fake upstream (run in its own process) ----------------------------------------------
def fake_upstream_app(tokens: int, delay: float) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    base = ANSWER.split()
    words = [(" " if i else "") + base[i % len(base)] for i in range(tokens)]
    text = "".join(words)
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "bench"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        obj = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    pieces = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": w}) for w in words]
    tail = chunk({}, "stop") + b"data: [DONE]\n\n"
    whole = json.dumps({"id": "chatcmpl-bench", "object": "chat.completion", "created": 0,
                        "model": "bench", "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": text}}]}).encode()

    async def chat(request: Request) -> Response:
        body = await request.json()
        if not body.get("stream"):
            return Response(whole, media_type="application/json")

        async def gen():
            for p in pieces:
                yield p
                if delay:
                    await asyncio.sleep(delay)
            yield tail

        return StreamingResponse(gen(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "bench", "object": "model"}]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/models", models)])


def bare_proxy_app(upstream: str) -> Any:
    """The floor of the gateway's stack: the same server (uvicorn, Starlette) and the same
    pooled upstream client (asl3's HttpUpstream), relaying a non-streaming completion with no
    checks, no store, no metrics. What ``asl3 serve`` adds above this is asl3's own work."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from asl3.gateway.upstream import HttpUpstream

    client = HttpUpstream(upstream, read_timeout=60.0)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        await client.aclose()

    async def chat(request: Request) -> Response:
        return JSONResponse(await client.complete(await request.json()))

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])],
                     lifespan=lifespan)


# -- helpers ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {url}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"server did not come up: {url}")


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


class Load:
    """Closed-loop clients: each sends its next request as soon as the last one is done."""

    def __init__(self, base: str, key: str | None) -> None:
        self.base = base
        self.headers = {"authorization": f"Bearer {key}"} if key else {}
        self.sent = 0

    async def run(self, clients: int, seconds: float, stream: bool) -> dict[str, Any]:
        lat: list[float] = []
        chars = 0
        errors: dict[str, int] = {}
        stop = time.perf_counter() + seconds
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=self.base, headers=self.headers, limits=limits,
                                     timeout=httpx.Timeout(60.0)) as client:
            async def one(i: int) -> None:
                nonlocal chars
                k = i
                while time.perf_counter() < stop:
                    body = {"model": "bench", "stream": stream,
                            "messages": [{"role": "user", "content": PROMPTS[k % len(PROMPTS)]}]}
                    k += clients
                    t = time.perf_counter()
                    self.sent += 1
                    try:
                        if stream:
                            got = 0
                            async with client.stream("POST", "/chat/completions", json=body) as r:
                                if r.status_code != 200:
                                    raise RuntimeError(f"HTTP {r.status_code}")
                                async for line in r.aiter_lines():
                                    if line.startswith("data: {"):
                                        obj = json.loads(line[6:])
                                        for ch in obj.get("choices") or []:
                                            got += len(ch.get("delta", {}).get("content") or "")
                            chars += got
                        else:
                            r = await client.post("/chat/completions", json=body)
                            if r.status_code != 200:
                                raise RuntimeError(f"HTTP {r.status_code}")
                            chars += len(r.json()["choices"][0]["message"]["content"])
                        lat.append(time.perf_counter() - t)
                    except Exception as err:  # noqa: BLE001 - every failure is counted
                        name = str(err) if isinstance(err, RuntimeError) else type(err).__name__
                        if os.environ.get("ASL3_BENCH_VERBOSE"):
                            print(f"bench: {name}: {err!r} after {time.perf_counter() - t:.2f} s",
                                  file=sys.stderr)
                        errors[name] = errors.get(name, 0) + 1

            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(clients)))
            elapsed = time.perf_counter() - t0
        return {"requests": len(lat), "errors": errors, "elapsed_s": round(elapsed, 2),
                "p50_ms": round(pct(lat, 0.5) * 1e3, 3), "p99_ms": round(pct(lat, 0.99) * 1e3, 3),
                "chars_per_s": round(chars / elapsed, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 16, 128])
    ap.add_argument("--seconds", type=float, default=8.0, help="per measurement (default 8)")
    ap.add_argument("--soak", type=float, default=60.0, help="128-stream soak seconds (0: skip)")
    ap.add_argument("--token-delay", type=float, default=0.01)
    ap.add_argument("--tokens", type=int, default=80, help="tokens per response (default 80)")
    ap.add_argument("--stage2", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--gateway-log", metavar="FILE",
                    help="write the gateway's stderr (uvicorn and asl3 messages) here")
    ap.add_argument("--bare-proxy", action="store_true",
                    help="also measure non-streaming latency through a bare relay on the same "
                         "stack (uvicorn, Starlette, the upstream client) with no checks: "
                         "the stack's own floor")
    ap.add_argument("--serve-fake", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--serve-bare", nargs=2, metavar=("PORT", "UPSTREAM"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve_bare:
        import uvicorn

        uvicorn.run(bare_proxy_app(a.serve_bare[1]), host="127.0.0.1", port=int(a.serve_bare[0]),
                    log_level="warning", access_log=False, timeout_keep_alive=65)
        return
    if a.serve_fake:
        import uvicorn

        uvicorn.run(fake_upstream_app(a.tokens, a.token_delay), host="127.0.0.1",
                    port=a.serve_fake, log_level="warning", access_log=False)
        return

    from asl3.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="asl3-bench-"))
    db = f"sqlite:///{tmp / 'events.db'}"
    store = Store(db)
    key = store.add_key("bench").key
    store.close()
    up_port, gw_port = free_port(), free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    fake = subprocess.Popen([sys.executable, __file__, "--serve-fake", str(up_port), "--tokens",
                             str(a.tokens), "--token-delay", str(a.token_delay)], env=env)
    asl3 = str(Path(sys.executable).with_name("asl3"))
    gw_log = (open(a.gateway_log, "w") if a.gateway_log  # noqa: SIM115 (lives as long as gw)
              else subprocess.DEVNULL)
    gw = subprocess.Popen([asl3, "serve", "--upstream", f"http://127.0.0.1:{up_port}/v1",
                           "--db", db, "--port", str(gw_port), "--quiet", "--retain-text", "none",
                           "--stage2", a.stage2], env=env, stdout=gw_log, stderr=gw_log)
    direct_url, gw_url = f"http://127.0.0.1:{up_port}/v1", f"http://127.0.0.1:{gw_port}/v1"
    bare = bare_url = None
    if a.bare_proxy:
        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, __file__, "--serve-bare", str(bare_port),
                                 direct_url], env=env)
        bare_url = f"http://127.0.0.1:{bare_port}/v1"
    out: dict[str, Any] = {"tokens_per_response": a.tokens, "token_delay_s": a.token_delay,
                           "prompt_chars": [min(map(len, PROMPTS)), max(map(len, PROMPTS))]}
    try:
        wait_up(direct_url + "/models", fake)
        wait_up(f"http://127.0.0.1:{gw_port}/healthz", gw)
        out["stages"] = httpx.get(f"http://127.0.0.1:{gw_port}/healthz").json()["stages"]
        direct, through = Load(direct_url, None), Load(gw_url, key)
        relay = Load(bare_url, None) if bare_url else None
        asyncio.run(through.run(4, 2.0, False))  # warm-up (caches, connections)
        asyncio.run(direct.run(4, 1.0, False))
        if relay is not None and bare is not None:
            wait_up(bare_url + "/chat/completions", bare)  # up once it answers (405)
            asyncio.run(relay.run(4, 1.0, False))
        for c in a.clients:
            row: dict[str, Any] = {}
            for stream in (False, True):
                d = asyncio.run(direct.run(c, a.seconds, stream))
                g = asyncio.run(through.run(c, a.seconds, stream))
                name = "streaming" if stream else "non_streaming"
                row[name] = {"direct": d, "gateway": g}
                if relay is not None and not stream:
                    b = asyncio.run(relay.run(c, a.seconds, stream))
                    row[name]["bare_proxy"] = b
                    row[name]["bare_proxy_added_p50_ms"] = round(b["p50_ms"] - d["p50_ms"], 3)
                if stream:
                    row[name]["throughput_ratio"] = round(g["chars_per_s"] / max(d["chars_per_s"], 1e-9), 3)
                else:
                    row[name]["added_p50_ms"] = round(g["p50_ms"] - d["p50_ms"], 3)
            out[f"clients_{c}"] = row
        if a.soak:
            out["soak_128_streams"] = asyncio.run(through.run(128, a.soak, True))
        out["requests_sent_through_gateway"] = through.sent
    finally:
        gw.send_signal(signal.SIGINT)
        try:
            gw.wait(120)
        except subprocess.TimeoutExpired:
            gw.kill()
        fake.terminate()
        fake.wait(30)
        if bare is not None:
            bare.terminate()
            bare.wait(30)
        if gw_log is not subprocess.DEVNULL:
            gw_log.close()
    store = Store(db)
    out["events_in_store"] = store.count_events()
    out["events_dropped"] = store.dropped_total()
    store.close()
    out["every_request_recorded"] = out["events_in_store"] == out.get("requests_sent_through_gateway")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
