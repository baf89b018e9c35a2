"""From a user's store URL to a working SQLAlchemy engine, with errors people can read.

Users write what they know: ``postgresql://user@host/db`` (or Heroku-style ``postgres://``),
``sqlite:///file.db``, or just a file path. Those are mapped to the drivers asl3 ships with
(psycopg 3 for PostgreSQL), and every failure becomes one ``StoreError`` line that names the URL
with its password masked.
"""

from __future__ import annotations

import os
import time
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from asl3.errors import StoreError
from asl3.store.models import Base

DEFAULT_URL = "sqlite:///asl3.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000  # several gateway worker processes may write one SQLite file
PG_CONNECT_TIMEOUT_S = 10  # an unreachable host fails in seconds, not in the OS's minutes


def resolve_url(url: str | None) -> URL:
    """The SQLAlchemy URL for ``url``; None means $ASL3_DB, else ``sqlite:///asl3.db``."""
    raw = url or os.environ.get("ASL3_DB") or DEFAULT_URL
    if "://" not in raw:  # a plain filesystem path: a SQLite file
        raw = "sqlite:///" + raw
    for scheme in ("postgresql://", "postgres://"):
        if raw.startswith(scheme):
            raw = "postgresql+psycopg://" + raw[len(scheme):]
    try:
        parsed = make_url(raw)
    except (ArgumentError, ValueError) as e:
        raise StoreError(f"store URL {mask_raw(raw)!r} is not a database URL ({e})") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(f"store URL {display(parsed)!r}: asl3 stores events in SQLite "
                         "(sqlite:///FILE) or PostgreSQL (postgresql://USER@HOST/DB)")
    return parsed


def mask_raw(raw: str) -> str:
    """Mask the password of a URL that may not even parse."""
    scheme, sep, rest = raw.partition("://")
    creds, at, host = rest.rpartition("@")
    if not (sep and at and ":" in creds):
        return raw
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


def display(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def one_line(err: BaseException) -> str:
    """The first line of a driver error, without SQLAlchemy's background-link footer."""
    orig = getattr(err, "orig", None) or err
    lines = [s.strip() for s in str(orig).splitlines() if s.strip()]
    return lines[0] if lines else type(orig).__name__


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer (and vice versa)
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL's recommended setting: durable at checkpoints
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def open_engine(url: URL) -> Engine:
    """Create the engine and the tables (if missing). Raises StoreError, never a driver error."""
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):  # one shared in-memory database, all threads
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        elif url.database:
            folder = os.path.dirname(os.path.abspath(url.database))
            if not os.path.isdir(folder):
                raise StoreError(f"cannot open the store {display(url)}: no such directory {folder}")
    elif url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    try:
        engine = create_engine(url, **kwargs)
    except (SQLAlchemyError, ImportError) as e:  # unknown dialect, missing driver
        raise StoreError(f"cannot open the store {display(url)}: {one_line(e)}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        _create_tables(engine)
    except SQLAlchemyError as e:
        engine.dispose()
        raise StoreError(f"cannot open the store {display(url)}: {one_line(e)}") from None
    return engine


def _create_tables(engine: Engine) -> None:
    """``create_all``, tolerating a race: gateway workers starting together may all try, and
    the losers' CREATE TABLE then fails as a duplicate (PostgreSQL: a unique violation or
    "already exists"; SQLite: "already exists"). The retry finds the tables and creates none."""
    for attempt in range(3):
        try:
            Base.metadata.create_all(engine)
            return
        except SQLAlchemyError as e:
            duplicate = isinstance(e, IntegrityError) or "already exists" in str(e)
            if attempt == 2 or not duplicate:
                raise
            time.sleep(0.2 * (attempt + 1))
