"""`asl3 vault serve`: decrypted weights over a Unix socket, only to allowlisted executables.

The requester of a granted request unlocks the model's data key in memory (the same checks as
`Vault.open`) and serves its files; plaintext goes chunk by chunk from the ciphertext to the
socket and is never written to disk.

Who is asking: on each connection the server reads the peer's credentials (SO_PEERCRED: pid,
uid, gid, fixed by the kernel at connect time), opens /proc/PID/exe (the file the process is
executing, even if its path has since been replaced or deleted) and hashes it. The hash must be
on the directory's approved allowlist (asl3.security.allowlist: the allowlist that changes
proposed by one member, approved by another and applied lead to, every signature checked),
re-read on every connection. A process that changes between
the check's start and end (exit and PID reuse, or an exec) is refused. Every accept, refusal
and file served is logged in the vault's audit log, signed by the requester running the server.

Protocol (ASCII lines ending in "\\n", several requests per connection, one at a time):

    client: LIST            server: OK SIZE  then SIZE bytes of JSON [{"name", "size"}, ...]
    client: GET NAME        server: OK SIZE  then SIZE raw bytes of the decrypted file
    any refusal             server: ERR REASON   (a refused peer is then disconnected)

A refused peer gets `ERR executable not allowlisted: sha256 HEX (EXE)`. A connection over the
limit gets `ERR busy` and is closed at once: a client whose write then fails (EPIPE) should
still read the ERR line. Every chunk is
authenticated before it is sent; if a chunk fails mid-file the server closes the connection,
so a client MUST treat fewer than SIZE bytes as failure and discard them.

Not stopped here (see the allowlist guide): an allowlisted interpreter runs any script; a peer
may pass its connected socket to another process or exec after the check; root can ptrace the
server. fapolicyd (kernel-level) is the complement for plaintext on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asl3.errors import SecurityError, VaultError
from asl3.security import chunks
from asl3.security.allowlist import Allowlist, hash_stream
from asl3.security.audit import AuditLog
from asl3.security.identity import Identity, PublicIdentity
from asl3.security.vault import Vault

MAX_LINE = 1024
MAX_SUN_PATH = 107  # sockaddr_un.sun_path is 108 bytes with its terminating NUL
ACCEPT_POLL = 0.2

Log = Callable[[str], None]


class PeerError(SecurityError):
    """The peer process could not be identified reliably."""


def record(directory: str | Path, actor: Identity, action: str, subject: str,
           details: dict[str, Any]) -> None:
    """Append a signed entry to the directory's audit log. An AuditError reaches the caller:
    an action that cannot be logged does not pass silently."""
    AuditLog(directory).append(actor, action, subject, details)


# -- unlocking a granted request, in memory --------------------------------------------------
@dataclass(frozen=True)
class Unlocked:
    """A granted request's data key and file list, held in memory while serving."""

    vault: Vault
    request_id: str
    requester: Identity
    model: str
    key_id: str
    key: bytes = field(repr=False)
    files: dict[str, dict[str, Any]] = field(repr=False)  # name -> {"blob", "size"}

    def still_granted(self) -> None:
        """Raise VaultError when the request was revoked, its grant expired or the model changed."""
        g = self.vault.grant(self.request_id)
        problem = g.problem(self.vault._clock())
        if problem:
            raise VaultError(problem)
        if g.body.get("key_id") != self.key_id:
            raise VaultError(f"request {self.request_id}: model {self.model!r} changed")


def unlock(vault: Vault, request_id: str, requester: Identity) -> Unlocked:
    """Recombine a granted request's key with the checks `Vault.open` makes; write nothing.
    Logged as `vault.serve.unlock`, or `vault.serve.refused` with the reason."""
    try:
        u = _unlock(vault, request_id, requester)
    except VaultError as e:
        try:
            record(vault.path, requester, "vault.serve.refused", request_id[:128],
                   {"reason": str(e)})
        except SecurityError as log_error:
            raise VaultError(f"{e} (and the refusal could not be logged: {log_error})") from None
        raise
    record(vault.path, requester, "vault.serve.unlock", request_id,
           {"model": u.model, "files": sorted(u.files)})
    return u


