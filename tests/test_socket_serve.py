"""`vault serve`: decrypted weights over a Unix socket, only to allowlisted executables.

Acceptance, as the issue states it: the Unix-socket reader refuses a non-allowlisted executable
and serves an allowlisted one, tested with two real processes (the server, here in a thread of
the test process or as `python -m asl3.cli vault serve`, and a client subprocess). Executables
are allowlisted only through change management: one custodian proposes, another approves, and
the change is applied; a proposal alone lets no one in.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from asl3.errors import AllowlistError, VaultError
from asl3.security import identity
from asl3.security.allowlist import hash_file, propose_add, propose_remove
from asl3.security.audit import AuditLog
from asl3.security.change import ChangeControl
from asl3.security.identity import Identity
from asl3.security.socket_serve import WeightServer, unlock
from asl3.security.vault import Vault

CHUNK = 1024
SIZE = 3 * CHUNK + 500
PYTHON = os.path.realpath(sys.executable)  # what /proc/PID/exe of a client subprocess shows
CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
f = s.makefile("rb")
out = sys.stdout.buffer
for req in sys.argv[2:]:
    try:
        s.sendall(req.encode() + b"\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused or busy: the server's ERR line is still there to read
    line = f.readline()
    out.write(line)
    if not line.startswith(b"OK "):
        break
    out.write(f.read(int(line.split()[1])))
out.flush()
"""


@pytest.fixture()
def people() -> dict[str, Identity]:
    """alice, bob and carol are custodians; dave asks for access."""
    return {n: identity.new(n) for n in ("alice", "bob", "carol", "dave")}


@pytest.fixture()
def weights(tmp_path: Path) -> dict[str, bytes]:
    data = {"model.bin": os.urandom(SIZE), "config.json": b'{"layers": 2}'}
    for name, body in data.items():
        (tmp_path / name).write_bytes(body)
    return data


@pytest.fixture()
def vault(tmp_path: Path, people, weights) -> Vault:
    v = Vault.init(tmp_path / "vault", [people[n].public() for n in ("alice", "bob", "carol")],
                   actor=people["alice"])
    v.put("llm", [tmp_path / n for n in weights], chunk_size=CHUNK, actor=people["alice"])
    ChangeControl.init(v.path, [people[n].public() for n in ("alice", "bob", "carol")], 1,
                       by=people["alice"])  # the custodians are the change roster
    return v


def approved(vault: Vault, people, proposed: list[dict], approver: str, applier: str) -> None:
    cc = ChangeControl(vault.path)
    for p in proposed:
        cc.approve(p["change"], people[approver])
        cc.apply(p["change"], people[applier])


def allow(vault: Vault, people, path: str | Path, note: str = "", proposer: str = "alice",
          approver: str = "bob") -> None:
    """Allowlist an executable: one custodian proposes, another approves, it is applied."""
    approved(vault, people, propose_add(vault.path, [path], people[proposer], note=note),
             approver, proposer)


def disallow(vault: Vault, people, path: str | Path, proposer: str = "bob",
             approver: str = "carol") -> None:
    approved(vault, people, propose_remove(vault.path, str(path), people[proposer]),
             approver, proposer)


@pytest.fixture()
def granted(vault: Vault, people) -> str:
    rid = vault.request("llm", people["dave"], "serve to the inference server", timedelta(hours=1))
    vault.approve(rid, people["bob"])
    vault.approve(rid, people["carol"])
    return rid


@pytest.fixture()
def sockdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="asl3-", dir="/tmp"))  # 0700; short enough for sun_path
    yield d
    shutil.rmtree(d, ignore_errors=True)


def other_binary(tmp_path: Path) -> Path:
    for p in ("/bin/sh", "/usr/bin/env"):
        if os.path.exists(p) and os.path.realpath(p) != PYTHON:
            return Path(p)
    p = tmp_path / "other"
    p.write_bytes(b"\x7fELF not python")
    return p


@contextmanager
def serving(vault: Vault, rid: str, dave: Identity, sock: Path, **kw) -> Iterator[WeightServer]:
    logs: list[str] = []
    srv = WeightServer(unlock(vault, rid, dave), sock, log=logs.append, **kw).start()
    srv.logs = logs  # type: ignore[attr-defined]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.close()
        t.join(5)
        assert not t.is_alive()


def client(sock: Path, *requests: str) -> bytes:
    return subprocess.run([sys.executable, "-c", CLIENT, str(sock), *requests],
                          capture_output=True, timeout=20, check=True).stdout


def events(vault: Vault) -> list[dict]:
    """What was logged: the vault's audit log entries, flattened."""
    return [{"action": e.action, "subject": e.subject, "actor": e.actor.fingerprint,
             **e.details} for e in AuditLog(vault.path).entries()]


