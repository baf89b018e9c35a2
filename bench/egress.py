"""Egress proxy benchmark: shaping accuracy, overhead against a direct transfer, concurrency.

Runs `asl3 egress proxy` as a subprocess on loopback and a sink in another process, and prints
one JSON object:

- shaping: for each (size, rate), the measured rate of a transfer through the proxy (time from
  the first byte sent to the sink's receipt of the last) and its error against the setting;
  the acceptance bar is +-10% for 50 MB at 1, 10 and 100 MB/s (1 MB/s takes 50 s: shorten
  with --sizes/--rates);
- overhead: throughput through the proxy at --rate unlimited against a direct loopback transfer
  of the same size, same sender and sink (the bar: ratio >= 0.8), with the CPU seconds per GB
  that the sender, the sink and the proxy spent (all three share the machine's cores);
- concurrency: N tunnels opened at once, each sending a little and waiting for the sink's
  answer; errors counted (the bar: 500 without errors).

example:
  python bench/egress.py                                   # the full acceptance run
  python bench/egress.py --only overhead                   # throughput against direct only
  python bench/egress.py --only overhead --proxy-arg=--event-loop=asyncio
  python bench/egress.py --sizes 10MB --rates 10MB/s 100MB/s --tunnels 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import resource
import socket
import socketserver
import subprocess
import sys
import time

from asl3.egress.units import parse_rate, parse_size

BUF = memoryview(b"\0" * (1 << 20))
PARTS = ["shaping", "overhead", "tunnels"]
EXTRA: list[str] = []  # --proxy-arg


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc), NaN elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def own_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class _Sink(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        n = 0
        buf = bytearray(1 << 20)
        while True:
            k = self.request.recv_into(buf)
            if not k:
                break
            n += k
        self.request.sendall(f"got {n}".encode())


def _serve_sink(port_q: mp.Queue) -> None:  # type: ignore[type-arg]
    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 2048

    with Server(("127.0.0.1", 0), _Sink) as srv:
        port_q.put(srv.server_address[1])
        srv.serve_forever()


def start_sink() -> tuple[mp.Process, int]:
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    p = mp.Process(target=_serve_sink, args=(q,), daemon=True)
    p.start()
    return p, q.get(timeout=10)


def start_proxy(rate: str, extra: list[str] | None = None) -> tuple[subprocess.Popen, int]:  # type: ignore[type-arg]
    extra = [*EXTRA, *(extra or [])]
    cmd = [sys.executable, "-m", "asl3.cli", "egress", "proxy", "--listen", "127.0.0.1:0",
           "--rate", rate, "--allow-dest", "127.0.0.1", "--json", "--quiet", *(extra or [])]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()  # type: ignore[union-attr]
    if not line:
        raise SystemExit(f"proxy did not start: {' '.join(cmd)}")
    return p, int(json.loads(line)["listen"].rsplit(":", 1)[1])


def transfer(port: int, size: int, sink_port: int, via_proxy: bool) -> float:
    """Send size bytes to the sink (directly, or through a CONNECT tunnel); seconds taken."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if via_proxy:
        s.sendall(f"CONNECT 127.0.0.1:{sink_port} HTTP/1.1\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1024)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode(errors="replace"))
    t0 = time.perf_counter()
    sent = 0
    while sent < size:
        n = min(len(BUF), size - sent)
        s.sendall(BUF[:n])
        sent += n
    s.shutdown(socket.SHUT_WR)
    reply = s.recv(100)
    elapsed = time.perf_counter() - t0
    s.close()
    if reply != f"got {size}".encode():
        raise RuntimeError(f"sink answered {reply!r}")
    return elapsed


async def concurrent_tunnels(port: int, sink_port: int, n: int) -> dict[str, object]:
    errors: list[str] = []

    async def one() -> None:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(f"CONNECT 127.0.0.1:{sink_port} HTTP/1.1\r\n\r\n".encode())
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head[:40])
            w.write(b"x" * 10_000)
            w.write_eof()
            if await asyncio.wait_for(r.read(), 30) != b"got 10000":
                raise RuntimeError("short answer")
            w.close()
        except Exception as e:
            errors.append(repr(e)[:120])

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return {"tunnels": n, "errors": len(errors), "seconds": round(time.perf_counter() - t0, 3),
            "first_errors": errors[:3]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["50MB"], help="transfer sizes (default 50MB)")
    ap.add_argument("--rates", nargs="+", default=["1MB/s", "10MB/s", "100MB/s"],
                    help="rate settings (default 1MB/s 10MB/s 100MB/s)")
    ap.add_argument("--throughput-size", default="1GB", help="size for the overhead test")
    ap.add_argument("--tunnels", type=int, default=500, help="concurrent tunnels (default 500)")
    ap.add_argument("--skip", nargs="*", default=[], choices=PARTS)
    ap.add_argument("--only", nargs="+", choices=PARTS,
                    help="run only these parts (e.g. --only overhead)")
    ap.add_argument("--proxy-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for 'asl3 egress proxy', repeatable "
                         "(e.g. --proxy-arg=--event-loop=asyncio)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="overhead: transfers each way, the fastest counts (default 3)")
    a = ap.parse_args()
    if a.only:
        a.skip = [p for p in PARTS if p not in a.only]
    EXTRA[:] = a.proxy_arg
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    sink, sink_port = start_sink()
    out: dict[str, object] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    try:
        if "shaping" not in a.skip:
            rows = []
            for size_t in a.sizes:
                for rate_t in a.rates:
                    size, rate = parse_size(size_t), parse_rate(rate_t)
                    proxy, port = start_proxy(rate_t)
                    try:
                        t = transfer(port, size, sink_port, True)
                    finally:
                        proxy.terminate()
                        proxy.wait()
                    measured = size / t
                    rows.append({"size": size_t, "rate": rate_t, "seconds": round(t, 3),
                                 "measured_bytes_per_s": round(measured),
                                 "error": round(measured / rate - 1, 4),
                                 "within_10pct": abs(measured / rate - 1) <= 0.10})
            out["shaping"] = rows
        if "overhead" not in a.skip:
            size = parse_size(a.throughput_size)
            proxy, port = start_proxy("unlimited")
            cpu: dict[str, dict[str, float]] = {}

            def timed(way: str, port: int, via: bool) -> float:
                before = (own_cpu_seconds(), cpu_seconds(sink.pid), cpu_seconds(proxy.pid))
                best = min(transfer(port, size, sink_port, via) for _ in range(a.repeat))
                after = (own_cpu_seconds(), cpu_seconds(sink.pid), cpu_seconds(proxy.pid))
                gb = size * a.repeat / 1e9
                cpu[way] = {who: round((y - x) / gb, 3) for who, x, y in
                            zip(("sender", "sink", "proxy"), before, after, strict=True)}
                return best

            try:
                transfer(port, size // 10, sink_port, True)  # warm up
                direct = timed("direct", sink_port, False)
                proxied = timed("proxied", port, True)
            finally:
                proxy.terminate()
                proxy.wait()
            del cpu["direct"]["proxy"]
            out["overhead"] = {"size": a.throughput_size,
                               "direct_bytes_per_s": round(size / direct),
                               "proxy_bytes_per_s": round(size / proxied),
                               "ratio": round(direct / proxied, 3),
                               "cpu_seconds_per_GB": cpu,
                               "proxy_args": EXTRA}
        if "tunnels" not in a.skip:
            proxy, port = start_proxy("unlimited")
            try:
                out["concurrency"] = asyncio.run(concurrent_tunnels(port, sink_port, a.tunnels))
            finally:
                proxy.terminate()
                proxy.wait()
    finally:
        sink.terminate()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