def _unlock(vault: Vault, request_id: str, requester: Identity) -> Unlocked:
    model, key_id, key, manifest = vault.unlock_key(request_id, requester, "serve")
    files = {str(f["name"]): {"blob": str(f["blob"]), "size": int(f["size"])}
             for f in manifest["files"]}
    return Unlocked(vault, request_id, requester, model, key_id, key, files)


class _SocketWriter:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def write(self, data: Any) -> None:
        self.sock.sendall(data)


def _open_blob(u: Unlocked, name: str) -> tuple[Any, bytes, int, int, bytes]:
    """The opened ciphertext of one file, its header checked against its expected length."""
    entry = u.files.get(name)
    if entry is None:
        raise VaultError(f"no file {name!r} in model {u.model!r}")
    blob = entry["blob"]
    if "/" in blob or blob.startswith("."):
        raise VaultError(f"model {u.model!r}: bad blob name {blob!r}")
    f = open(u.vault.path / "models" / u.model / blob, "rb")  # noqa: SIM115 (returned open)
    try:
        header, chunk, size, salt = chunks.read_header(f)
        if (size != entry["size"]
                or os.fstat(f.fileno()).st_size != chunks.encrypted_size(size, chunk)):
            raise chunks.ChunkError(f"{name}: encrypted file is truncated, extended or does not "
                                    "match the manifest")
    except BaseException:
        f.close()
        raise
    return f, header, chunk, size, salt


class MidStreamError(SecurityError):
    """A file failed after `OK SIZE` went out: the connection must close, with no ERR line."""


def stream_file(u: Unlocked, name: str, sock: socket.socket) -> int:
    """Send `OK SIZE\\n` and the decrypted file, chunk by chunk; returns SIZE.
    Raises VaultError/ChunkError before the first byte (answer ERR) and MidStreamError after
    part of the file went out (close the connection: the client sees fewer than SIZE bytes)."""
    f, header, chunk, size, salt = _open_blob(u, name)
    with f:
        sock.sendall(f"OK {size}\n".encode())
        try:
            chunks.decrypt_stream(f, _SocketWriter(sock), u.key, (header, chunk, size, salt),
                                  model=u.model, name=name)
        except chunks.ChunkError as e:
            raise MidStreamError(str(e)) from None
    return size


# -- peers ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    exe: str
    sha256: str


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process that connected, from the kernel (SO_PEERCRED)."""
    size = struct.calcsize("3i")
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                        size))
    return pid, uid, gid


def _start_time(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return data[data.rindex(b")") + 2:].split()[19].decode()  # field 22, starttime


def identify_peer(sock: socket.socket) -> Peer:
    """The peer's pid and the SHA-256 of the file it executes, hashed through /proc/PID/exe."""
    pid, uid, gid = peer_credentials(sock)
    if pid <= 0:
        raise PeerError("the peer has no process id (another namespace?)")
    proc = f"/proc/{pid}"
    try:
        started = _start_time(pid)
        exe = os.readlink(f"{proc}/exe")
        with open(f"{proc}/exe", "rb") as f:  # the executing file itself: no path race
            sha, _ = hash_stream(f)
            st = os.fstat(f.fileno())
        now = os.stat(f"{proc}/exe")
        if _start_time(pid) != started or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise PeerError(f"peer process {pid} changed while it was being checked")
    except OSError as e:
        raise PeerError(f"cannot read the executable of peer process {pid} "
                        f"({e.strerror or e})") from None
    return Peer(pid, uid, gid, exe, sha)


