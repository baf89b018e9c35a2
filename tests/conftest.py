"""Shared fixtures: the bundled model, a small model trained on the benign proxy constitution,
a settable clock, and fresh databases on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from asl3.store import Store
from asl3.store.engine import resolve_url

ROOT = Path(__file__).resolve().parents[1]
PROXY = ROOT / "tests" / "proxy"


@pytest.fixture(scope="session")
def guard():
    from asl3 import Guard

    return Guard.load()


@pytest.fixture(scope="session")
def proxy_bundle(tmp_path_factory) -> Path:
    """Train a bundle on the bread proxy constitution with asl3's own training code.

    Same settings as `asl3 train --constitution tests/proxy/bread.yaml --data
    tests/proxy/train.jsonl --calib tests/proxy/calib.jsonl --target-fpr 0.05`: the acceptance
    bar allows 5% false positives, so the threshold is calibrated to that rate."""
    from asl3.classify.train import TrainConfig, train

    out = tmp_path_factory.mktemp("proxy") / "bundle"
    train(TrainConfig(constitution=str(PROXY / "bread.yaml"), data=[str(PROXY / "train.jsonl")],
                      calib=[str(PROXY / "calib.jsonl")], out=str(out), seed=0,
                      target_fpr_input=0.05, target_fpr_output=0.05))
    return out


# -- PostgreSQL ---------------------------------------------------------------------------------
def _pg_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl: PATH first, then Debian's versioned folders."""
    import shutil

    found = [shutil.which(b) for b in ("initdb", "pg_ctl")]
    if all(found):
        return Path(found[0]).resolve().parent  # both tools come from one installation
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    for d in reversed(versions):
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


def _no_postgres(reason: str):
    import os

    if os.environ.get("ASL3_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"ASL3_REQUIRE_POSTGRES=1 but no PostgreSQL to test against: {reason}",
                    pytrace=False)
    pytest.skip(f"no PostgreSQL: {reason} (set ASL3_TEST_POSTGRES_URL, or install postgresql)")


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL URL for the whole session: $ASL3_TEST_POSTGRES_URL, or a throwaway cluster.

    The throwaway cluster lives in a temporary folder, listens on 127.0.0.1 only (a free port,
    its unix socket in the same folder) and is stopped and deleted at the end. PostgreSQL
    refuses to run as root, so as root it runs as the `postgres` system user. With no
    PostgreSQL available the tests that need it are skipped, or fail when
    ASL3_REQUIRE_POSTGRES=1 (CI), so they can never pass silently without running."""
    import os
    import pwd
    import shutil
    import socket
    import subprocess
    import tempfile

    given = os.environ.get("ASL3_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    bindir = _pg_bindir()
    if bindir is None:
        _no_postgres("initdb/pg_ctl not found on PATH or under /usr/lib/postgresql/*/bin")
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _no_postgres("running as root and there is no 'postgres' user to run the server")
        prefix = ["runuser", "-u", "postgres", "--"]
    tmp = Path(tempfile.mkdtemp(prefix="asl3-pg-"))  # not under pytest's root-only tmp folders
    data, log = tmp / "data", tmp / "server.log"
    if owner is not None:
        os.chown(tmp, owner.pw_uid, owner.pw_gid)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def run(*args: str) -> None:
        r = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            _no_postgres(f"{Path(args[0]).name} failed: {(r.stderr or r.stdout).strip()[-500:]}")

    run(str(bindir / "initdb"), "-D", str(data), "-U", "asl3", "-A", "trust", "-E", "UTF8",
        "--locale=C")
    opts = (f"-c listen_addresses=127.0.0.1 -p {port} -k {tmp} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60",
        "start")
    try:
        import psycopg

        with psycopg.connect(f"postgresql://asl3@127.0.0.1:{port}/postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE asl3_test")
        yield f"postgresql://asl3@127.0.0.1:{port}/asl3_test"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


class Clock:
    """A settable clock for code that takes ``clock=`` (vault, change management)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    """A fresh, empty database URL on each backend: a SQLite file, and a schema of its own
    in the test PostgreSQL server (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    base = request.getfixturevalue("postgres_url")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(resolve_url(base))
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as c:
        c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture()
def store(url):
    s = Store(url)
    yield s
    s.close()