# -- acceptance -------------------------------------------------------------------------------
def test_a_client_whose_executable_is_not_allowlisted_is_refused(vault, granted, people, sockdir,
                                                                 tmp_path) -> None:
    allow(vault, people, other_binary(tmp_path))
    propose_add(vault.path, [sys.executable], people["alice"])  # proposed, never approved
    sock = sockdir / "w.sock"
    with serving(vault, granted, people["dave"], sock) as srv:
        out = client(sock, "GET model.bin")
    sha = hash_file(PYTHON)[0]
    assert out == f"ERR executable not allowlisted: sha256 {sha} ({PYTHON})\n".encode()
    assert any("refused pid" in line for line in srv.logs)
    refusal = [e for e in events(vault) if e["action"] == "vault.serve.peer.refused"]
    assert refusal and refusal[0]["sha256"] == sha and refusal[0]["exe"] == PYTHON
    assert refusal[0]["actor"] == people["dave"].fingerprint and refusal[0]["subject"] == granted


def test_an_allowlisted_client_receives_the_original_plaintext(vault, granted, people, sockdir,
                                                                weights) -> None:
    allow(vault, people, sys.executable, note="test client")
    sock = sockdir / "w.sock"
    with serving(vault, granted, people["dave"], sock) as srv:
        assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o600
        out = client(sock, "LIST", "GET model.bin", "GET config.json")
    listing = b'[{"name": "config.json", "size": 13}, {"name": "model.bin", "size": %d}]' % SIZE
    assert out == (b"OK %d\n" % len(listing) + listing
                   + b"OK %d\n" % SIZE + weights["model.bin"]
                   + b"OK 13\n" + weights["config.json"])
    assert not sock.exists()  # removed on close
    assert any("accepted pid" in line for line in srv.logs)
    actions = [e["action"] for e in events(vault)]
    assert "vault.serve.unlock" in actions and "vault.serve.peer.accepted" in actions
    assert actions.count("vault.serve.get") == 2
    assert not list(vault.path.rglob("*.partial"))  # nothing decrypted to disk


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell's background job inherits


# Ctrl-C, service stop, and `kill -INT` of a server a shell started in the background (which
# inherits SIGINT ignored, so Python would never raise KeyboardInterrupt)
@pytest.mark.parametrize("stop,start", [(signal.SIGINT, None), (signal.SIGTERM, None),
                                        (signal.SIGINT, _ignore_sigint)],
                         ids=["SIGINT", "SIGTERM", "SIGINT-inherited-ignored"])