# -- the server -------------------------------------------------------------------------------
def _check_socket_dir(path: Path) -> None:
    parent = path.parent
    try:
        st = os.stat(parent)
    except OSError as e:
        raise VaultError(f"{parent}: socket directory unusable ({e.strerror})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise VaultError(f"{parent}: not a directory")
    if st.st_uid not in (os.geteuid(), 0):
        raise VaultError(f"{parent}: owned by another user; put the socket in your own directory")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise VaultError(f"{parent}: writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
                         "; use a private directory such as $XDG_RUNTIME_DIR")
    if len(os.fsencode(str(path))) > MAX_SUN_PATH:
        raise VaultError(f"{path}: socket path longer than {MAX_SUN_PATH} bytes")


def _remove_stale(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise VaultError(f"{path}: exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # nobody listens: a stale socket from a killed server
        return
    finally:
        probe.close()
    raise VaultError(f"{path}: another server is listening on this socket")


class WeightServer:
    """Serve one unlocked request on a Unix socket to allowlisted executables.

    `start()` binds (mode 0600, or 0660 with group access), `serve_forever()` accepts until
    `stop()`, `close()` closes every connection and removes the socket. At most `max_clients`
    connections at once; more are answered `ERR busy` and closed. The allowlist is the approved
    one of `allowlist_dir` (default: the vault directory); `allowlist_trusted` pins who may have
    signed its change roster (change.json)."""

    def __init__(self, unlocked: Unlocked, socket_path: str | Path, *,
                 allowlist_dir: str | Path | None = None,
                 allowlist_trusted: Sequence[PublicIdentity] | None = None, max_clients: int = 4,
                 group_access: bool = False, io_timeout: float = 30.0,
                 log: Log | None = None) -> None:
        if max_clients < 1:
            raise VaultError("max clients must be at least 1")
        self.u = unlocked
        self.path = Path(os.path.abspath(socket_path))
        self.allowlist_dir = Path(allowlist_dir) if allowlist_dir else unlocked.vault.path
        self.allowlist_trusted = list(allowlist_trusted) if allowlist_trusted else None
        self.mode = 0o660 if group_access else 0o600
        self.io_timeout = io_timeout
        self._log = log or (lambda line: None)
        self._slots = threading.BoundedSemaphore(max_clients)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._sock: socket.socket | None = None
        self._ino: int | None = None

    def start(self) -> WeightServer:
        al = self._allowlist()  # fail now on a missing directory or a tampered history
        if not al.has_roster:
            self._log(f"{self.allowlist_dir} has no change roster (change.json): nothing is "
                      "allowlisted, every client will be refused")
        elif not al.entries:
            self._log(f"the approved allowlist of {self.allowlist_dir} is empty: every client "
                      "will be refused")
        _check_socket_dir(self.path)
        _remove_stale(self.path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177 if self.mode == 0o600 else 0o117)
        try:
            s.bind(str(self.path))
        except OSError as e:
            s.close()
            raise VaultError(f"{self.path}: cannot bind ({e.strerror})") from None
        finally:
            os.umask(old)
        os.chmod(self.path, self.mode)
        self._ino = os.lstat(self.path).st_ino
        s.listen(16)
        s.settimeout(ACCEPT_POLL)
        self._sock = s
        return self

    def __enter__(self) -> WeightServer:
        return self.start() if self._sock is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stop(self) -> None:
        self._stop.set()

    def serve_forever(self) -> None:
        if self._sock is None:
            self.start()
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    break
                raise
            if not self._slots.acquire(blocking=False):
                with contextlib.suppress(OSError):
                    conn.sendall(b"ERR busy: too many connections\n")
                conn.close()
                continue
            threading.Thread(target=self._serve_one, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            with contextlib.suppress(OSError):
                if os.lstat(self.path).st_ino == self._ino:  # still ours
                    self.path.unlink()
        with self._lock:
            for c in list(self._conns):
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)

    # -- one connection ---------------------------------------------------------------------
    def _allowlist(self) -> Allowlist:
        return Allowlist.load(self.allowlist_dir, self.allowlist_trusted)

    def _event(self, action: str, subject: str, details: dict[str, Any], line: str) -> None:
        with self._lock:
            record(self.u.vault.path, self.u.requester, action, subject, details)
        self._log(line)

    def _serve_one(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)
        try:
            conn.settimeout(self.io_timeout)
            self._session(conn)
        except (OSError, SecurityError) as e:
            self._log(f"connection ended: {e}")
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()
            self._slots.release()

    def _refuse(self, conn: socket.socket, reason: str, details: dict[str, Any]) -> None:
        self._event("vault.serve.peer.refused", self.u.request_id, {**details, "reason": reason},
                    f"refused pid {details.get('pid')}: {reason}")
        with contextlib.suppress(OSError):
            conn.sendall(f"ERR {reason}\n".encode())
            # let a client that is still sending its request finish, so it can read the ERR
            # line instead of failing its write on a closed socket
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(1.0)
            conn.recv(MAX_LINE)

    def _session(self, conn: socket.socket) -> None:
        try:
            peer = identify_peer(conn)
        except PeerError as e:
            self._refuse(conn, str(e), {"pid": peer_credentials(conn)[0]})
            return
        who = {"pid": peer.pid, "uid": peer.uid, "exe": peer.exe, "sha256": peer.sha256}
        try:
            entry = self._allowlist().find(peer.sha256)
        except SecurityError as e:  # a roster or change history that does not verify
            self._refuse(conn, f"allowlist unusable: {e}", who)
            return
        if entry is None:
            self._refuse(conn, f"executable not allowlisted: sha256 {peer.sha256} ({peer.exe})",
                         who)
            return
        self._event("vault.serve.peer.accepted", self.u.request_id, who,
                    f"accepted pid {peer.pid} {peer.exe} ({entry.note or entry.sha256[:16]})")
        reader = conn.makefile("rb")
        while not self._stop.is_set():
            raw = reader.readline(MAX_LINE + 1)
            if not raw:
                return
            if len(raw) > MAX_LINE or not raw.endswith(b"\n"):
                conn.sendall(b"ERR request line too long or unterminated\n")
                return
            if not self._answer(conn, raw.decode("utf-8", "replace").rstrip("\r\n"), who):
                return

    def _answer(self, conn: socket.socket, line: str, who: dict[str, Any]) -> bool:
        """Answer one request; False ends the connection."""
        cmd, _, arg = line.partition(" ")
        try:
            self.u.still_granted()
        except VaultError as e:  # revoked, grant expired, model replaced
            self._event("vault.serve.refused", self.u.request_id, {**who, "reason": str(e)},
                        f"pid {who['pid']}: {e}")
            conn.sendall(f"ERR {e}\n".encode())
            return False
        if cmd == "LIST" and not arg:
            body = json.dumps([{"name": n, "size": f["size"]}
                               for n, f in sorted(self.u.files.items())]).encode()
            conn.sendall(f"OK {len(body)}\n".encode() + body)
            return True
        if cmd == "GET" and arg:
            try:
                size = stream_file(self.u, arg, conn)
            except (VaultError, chunks.ChunkError, MidStreamError) as e:
                self._event("vault.serve.get.failed", self.u.request_id, {**who, "file": arg,
                            "reason": str(e)}, f"pid {who['pid']}: GET {arg}: {e}")
                if not isinstance(e, MidStreamError):  # after OK, only closing is safe
                    with contextlib.suppress(OSError):
                        conn.sendall(f"ERR {e}\n".encode())
                return False
            self._event("vault.serve.get", self.u.request_id, {**who, "file": arg, "size": size},
                        f"sent {arg} ({size} bytes) to pid {who['pid']}")
            return True
        conn.sendall(b"ERR bad request: send LIST or GET NAME\n")
        return False


def serve(vault_dir: str | Path, request_id: str, requester: Identity, socket_path: str | Path,
          *, allowlist_dir: str | Path | None = None,
          allowlist_trusted: Sequence[PublicIdentity] | None = None, max_clients: int = 4,
          group_access: bool = False, log: Log | None = None,
          ready: Callable[[WeightServer], None] | None = None) -> None:
    """Unlock and serve until stop (SIGTERM/SIGINT handled by the caller); always cleans up."""
    u = unlock(Vault(vault_dir), request_id, requester)
    srv = WeightServer(u, socket_path, allowlist_dir=allowlist_dir,
                       allowlist_trusted=allowlist_trusted, max_clients=max_clients,
                       group_access=group_access, log=log)
    with srv:
        if ready:
            ready(srv)
        srv.serve_forever()
