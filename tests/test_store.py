"""The event and key store, specified on SQLite and on a real PostgreSQL.

Every test that takes ``url`` runs twice: on a fresh SQLite file and in a fresh schema of the
session's PostgreSQL (see ``postgres_url`` in conftest.py; skipped without PostgreSQL unless
ASL3_REQUIRE_POSTGRES=1, as in CI).
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, inspect, text

from asl3.errors import Asl3Error
from asl3.store import Event, EventWriter, ExemptionInfo, Store, StoreError
from asl3.store.engine import resolve_url

UTC = timezone.utc


def event(i: int = 0, *, at: datetime | None = None, **kw) -> Event:
    base = dict(request_id=f"req-{i}", time=at or datetime.now(UTC), principal="alice",
                model="m", stream=False, stage="none", action="pass", status=200, latency_ms=1.5)
    return Event(**{**base, **kw})


def raw_dump(url: str) -> str:
    """Every value of every table, as text: what someone who steals the database would see."""
    eng = create_engine(resolve_url(url))
    out = []
    with eng.connect() as c:
        for table in inspect(c).get_table_names():
            out += [repr(tuple(row)) for row in c.execute(text(f"SELECT * FROM {table}"))]
    eng.dispose()
    return "\n".join(out)


def later(days: float = 30) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


# -- keys -------------------------------------------------------------------------------------
def test_a_new_key_is_random_and_named_by_its_prefix(store):
    new = store.add_key("alice")
    other = store.add_key("alice")
    assert new.name == "alice" and new.key.startswith("asl3_") and len(new.key) == 5 + 43
    assert new.prefix == new.key[:12] and new.key != other.key and new.prefix != other.prefix


def test_a_key_looks_up_its_principal_until_revoked(store):
    new = store.add_key("alice")
    info = store.lookup_key(new.key)
    assert info is not None and info.name == "alice" and info.prefix == new.prefix
    assert info.created.tzinfo is not None and info.created.utcoffset() == timedelta(0)
    assert abs(info.created - datetime.now(UTC)) < timedelta(minutes=1)
    assert info.revoked is None and info.exemptions == ()
    assert store.lookup_key(new.key + "x") is None and store.lookup_key("") is None
    assert store.lookup_key("asl3_\ud800 not even encodable") is None
    assert store.revoke("alice") == 1
    assert store.lookup_key(new.key) is None


def test_keys_are_stored_only_as_sha256(store, url):
    new = store.add_key("alice", [ExemptionInfo("bio.acquisition", later())])
    dump = raw_dump(url)
    assert hashlib.sha256(new.key.encode()).hexdigest() in dump
    assert new.key not in dump and new.key[12:] not in dump and new.key[12:30] not in dump
    assert new.prefix in dump  # the display prefix is all of the key that is kept


def test_revoke_takes_a_principal_name_or_one_key_prefix(store):
    a1, a2, b = store.add_key("alice"), store.add_key("alice"), store.add_key("bob")
    assert store.revoke(a1.prefix) == 1
    assert store.lookup_key(a1.key) is None and store.lookup_key(a2.key) is not None
    assert store.revoke("alice") == 1  # only the key still active
    assert store.revoke("alice") == 0 and store.revoke(a1.prefix) == 0
    assert store.revoke("nobody") == 0 and store.revoke("asl3_nothing") == 0
    assert store.lookup_key(b.key) is not None


def test_list_keys_shows_every_key_oldest_first_but_never_a_key(store):
    keys = [store.add_key(n) for n in ("alice", "bob", "alice")]
    store.revoke("bob")
    listed = store.list_keys()
    assert [(k.name, k.prefix) for k in listed] == [(k.name, k.prefix) for k in keys]
    assert [k.revoked is not None for k in listed] == [False, True, False]
    assert listed[1].revoked.tzinfo is not None
    assert not any(k.key in repr(listed) for k in keys)


def test_principal_names_that_could_pass_for_a_key_prefix_are_refused(store):
    for bad in ("asl3_admin", "", "  ", "a\nb", "x" * 201):
        with pytest.raises(StoreError):
            store.add_key(bad)
    assert store.list_keys() == []


# -- exemptions -------------------------------------------------------------------------------
def test_exemptions_round_trip_as_aware_utc_datetimes(store):
    until = datetime(2031, 5, 6, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    new = store.add_key("lab", [ExemptionInfo("bio.production", until),
                                ExemptionInfo("bio.acquisition", datetime(2031, 1, 1))])
    info = store.lookup_key(new.key)
    assert [e.category for e in info.exemptions] == ["bio.acquisition", "bio.production"]
    acq, prod = info.exemptions
    assert prod.until == until and prod.until.utcoffset() == timedelta(0)
    assert prod.until.hour == 12  # the same instant, expressed in UTC
    assert acq.until == datetime(2031, 1, 1, tzinfo=UTC)  # naive means UTC


def test_exemptions_belong_to_the_principal_and_a_new_grant_replaces_the_old(store):
    k1 = store.add_key("lab", [ExemptionInfo("bio.acquisition", later(10))])
    k2 = store.add_key("lab")
    assert store.lookup_key(k2.key).exemptions == store.lookup_key(k1.key).exemptions
    store.add_exemption("lab", ExemptionInfo("bio.acquisition", later(1)))
    store.add_exemption("lab", ExemptionInfo("chem.acquisition", later(5)))
    ex = {e.category: e.until for e in store.lookup_key(k1.key).exemptions}
    assert set(ex) == {"bio.acquisition", "chem.acquisition"}
    assert ex["bio.acquisition"] < later(2)  # shortened, not added twice


def test_exempting_an_unknown_principal_is_an_error(store):
    with pytest.raises(StoreError, match="no principal named 'ghost'"):
        store.add_exemption("ghost", ExemptionInfo("bio.acquisition", later()))


# -- events -----------------------------------------------------------------------------------
def test_events_round_trip_every_field(store):
    t = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    full = Event(request_id="req-1", time=t, principal="alice", model="gpt-x", stream=True,
                 stage="output", action="block", status=200, latency_ms=123.25,
                 category="bio.acquisition", score=0.97, input_score=0.1, output_score=0.97,
                 threshold=0.8, exempted="chem.acquisition,chem.production",
                 error="client_disconnected", bundle="default@0123456789ab",
                 input_text="the question ✓", output_text="the answer")
    minimal = event(2, at=t + timedelta(seconds=1), principal=None, model=None)
    store.add_events([full, minimal])
    assert store.events() == [minimal, full]  # newest first, equal field by field
    assert store.events()[1].time.utcoffset() == timedelta(0)


def test_events_are_listed_newest_first_with_limit_and_since(store):
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    store.add_events([event(i, at=t0 + timedelta(minutes=i)) for i in range(10)])
    assert [e.request_id for e in store.events(limit=3)] == ["req-9", "req-8", "req-7"]
    since = t0 + timedelta(minutes=7)
    assert [e.request_id for e in store.events(since=since)] == ["req-9", "req-8", "req-7"]
    # the same instant in another time zone selects the same events
    other = since.astimezone(timezone(timedelta(hours=-5)))
    assert len(store.events(since=other)) == 3


def test_count_events_by_action_and_stage(store):
    store.add_events([event(1, action="block", stage="input", status=400),
                      event(2, action="block", stage="output"),
                      event(3, action="pass"), event(4, action="pass"),
                      event(5, action="error", status=504, error="upstream_timeout")])
    assert store.count_events() == 5
    assert store.count_events(action="block") == 2
    assert store.count_events(action="block", stage="input") == 1
    assert store.count_events(stage="none") == 3
    assert store.count_events(action="nothing") == 0


def test_texts_no_database_can_hold_are_stored_with_a_replacement_character(store):
    store.add_events([event(1, input_text="a\x00b", output_text="lone \ud800 surrogate")])
    (e,) = store.events()
    assert e.input_text == "a\ufffdb" and e.output_text == "lone \ufffd surrogate"


def test_purge_texts_erases_old_texts_and_keeps_the_decisions(store):
    now = datetime.now(UTC)
    store.add_events([event(1, at=now - timedelta(days=40), input_text="old", output_text="o"),
                      event(2, at=now - timedelta(days=31), input_text="old too"),
                      event(3, at=now - timedelta(days=40)),
                      event(4, at=now, input_text="new", output_text="n")])
    assert store.purge_texts(now - timedelta(days=30)) == 2
    by_id = {e.request_id: e for e in store.events()}
    assert len(by_id) == 4
    assert by_id["req-1"].input_text is None and by_id["req-1"].output_text is None
    assert by_id["req-2"].input_text is None
    assert (by_id["req-4"].input_text, by_id["req-4"].output_text) == ("new", "n")
    assert store.purge_texts(now - timedelta(days=30)) == 0


def test_dropped_counts_add_up(store):
    assert store.dropped_total() == 0
    store.record_dropped(3, datetime.now(UTC))
    store.record_dropped(4, datetime.now(UTC))
    store.record_dropped(0, datetime.now(UTC))
    assert store.dropped_total() == 7


# -- the background writer --------------------------------------------------------------------
def fast(writer: EventWriter) -> EventWriter:
    writer.RETRIES, writer.BACKOFF_S, writer.POLL_S = 3, 0.01, 0.05
    return writer


def test_writer_writes_everything_submitted_by_close(store):
    w = EventWriter(store, batch=64)
    w.start()
    n = 2000
    assert all(w.submit(event(i)) for i in range(n))
    w.close()
    assert w.written == n and w.dropped == 0 and w.pending == 0
    assert store.count_events() == n


def test_writer_accepts_submits_from_many_threads(store):
    w = EventWriter(store)
    w.start()
    threads = [threading.Thread(target=lambda k=k: [w.submit(event(k * 1000 + i))
                                                     for i in range(200)]) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    assert store.count_events() == 1600 and w.written == 1600


def test_a_full_queue_drops_without_blocking_and_the_count_reaches_the_store(store):
    seen: list[int] = []
    w = EventWriter(store, maxsize=3, on_drop=seen.append)  # not started: nothing drains it
    t0 = time.perf_counter()
    accepted = [w.submit(event(i)) for i in range(10)]
    assert time.perf_counter() - t0 < 0.5
    assert accepted == [True] * 3 + [False] * 7
    assert w.dropped == 7 and sum(seen) == 7 and w.pending == 3
    w.close()  # a writer closed before it was started still drains
    assert w.written == 3 and store.count_events() == 3
    assert store.dropped_total() == 7


def test_a_slow_database_never_slows_submit(store):
    real = store.add_events

    def slow(events):
        time.sleep(0.2)
        real(events)

    store.add_events = slow
    w = EventWriter(store, maxsize=5, batch=2)
    w.start()
    t0 = time.perf_counter()
    accepted = sum(w.submit(event(i)) for i in range(50))
    assert time.perf_counter() - t0 < 0.2
    w.close()
    assert 0 < accepted < 50 and w.written == accepted and w.dropped == 50 - accepted
    assert store.count_events() == accepted and store.dropped_total() == 50 - accepted


def test_a_failed_write_is_retried(store, caplog):
    real, failures = store.add_events, [2]

    def flaky(events):
        if failures[0]:
            failures[0] -= 1
            raise StoreError("store: server closed the connection unexpectedly")
        real(events)

    store.add_events = flaky
    w = fast(EventWriter(store))
    with caplog.at_level(logging.WARNING, logger="asl3.store"):
        w.start()
        for i in range(5):
            w.submit(event(i))
        w.close()
    assert w.written == 5 and w.dropped == 0 and store.count_events() == 5
    assert "retry" in caplog.text and "server closed the connection" in caplog.text


def test_events_lost_while_the_database_is_down_are_counted_once_it_is_back(store, caplog):
    real_add, real_drop, down = store.add_events, store.record_dropped, threading.Event()
    down.set()

    def add(events):
        if down.is_set():
            raise StoreError("store: connection refused")
        real_add(events)

    def record(count, at):
        if down.is_set():
            raise StoreError("store: connection refused")
        real_drop(count, at)

    store.add_events, store.record_dropped = add, record
    seen: list[int] = []
    w = fast(EventWriter(store, on_drop=seen.append))
    with caplog.at_level(logging.WARNING, logger="asl3.store"):
        w.start()
        for i in range(5):
            w.submit(event(i))
        deadline = time.monotonic() + 10
        while w.dropped < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert w.dropped == 5 and sum(seen) == 5 and w._thread.is_alive()
        down.clear()  # the database is back
        w.submit(event(99))
        w.close()
    assert w.written == 1 and store.count_events() == 1
    assert store.dropped_total() == 5
    assert "counted as dropped" in caplog.text


def test_two_processes_write_one_database(url, tmp_path):
    """Gateway workers are processes; on SQLite they share one file (WAL + busy timeout)."""
    Store(url).close()
    script = (
        "import sys\n"
        "from datetime import datetime, timezone\n"
        "from asl3.store import Event, EventWriter, Store\n"
        "s = Store(sys.argv[1]); w = EventWriter(s, batch=10); w.start()\n"
        "for i in range(300):\n"
        "    w.submit(Event(f'{sys.argv[2]}-{i}', datetime.now(timezone.utc), None, None,"
        " False, 'none', 'pass', 200, 1.0))\n"
        "w.close(); s.close(); assert w.written == 300, w.written\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, url, tag]) for tag in "ab"]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    with Store(url) as s:
        assert s.count_events() == 600 and s.dropped_total() == 0


# -- opening --------------------------------------------------------------------------------
def test_workers_starting_together_all_open_an_empty_database(url):
    """Each gateway worker creates the tables if missing; racing to do so must not fail."""
    script = "import sys; from asl3.store import Store; Store(sys.argv[1]).close()"
    procs = [subprocess.Popen([sys.executable, "-c", script, url]) for _ in range(6)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 6
    with Store(url) as s:
        assert s.count_events() == 0


def test_sqlite_runs_in_wal_mode(tmp_path):
    import sqlite3

    path = tmp_path / "x.db"
    Store(f"sqlite:///{path}").close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_plain_path_or_asl3_db_means_a_sqlite_file(tmp_path, monkeypatch):
    with Store(str(tmp_path / "plain.db")) as s:
        assert s.url == f"sqlite:///{tmp_path / 'plain.db'}"
    assert (tmp_path / "plain.db").exists()
    monkeypatch.setenv("ASL3_DB", f"sqlite:///{tmp_path / 'env.db'}")
    with Store() as s:
        s.add_key("alice")
    assert (tmp_path / "env.db").exists()


def test_postgres_urls_use_psycopg_3(postgres_url):
    for scheme in ("postgresql://", "postgres://"):
        with Store(scheme + postgres_url.split("://", 1)[1]) as s:
            assert s.url.startswith("postgresql+psycopg://")
            assert s.count_events() >= 0


@pytest.mark.parametrize("bad", [
    "postgresql://asl3:hunter2@127.0.0.1:1/asl3",  # nothing listens there
    "postgres://asl3:hunter2@[::1/x",  # not a URL at all
    "nosuchdb://asl3:hunter2@host/x",  # no such dialect
    "sqlite:////no/such/folder/asl3.db",
])
def test_a_bad_url_is_one_line_naming_it_without_its_password(bad):
    with pytest.raises(StoreError) as err:
        Store(bad)
    msg = str(err.value)
    assert isinstance(err.value, Asl3Error) and "\n" not in msg
    assert "hunter2" not in msg and msg.startswith(("cannot open the store", "store URL"))
    assert ("***" in msg) == ("hunter2" in bad)


def test_the_store_imports_no_model_code():
    """Layers point one way (DESIGN.md): the store knows SQL, never classifiers or numpy."""
    import ast
    from pathlib import Path

    import asl3.store

    for f in Path(asl3.store.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "sqlalchemy" or name in (
                    "asl3.errors",) or name.startswith("asl3.store"), f"{f.name} imports {name}"


def test_a_database_other_than_sqlite_or_postgresql_is_refused_in_one_line():
    with pytest.raises(StoreError, match="SQLite .* or PostgreSQL") as err:
        Store("mysql://user:secret@localhost/db")
    assert "secret" not in str(err.value) and "\n" not in str(err.value)