def test_the_cli_server_serves_and_stops_cleanly(vault, granted, people, sockdir, tmp_path,
                                                 weights, stop, start) -> None:
    identity.save(people["dave"], tmp_path / "dave.key")
    allow(vault, people, sys.executable)
    sock = sockdir / "cli.sock"
    # PYTHONFAULTHANDLER: a server that does not stop in time is aborted, and every thread's
    # stack lands in its stderr (shown by the assertion below)
    proc = subprocess.Popen([sys.executable, "-m", "asl3.cli", "vault", "serve", str(vault.path),
                             granted, "--as", str(tmp_path / "dave.key"), "--socket", str(sock),
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"}, preexec_fn=start)
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready == {"request": granted, "socket": str(sock)}
        assert client(sock, "GET model.bin") == b"OK %d\n" % SIZE + weights["model.bin"]
        proc.send_signal(stop)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and b"stopped" in err and not sock.exists(), err.decode()


# -- the checks that keep holding while serving -----------------------------------------------
def test_allowlist_and_grant_changes_apply_to_the_next_connection(vault, granted, people,
                                                                 sockdir) -> None:
    allow(vault, people, sys.executable)
    sock = sockdir / "w.sock"
    with serving(vault, granted, people["dave"], sock):
        assert client(sock, "GET config.json").startswith(b"OK 13\n")
        disallow(vault, people, sys.executable)
        assert client(sock, "GET config.json").startswith(b"ERR executable not allowlisted")
        allow(vault, people, sys.executable, proposer="bob", approver="carol")
        vault.revoke(granted, people["carol"])
        assert client(sock, "GET config.json").startswith(b"ERR request")
        assert b"revoked by carol" in client(sock, "LIST")


def test_a_tampered_allowlist_refuses_every_client(vault, granted, people, sockdir) -> None:
    allow(vault, people, sys.executable)
    sock = sockdir / "w.sock"
    with serving(vault, granted, people["dave"], sock):
        p = vault.path / "safeguards.json"
        p.write_text(p.read_text().replace(PYTHON, PYTHON + " # x"))
        assert client(sock, "LIST").startswith(b"ERR allowlist unusable")
    with pytest.raises(AllowlistError, match="do not verify"):  # nor does a new server start
        WeightServer(unlock(vault, granted, people["dave"]), sock).start()


def test_the_roster_can_be_pinned_and_no_roster_allows_no_one(vault, granted, people, sockdir,
                                                              tmp_path) -> None:
    allow(vault, people, sys.executable)
    u = unlock(vault, granted, people["dave"])
    with pytest.raises(AllowlistError, match="not one of the trusted identities"):
        WeightServer(u, sockdir / "w.sock", allowlist_trusted=[people["dave"].public()]).start()
    sock = sockdir / "w.sock"
    with serving(vault, granted, people["dave"], sock,
                 allowlist_trusted=[people["alice"].public()]):
        assert client(sock, "GET config.json").startswith(b"OK 13\n")
    empty = tmp_path / "no-roster"
    empty.mkdir()
    with serving(vault, granted, people["dave"], sock, allowlist_dir=empty) as srv:
        assert client(sock, "LIST").startswith(b"ERR executable not allowlisted")
    assert any("no change roster" in line for line in srv.logs)


def test_a_chunk_failing_mid_file_ends_the_stream_short(vault, granted, people, sockdir,
                                                        weights) -> None:
    allow(vault, people, sys.executable)
    m = vault.manifest("llm")
    blob = vault.path / "models" / "llm" / next(f["blob"] for f in m["files"]
                                                 if f["name"] == "model.bin")
    data = bytearray(blob.read_bytes())
    data[36 + 2 * (CHUNK + 16) + 5] ^= 1  # third chunk
    blob.write_bytes(bytes(data))
    sock = sockdir / "w.sock"
    with serving(vault, granted, people["dave"], sock):
        out = client(sock, "GET model.bin")
        head, _, body = out.partition(b"\n")
        assert head == b"OK %d" % SIZE and body == weights["model.bin"][: 2 * CHUNK]
        blob.write_bytes(bytes(data[:-10]))  # truncated: refused before any byte
        assert client(sock, "GET model.bin").startswith(b"ERR model.bin: encrypted file is")


def test_bad_requests_and_busy_server(vault, granted, people, sockdir) -> None:
    allow(vault, people, sys.executable)
    sock = sockdir / "w.sock"
    with serving(vault, granted, people["dave"], sock, max_clients=1):
        assert client(sock, "GET nope").startswith(b"ERR no file 'nope'")
        assert client(sock, "HELLO") == b"ERR bad request: send LIST or GET NAME\n"
        for _ in range(100):  # until the last client's thread has given its slot back
            held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            held.connect(str(sock))  # this process runs python too: allowlisted
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                held.sendall(b"LIST\n")
            if held.makefile("rb").readline().startswith(b"OK "):
                break  # it holds the only slot now
            held.close()
            time.sleep(0.05)
        assert client(sock, "LIST") == b"ERR busy: too many connections\n"
        held.close()


# -- unlocking and the socket itself ----------------------------------------------------------
def test_only_the_requester_of_a_granted_request_can_serve(vault, people) -> None:
    rid = vault.request("llm", people["dave"], "r", timedelta(hours=1))
    vault.approve(rid, people["bob"])
    with pytest.raises(VaultError, match="has 1 of the 2"):
        unlock(vault, rid, people["dave"])
    assert events(vault)[-1]["action"] == "vault.serve.refused"
    vault.approve(rid, people["carol"])
    with pytest.raises(VaultError, match="made by dave; only they can serve it"):
        unlock(vault, rid, people["bob"])
    assert unlock(vault, rid, people["dave"]).files["model.bin"]["size"] == SIZE


def test_the_socket_directory_and_path_are_checked(vault, granted, people, sockdir) -> None:
    u = unlock(vault, granted, people["dave"])
    open_dir = sockdir / "open"
    open_dir.mkdir(mode=0o777)
    open_dir.chmod(0o777)
    with pytest.raises(VaultError, match="writable by group or others"):
        WeightServer(u, open_dir / "w.sock").start()
    (sockdir / "file").write_text("x")
    with pytest.raises(VaultError, match="not a socket"):
        WeightServer(u, sockdir / "file").start()
    with pytest.raises(VaultError, match="longer than"):
        WeightServer(u, sockdir / ("x" * 120)).start()
    with WeightServer(u, sockdir / "w.sock", group_access=True) as srv:
        assert stat.S_IMODE(os.lstat(srv.path).st_mode) == 0o660
        with pytest.raises(VaultError, match="another server is listening"):
            WeightServer(u, sockdir / "w.sock").start()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sockdir / "stale.sock"))
    stale.close()  # a socket file left by a killed server is replaced
    with WeightServer(u, sockdir / "stale.sock"):
        pass
    assert not (sockdir / "stale.sock").exists()
