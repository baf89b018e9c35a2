"""The egress proxy's blocks and unblocks in the event store (`--store URL`, `asl3 egress alerts`).

Specification: with a store, every block and every unblock of the proxy becomes a row of the
store's `egress_alerts` table (one per client a block names) with the alert's fields (kind,
scope, key, destination, reason, bytes or rate against the limit, window) and, for unblocks, who
used which change. Rows are written off the event loop: a store that is down, unreachable or
slow neither stops nor delays a block (the alert file is still written at once; failures are
logged and counted in `asl3_egress_store_failures_total`). `asl3 egress alerts` lists them,
newest first, as a table or JSON, by client and age. Store tests run on SQLite and on a real
PostgreSQL, as in test_store.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text

from asl3.cli import main
from asl3.egress.alertstore import AlertStore, store_records
from asl3.store import EgressAlert, Store
from test_egress_proxy import A, B, connect, running, send

UTC = timezone.utc


def block(client="10.0.0.7", at=None, **kw) -> EgressAlert:
    base = dict(time=at or datetime.now(UTC), event="block", client=client, clients=(client,),
                kind="budget", scope="client", key=client, dest="pypi.org:443",
                reason="budget of 1.00 MB per 1 h would be exceeded", observed=1_200_000.0,
                limit=1_000_000.0, window_s=3600.0, details={"event": "block", "n": 1})
    return EgressAlert(**{**base, **kw})


# -- the store ----------------------------------------------------------------------------------
def test_egress_alerts_round_trip_every_field(store):
    b = block()
    u = EgressAlert(time=b.time + timedelta(minutes=5), event="unblock", client="10.0.0.7",
                    clients=("10.0.0.7",), kind="budget", reason="nightly backup", by="alice",
                    change="c-123", details={"approvers": ["bob", "carol"]})
    store.add_egress_alerts([b, u])
    got = store.egress_alerts()
    assert [g.event for g in got] == ["unblock", "block"]  # newest first
    assert all(g.id is not None for g in got)
    assert got[1] == EgressAlert(**{**b.__dict__, "id": got[1].id})
    assert got[0].by == "alice" and got[0].change == "c-123"
    assert got[0].details == {"approvers": ["bob", "carol"]}
    assert got[0].time.utcoffset() == timedelta(0)


def test_egress_alerts_filter_by_client_and_age_with_a_limit(store):
    now = datetime.now(UTC)
    store.add_egress_alerts([block("10.0.0.7", now - timedelta(hours=30)),
                             block("10.0.0.8", now - timedelta(hours=2)),
                             block("10.0.0.7", now - timedelta(hours=1)),
                             block("2001:db8::1", now)])
    assert len(store.egress_alerts()) == 4
    assert [a.client for a in store.egress_alerts(client="10.0.0.7")] == ["10.0.0.7"] * 2
    assert [a.client for a in store.egress_alerts(since=now - timedelta(hours=24))] == [
        "2001:db8::1", "10.0.0.7", "10.0.0.8"]
    assert len(store.egress_alerts(2)) == 2
    assert store.egress_alerts(client="10.0.0.9") == []


def test_a_destination_block_is_one_row_per_client_and_an_unblock_one_row():
    rec = {"event": "block", "time": 1_800_000_000.0, "kind": "rate", "scope": "destination",
           "key": "x.org:443", "clients": ["10.0.0.7", "10.0.0.8"], "reason": "too fast",
           "observed": 9e7, "limit": 5e7, "window_s": 1.0, "at": 12.0, "dest": "x.org:443"}
    rows = store_records(rec)
    assert [r.client for r in rows] == ["10.0.0.7", "10.0.0.8"]
    assert all(r.clients == ("10.0.0.7", "10.0.0.8") and r.dest == "x.org:443" for r in rows)
    assert rows[0].time == datetime.fromtimestamp(1_800_000_000.0, UTC)
    assert rows[0].details == rec
    un = store_records({"event": "unblock", "time": 1_800_000_100.0, "client": "10.0.0.8",
                        "by": "alice", "reason": "ok", "change": "c1", "was": rec})
    assert len(un) == 1 and un[0].client == "10.0.0.8" and un[0].kind == "rate"
    assert (un[0].by, un[0].change, un[0].reason) == ("alice", "c1", "ok")


def test_a_new_table_only_an_existing_database_gains_it(tmp_path):
    """Additions only: an event store made before this table opens and gains it."""
    path = tmp_path / "old.db"
    with Store(f"sqlite:///{path}") as s:
        s.add_key("alice")
    eng = create_engine(f"sqlite:///{path}")
    with eng.begin() as c:
        c.execute(text("DROP TABLE egress_alerts"))
    eng.dispose()
    with Store(f"sqlite:///{path}") as s:
        assert s.egress_alerts() == [] and len(s.list_keys()) == 1
        s.add_egress_alerts([block()])
        assert len(s.egress_alerts()) == 1


# -- the proxy writes them ----------------------------------------------------------------------
async def blocked_by_budget(proxy, src=A, n=1_000_000) -> None:
    """Push n bytes from src until the proxy cuts the tunnel."""
    r, w, _ = await connect(proxy, proxy.sink.port, src)
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await send(w, n)
        await asyncio.wait_for(r.readexactly(1), 5)
    w.close()
    assert src in proxy.blocked


async def until(cond, timeout=10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


def test_blocks_and_unblocks_land_in_the_store_with_the_right_fields(tmp_path, url):
    async def main():
        async with running(tmp_path, budgets=[(100_000, 60.0)], store_url=url) as p:
            await blocked_by_budget(p)
            await until(lambda: p.alert_store.written == 1)
            await p.record_unblock(p.unblock(A, "alice", "approved change", {
                "change": "c-42", "proposer": "bob", "approvers": ["carol"]}))
            await until(lambda: p.alert_store.written == 2)
            return p.sink.port

    port = asyncio.run(main())
    with Store(url) as s:
        un, b = s.egress_alerts()
    assert (b.event, b.client, b.clients, b.kind, b.scope, b.key) == (
        "block", A, (A,), "budget", "client", A)
    assert b.dest == f"127.0.0.1:{port}" and b.limit == 100_000 and b.window_s == 60
    assert b.observed > 100_000 and "budget of 100.00 kB per 60.0 s" in b.reason
    file_rec = json.loads((tmp_path / "alerts.jsonl").read_text().splitlines()[0])
    assert b.details == file_rec  # the same record as the alert file's
    assert (un.event, un.client, un.by, un.change, un.kind) == (
        "unblock", A, "alice", "c-42", "budget")
    assert un.details["approvers"] == ["carol"]


def test_a_broken_store_does_not_stop_blocking_and_is_counted(tmp_path, caplog):
    broken = f"sqlite:///{tmp_path / 'no-such-dir' / 'x.db'}"

    async def main():
        async with running(tmp_path, budgets=[(100_000, 60.0)], store_url=broken) as p:
            await blocked_by_budget(p)
            _, _, head = await connect(p, p.sink.port, A)
            assert head.startswith("HTTP/1.1 403")
            await until(lambda: p.alert_store.failures >= 1)
            sample = p.metrics.registry.get_sample_value
            assert sample("asl3_egress_store_failures_total") >= 1
            assert sample("asl3_egress_store_pending") == 1  # kept for another try
            _, _, head = await connect(p, p.sink.port, B)  # the proxy still serves others
            assert head.startswith("HTTP/1.1 200")

    with caplog.at_level(logging.ERROR, logger="asl3.egress"):
        asyncio.run(main())
    lines = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [x["event"] for x in lines] == ["block"]  # the first record is intact
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("x.db" in m and "the block holds" in m and "no such directory" in m
               for m in errors), errors
    assert any("did not reach store" in m for m in errors), errors


def test_a_slow_store_never_delays_a_block(tmp_path, monkeypatch):
    release = threading.Event()

    class Slow:
        def add_egress_alerts(self, rows):
            release.wait(20)
            raise RuntimeError("database gone away")

        def close(self):
            pass

    monkeypatch.setattr("asl3.store.Store", lambda url: Slow())

    async def main():
        async with running(tmp_path, budgets=[(100_000, 60.0)],
                           store_url=f"sqlite:///{tmp_path / 's.db'}") as p:
            t0 = time.monotonic()
            await blocked_by_budget(p)
            await blocked_by_budget(p, B)  # a second block while the first write hangs
            assert time.monotonic() - t0 < 2.0
            assert p.alert_store.pending == 2
            release.set()

    asyncio.run(main())


def test_a_store_that_comes_back_gets_what_waited(tmp_path, monkeypatch):
    monkeypatch.setattr("asl3.egress.alertstore.RETRY_S", (0.05,))
    url = f"sqlite:///{tmp_path / 'late' / 'x.db'}"
    s = AlertStore(url)
    s.start()
    s.submit({"event": "block", "time": time.time(), "clients": ["10.0.0.7"], "kind": "budget"})
    end = time.monotonic() + 5
    while s.failures < 2 and time.monotonic() < end:
        time.sleep(0.02)
    (tmp_path / "late").mkdir()
    while s.written < 1 and time.monotonic() < end:
        time.sleep(0.02)
    s.close()
    assert s.written == 1 and s.pending == 0
    with Store(url) as st:
        assert [a.client for a in st.egress_alerts()] == ["10.0.0.7"]


# -- the command line ---------------------------------------------------------------------------
def test_cli_lists_alerts_as_a_table_or_json_by_client_and_age(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    now = datetime.now(UTC)
    with Store(url) as s:
        s.add_egress_alerts([
            block("10.0.0.7", now - timedelta(days=3)),
            block("10.0.0.8", now - timedelta(minutes=5), kind="rate", scope="destination",
                  key="x.org:443", dest="x.org:443", observed=9e7, limit=5e7, window_s=1.0,
                  reason="destination rate 90.0 MB/s above its baseline"),
            EgressAlert(time=now, event="unblock", client="10.0.0.8", reason="backup",
                        by="alice", change="c-9")])
    assert main(["egress", "alerts", "--store", url]) == 0
    out = capsys.readouterr().out
    for s in ("10.0.0.7", "10.0.0.8", "unblock", "alice", "c-9", "1.20 MB of 1.00 MB",
              "destination rate to x.org:443"):
        assert s in out, (s, out)
    assert out.index("unblock") < out.index("10.0.0.7")  # newest first

    assert main(["egress", "alerts", "--store", url, "--json", "--since", "24h"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["event"], r["client"]) for r in rows] == [("unblock", "10.0.0.8"),
                                                         ("block", "10.0.0.8")]
    assert rows[1]["limit"] == 5e7 and rows[0]["change"] == "c-9"

    assert main(["egress", "alerts", "--store", url, "--client", "10.0.0.7", "--json"]) == 0
    assert [r["client"] for r in json.loads(capsys.readouterr().out)] == ["10.0.0.7"]
    assert main(["egress", "alerts", "--store", url, "--client", "10.0.0.9"]) == 0
    assert "no egress blocks or unblocks" in capsys.readouterr().out
    assert main(["egress", "alerts", "--store", url, "--client", "nobody"]) == 2
    assert "not an IP address" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["egress", "alerts", "--store", url, "--limit", "0"])


def test_cli_refuses_a_malformed_store_url_in_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "asl3.cli", "egress", "proxy", "--listen",
                        "127.0.0.1:0", "--rate", "unlimited", "--store", "mysql://u@h/db"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "asl3 stores events in SQLite" in p.stderr and len(p.stderr.splitlines()) == 1


class _Sink(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Drain(socketserver.BaseRequestHandler):
    def handle(self):
        with contextlib.suppress(OSError):
            while self.request.recv(65536):
                pass


def test_cli_end_to_end_a_block_reaches_the_store_and_the_state_file(tmp_path, capsys):
    """`asl3 egress proxy --store --state` as a process: a client over a tiny budget is blocked,
    `asl3 egress alerts` shows the row, and SIGTERM leaves a state file holding the count."""
    db, state = f"sqlite:///{tmp_path / 'asl3.db'}", tmp_path / "state.json"
    sink = _Sink(("127.0.0.1", 0), _Drain)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    proxy = subprocess.Popen(
        [sys.executable, "-m", "asl3.cli", "egress", "proxy", "--listen", "127.0.0.1:0",
         "--rate", "unlimited", "--budget", "100kB/1h", "--allow-dest", "127.0.0.1",
         "--alerts", str(tmp_path / "alerts.jsonl"), "--store", db, "--state", str(state),
         "--event-loop", "asyncio", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(json.loads(proxy.stdout.readline())["listen"].rsplit(":", 1)[1])
        c = socket.create_connection(("127.0.0.1", port), source_address=(A, 0))
        c.sendall(f"CONNECT 127.0.0.1:{sink.server_address[1]} HTTP/1.1\r\n\r\n".encode())
        assert c.recv(4096).startswith(b"HTTP/1.1 200")
        with pytest.raises(OSError):
            for _ in range(100):
                c.sendall(b"\0" * 65536)
                time.sleep(0.01)
        c.close()
        rows: list = []
        for _ in range(100):
            assert main(["egress", "alerts", "--store", db, "--json"]) == 0
            rows = json.loads(capsys.readouterr().out)
            if rows:
                break
            time.sleep(0.1)
        assert [(r["event"], r["client"], r["kind"], r["limit"]) for r in rows] == [
            ("block", A, "budget", 100_000)]
        proxy.send_signal(signal.SIGTERM)
        _, err = proxy.communicate(timeout=30)
    finally:
        if proxy.poll() is None:
            proxy.kill()
        sink.shutdown()
    assert proxy.returncode == 0, err
    saved = json.loads(state.read_text())
    assert 0 < sum(b for _, b in saved["counters"][A][0]["slots"]) <= 100_000
    assert [a["key"] for a in saved["open"]] == [A]
