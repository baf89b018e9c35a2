"""The audit log: append-only, every entry hash-chained and signed, with RFC 6962 tree heads.

A log lives in `DIRECTORY/audit/` (a vault directory, or any security settings directory):

    log.jsonl     one entry per line, the only record that counts
    state.json    a cache (size, byte length, last hash, Merkle frontier) so that `append` and
                  `head` cost O(log n); checked against the log's tail before use, rebuilt from
                  the log when it does not match, and never trusted by `verify`

An entry line is the canonical JSON (encoding.canonical) of

    {"entry": {"v": 1, "seq": 17, "time": "2026-11-24T09:00:00+00:00",
               "actor": {"name", "fingerprint", "ed25519", "x25519"},
               "action": "vault.approve", "subject": "<request id>", "details": {...},
               "prev": "<SHA-256 hex of the previous line, 64 zeros for the first>"},
     "sig": "<Ed25519 signature of canonical(entry), base64>"}

Why this shape:
- `seq` is the entry's index in the log and its Merkle leaf index; `prev` chains each entry to
  the whole history before it. A deleted, reordered or inserted line breaks the chain at a
  place `verify` can name; a changed line fails its signature.
- The actor's public keys travel in the entry, so an auditor needs nothing but the file to
  check every signature; the fingerprint (SHA-256 over both keys, identity.fingerprint) ties
  the entry to an identity file, and `verify(trusted=...)` names any signer outside a trusted
  set (an insider who signs a forged entry with their own valid key).
- "entry" sorts before "sig", so the signed bytes are literally the line between
  `{"entry":` and `,"sig":"...."}`: the verifier slices them out instead of re-serializing, and
  the line it hashes for the chain and the Merkle leaf is the stored line itself.
- JSON lines, never pickle: an auditor can read the log with any tool.

Tree heads follow RFC 6962 (merkle.py): leaf i is the i-th line's bytes (without the newline).
A `SignedTreeHead` (size, root, time, optionally signed) is a checkpoint to keep elsewhere;
`verify(checkpoint=...)` proves the current log extends it (consistency proof), which is the
only way to notice a truncated tail: the chain alone cannot tell a log that lost its last
entries from a shorter one.

Appends take an exclusive `fcntl.flock` on log.jsonl, so two processes may append at once;
each line is written with one O_APPEND write, then fsynced. Verification of a large log checks
signatures in a process pool over the machine's cores (Ed25519 verification is nearly all the
cost: ~120 us each on a slow core); the parent joins the chunks' chains and Merkle leaves.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import os
import re
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from asl3.errors import AuditError, SecurityError
from asl3.security import merkle
from asl3.security.encoding import b64, canonical, unb64
from asl3.security.identity import Identity, PublicIdentity, fingerprint

VERSION = 1
HEAD_FORMAT = "asl3-audit-head/1"
STATE_FORMAT = "asl3-audit-state/1"
GENESIS = "0" * 64
_PREFIX = b'{"entry":'
_SIG_TAG = b',"sig":"'
_SUFFIX = 8 + 88 + 2  # ,"sig":" + base64 of 64 bytes + "}
_ACTION = re.compile(r"[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*")
_HEX64 = re.compile(r"[0-9a-f]{64}")
POOL_MIN_BYTES = 16 << 20  # below this, one process verifies faster than starting a pool

Progress = Callable[[str, int, int], None]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# -- entries --------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditEntry:
    """One parsed entry. `hash` is the SHA-256 of its line: the next entry's `prev`."""

    seq: int
    time: str
    actor: PublicIdentity
    action: str
    subject: str
    details: dict[str, Any]
    prev: str
    signature: bytes
    hash: str

    def body(self) -> dict[str, Any]:
        """The signed object."""
        a = self.actor
        return {"v": VERSION, "seq": self.seq, "time": self.time,
                "actor": {"name": a.name, "fingerprint": a.fingerprint, "ed25519": b64(a.ed25519),
                          "x25519": b64(a.x25519)},
                "action": self.action, "subject": self.subject, "details": self.details,
                "prev": self.prev}

    def verify_signature(self) -> bool:
        return self.actor.verify(self.signature, canonical(self.body()))

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "signature": b64(self.signature), "hash": self.hash}


def _make_line(actor: Identity, seq: int, prev: str, time: str, action: str, subject: str,
               details: Mapping[str, Any]) -> bytes:
    """The canonical line (no newline) for a new entry: what append writes and the bench builds."""
    pub = actor.public()
    body = {"v": VERSION, "seq": seq, "time": time,
            "actor": {"name": pub.name, "fingerprint": pub.fingerprint,
                      "ed25519": b64(pub.ed25519), "x25519": b64(pub.x25519)},
            "action": action, "subject": subject, "details": dict(details), "prev": prev}
    signed = canonical(body)
    return _PREFIX + signed + _SIG_TAG + b64(actor.sign(signed)).encode() + b'"}'


def _split_line(line: bytes) -> tuple[bytes, bytes]:
    """(signed bytes, signature) of a line, or ValueError saying why it is not an entry line."""
    if (len(line) < len(_PREFIX) + 2 + _SUFFIX or not line.startswith(_PREFIX)
            or line[-_SUFFIX:-_SUFFIX + 8] != _SIG_TAG or not line.endswith(b'"}')):
        raise ValueError("not an entry line")
    try:
        sig = base64.b64decode(line[-90:-2], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("signature is not base64") from None
    return line[len(_PREFIX):-_SUFFIX], sig


def _field_problem(e: Any) -> str | None:
    """What is wrong with an entry object's fields, or None."""
    if not isinstance(e, dict):
        return "the entry is not a JSON object"
    if e.get("v") != VERSION:
        return f"unknown entry version {e.get('v')!r}"
    seq = e.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        return "seq is not a non-negative integer"
    for k in ("time", "action", "subject", "prev"):
        if not isinstance(e.get(k), str):
            return f"{k} is not a string"
    if not isinstance(e.get("details"), dict):
        return "details is not an object"
    if not _HEX64.fullmatch(e["prev"]):
        return "prev is not a SHA-256 hex digest"
    a = e.get("actor")
    if not isinstance(a, dict) or not all(isinstance(a.get(k), str)
                                          for k in ("name", "fingerprint", "ed25519", "x25519")):
        return "actor is not a public identity"
    return None


def _parse(line: bytes, index: int, where: Path) -> AuditEntry:
    try:
        signed, sig = _split_line(line)
        e = json.loads(signed)
        why = _field_problem(e)
        if why:
            raise ValueError(why)
        a = e["actor"]
        actor = PublicIdentity(a["name"], unb64(a["ed25519"], "ed25519"),
                               unb64(a["x25519"], "x25519"))
    except (ValueError, UnicodeDecodeError) as err:
        raise AuditError(f"{where}: entry {index} is not a valid audit entry ({err}); run "
                         "'asl3 audit verify'") from None
    return AuditEntry(e["seq"], e["time"], actor, e["action"], e["subject"], e["details"],
                      e["prev"], sig, hashlib.sha256(line).hexdigest())


# -- tree heads -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SignedTreeHead:
    """A checkpoint: the log had `size` entries with Merkle root `root` (hex) at `time`.

    Unsigned from `AuditLog.head()`; `signed(identity)` adds a signature over
    canonical({format, size, root, time}) so that a checkpoint kept elsewhere also says who
    vouched for it. JSON round trip: `to_dict` / `from_dict`."""

    size: int
    root: str
    time: str
    signer: PublicIdentity | None = None
    signature: bytes | None = None

    def payload(self) -> bytes:
        return canonical({"format": HEAD_FORMAT, "size": self.size, "root": self.root,
                          "time": self.time})

    def signed(self, identity: Identity) -> SignedTreeHead:
        return SignedTreeHead(self.size, self.root, self.time, identity.public(),
                              identity.sign(self.payload()))

    def signature_ok(self) -> bool:
        return (self.signer is not None and self.signature is not None
                and self.signer.verify(self.signature, self.payload()))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": HEAD_FORMAT, "size": self.size, "root": self.root,
                             "time": self.time}
        if self.signer is not None and self.signature is not None:
            d["signer"] = self.signer.to_dict()
            d["signature"] = b64(self.signature)
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "checkpoint") -> SignedTreeHead:
        if not isinstance(d, dict) or d.get("format") != HEAD_FORMAT:
            raise AuditError(f"{where}: not an audit checkpoint (format is not {HEAD_FORMAT})")
        size, root, time = d.get("size"), d.get("root"), d.get("time")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise AuditError(f"{where}: size is not a non-negative integer")
        if not isinstance(root, str) or not _HEX64.fullmatch(root):
            raise AuditError(f"{where}: root is not a SHA-256 hex digest")
        if not isinstance(time, str):
            raise AuditError(f"{where}: time is not a string")
        signer = signature = None
        if "signature" in d:
            try:
                signer = PublicIdentity.from_dict(d.get("signer"), f"{where} signer")
                signature = unb64(d["signature"], "signature")
            except (SecurityError, ValueError) as e:
                raise AuditError(f"{where}: malformed signature ({e})") from None
        return cls(size, root, time, signer, signature)


@dataclass
class VerifyReport:
    """`ok` is True only when nothing is wrong; each problem names the entry and the fault."""

    ok: bool
    entries: int
    problems: list[str] = field(default_factory=list)
    root: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "root": self.root,
                "problems": self.problems}


# -- verification of one byte range (runs in pool workers) ------------------------------------
@dataclass
class _Chunk:
    count: int
    leaves: bytes                      # leaf hashes, 32 bytes each
    first_prev: str | None             # None: first line unreadable
    first_seq: int | None
    last_hash: str
    last_seq: int | None
    broken: bool                       # a link inside the chunk does not hold
    problems: list[tuple[int, int | None, str]]  # (local index, seq, what is wrong)
    bad: list[int]                     # local indices whose content cannot be trusted


def _check_range(path: str, start: int, end: int, trusted: frozenset[str] | None) -> _Chunk:
    """Check every line in [start, end): format, fingerprint, signature, trust, local chain."""
    with open(path, "rb") as f:
        f.seek(start)
        lines = f.read(end - start).split(b"\n")
    lines.pop()  # the range ends with a newline
    sha = hashlib.sha256
    leaves = bytearray()
    keys: dict[tuple[str, str, str], tuple[VerifyKey | None, str | None]] = {}
    problems: list[tuple[int, int | None, str]] = []
    bad: list[int] = []
    first_prev: str | None = None
    first_seq: int | None = None
    last_hash, last_seq, broken = "", None, False
    for i, line in enumerate(lines):
        leaves += sha(b"\x00" + line).digest()
        h = sha(line).hexdigest()
        try:
            signed, sig = _split_line(line)
            e = json.loads(signed)
        except (ValueError, UnicodeDecodeError) as err:
            why: str | None = str(err)
            e = None
        else:
            why = _field_problem(e)
        if why is not None:
            problems.append((i, None, f"not a valid audit entry ({why})"))
            bad.append(i)
            broken = True
            last_hash, last_seq = h, None
            continue
        seq, prev, a = e["seq"], e["prev"], e["actor"]
        if i == 0:
            first_prev, first_seq = prev, seq
        elif prev != last_hash or last_seq is None or seq != last_seq + 1:
            broken = True
        last_hash, last_seq = h, seq
        ident = (a["ed25519"], a["x25519"], a["fingerprint"])
        cached = keys.get(ident)
        if cached is None:
            cached = keys[ident] = _load_key(*ident)
        key, key_problem = cached
        if key is None:
            problems.append((i, seq, str(key_problem)))
            bad.append(i)
            continue
        try:
            key.verify(signed, sig)
        except BadSignatureError:
            problems.append((i, seq, "content changed — signature does not verify"))
            bad.append(i)
            continue
        if trusted is not None and a["fingerprint"] not in trusted:
            problems.append((i, seq, f"signed by {a['name']!r} ({a['fingerprint']}), who is "
                                     "not a trusted identity"))
    return _Chunk(len(lines), bytes(leaves), first_prev, first_seq, last_hash, last_seq, broken,
                  problems, bad)


def _load_key(ed: str, x: str, fp: str) -> tuple[VerifyKey | None, str | None]:
    """The actor's verifying key. Bulk verification uses libsodium (PyNaCl, also from PyCA):
    its Ed25519 verify is 63 us here against 118 us for OpenSSL's through `cryptography`, which
    decides whether a million entries verify within a minute on two cores. Signatures made by
    `cryptography` are standard RFC 8032 ones; libsodium is the stricter verifier (it also
    refuses small-order keys and non-canonical encodings), so it accepts no signature that
    OpenSSL would refuse."""
    try:
        edb, xb = unb64(ed, "ed25519"), unb64(x, "x25519")
        if len(edb) != 32 or len(xb) != 32:
            raise ValueError("actor keys must be 32 bytes")
        if fingerprint(edb, xb) != fp:
            return None, "actor fingerprint does not match the actor's keys"
        return VerifyKey(edb), None
    except ValueError as e:
        return None, f"not a valid audit entry ({e})"


@dataclass
class _Scan:
    count: int = 0
    broken: bool = False
    problems: list[tuple[int, str]] = field(default_factory=list)
    bad: set[int] = field(default_factory=set)
    leaves: bytearray = field(default_factory=bytearray)
    frontier: merkle.Frontier = field(default_factory=merkle.Frontier)


# -- naming what is wrong with the order -------------------------------------------------------
def _lis(values: Sequence[int]) -> set[int]:
    """Indices into `values` of one longest strictly increasing subsequence (patience sort)."""
    import bisect

    tails: list[int] = []
    tail_at: list[int] = []
    back = [-1] * len(values)
    for i, v in enumerate(values):
        k = bisect.bisect_left(tails, v)
        if k == len(tails):
            tails.append(v)
            tail_at.append(i)
        else:
            tails[k] = v
            tail_at[k] = i
        back[i] = tail_at[k - 1] if k else -1
    out, i = set(), tail_at[-1] if tail_at else -1
    while i != -1:
        out.add(i)
        i = back[i]
    return out


def _name(i: int, seq: int | None) -> str:
    return f"entry {i}" if seq is None else f"entry {i} (seq {seq})"


def _order_problems(path: Path, size: int, bad: set[int]) -> list[tuple[int, str]]:
    """Name the deleted, inserted, duplicated and reordered entries (only run when a link of
    the chain fails, so only for tampered logs). `bad` entries (changed, unreadable) were
    reported already; their successors' broken links are consequences and are not repeated.

    The original log is one chain seq 0, 1, 2, ... with each `prev` the hash of the entry
    before. Valid entries are placed on it by their hashes and seqs:
      - an exact copy of an earlier line is an inserted duplicate;
      - two valid entries following the same entry: the one the chain continues from is the
        original, the other was inserted (if neither or both continue, both are named);
      - an entry that follows no entry of the log and that no entry follows, and is not the
        last line, was inserted;
      - seqs missing between neighbours (and not accounted for by changed lines there) were
        deleted; a tail cut off is invisible here and needs a checkpoint;
      - among the rest, sorted by seq, the entries outside a longest run of increasing
        positions were moved: reordered.
    """
    seqs: list[int | None] = []
    prevs: list[str | None] = []
    hashes: list[str] = []
    with open(path, "rb") as f:
        data = f.read(size)
    for line in data.split(b"\n")[:-1]:
        hashes.append(hashlib.sha256(line).hexdigest())
        try:
            e = json.loads(_split_line(line)[0])
            ok = _field_problem(e) is None
        except (ValueError, UnicodeDecodeError):
            ok = False
        seqs.append(e["seq"] if ok else None)
        prevs.append(e["prev"] if ok else None)
    del data
    n = len(hashes)
    out: list[tuple[int, str]] = []
    dropped = set(bad)
    first_at: dict[str, int] = {}
    for i in range(n):
        j = first_at.setdefault(hashes[i], i)
        if j != i and i not in bad:
            out.append((i, f"{_name(i, seqs[i])}: a copy of entry {j} — an inserted duplicate"))
            dropped.add(i)
    good = [i for i in range(n) if i not in dropped and seqs[i] is not None]
    at = {hashes[i]: i for i in good}
    referenced = {prevs[i] for i in range(n) if i not in dropped or i in bad}

    def linked(i: int) -> bool:
        s, p = seqs[i], prevs[i]
        if s == 0:
            return p == GENESIS
        j = at.get(p or "")
        return j is not None and seqs[j] == s - 1  # type: ignore[operator]

    last = max(good, default=-1)
    for i in good:
        if not linked(i) and hashes[i] not in referenced and i != last:
            out.append((i, f"{_name(i, seqs[i])}: inserted — it follows no entry of the log and "
                           "no entry follows it"))
            dropped.add(i)
    followers: dict[str, list[int]] = defaultdict(list)
    for i in good:
        if i not in dropped and linked(i):
            followers[prevs[i] or ""].append(i)
    for p, kids in followers.items():
        if len(kids) < 2:
            continue
        cont = [k for k in kids if hashes[k] in referenced]
        after = f"seq {seqs[kids[0]] - 1} (entry {at[p]})" if p in at else "the start"  # type: ignore[operator]
        if len(cont) == 1:
            for k in kids:
                if k != cont[0]:
                    out.append((k, f"{_name(k, seqs[k])}: inserted — entry {cont[0]} also "
                                   f"follows {after} and the chain continues from it"))
                    dropped.add(k)
        else:
            names = ", ".join(str(k) for k in kids)
            out.append((kids[0], f"entries {names} all follow {after} with seq "
                                 f"{seqs[kids[0]]}: all but one were inserted"))
            keep = (cont or kids)[0]
            dropped.update(k for k in kids if k != keep)
    kept = sorted((i for i in good if i not in dropped), key=lambda i: (seqs[i], i))
    # a seq claimed twice by unrelated entries: keep the first, the others are named
    uniq: list[int] = []
    for i in kept:
        if uniq and seqs[uniq[-1]] == seqs[i]:
            out.append((i, f"{_name(i, seqs[i])}: inserted — entry {uniq[-1]} already has "
                           f"seq {seqs[i]}"))
            continue
        uniq.append(i)
    bad_pos = sorted(bad)

    def bad_between(lo: int, hi: int) -> int:
        import bisect

        return bisect.bisect_left(bad_pos, hi) - bisect.bisect_right(bad_pos, lo)

    prev_i: int | None = None
    for i in uniq:
        s = seqs[i]
        assert s is not None
        if prev_i is None:
            if s > bad_between(-1, i):
                missing = "seq 0" if s == 1 else f"seq 0-{s - 1}"
                what = "entry before" if s == 1 else f"{s} entries before"
                out.append((i, f"{what} seq {s} {'is' if s == 1 else 'are'} missing "
                               f"({missing} deleted)"))
            elif s == 0 and prevs[i] != GENESIS:
                out.append((i, f"{_name(i, s)}: does not begin the log (its prev is not the "
                               "all-zero start)"))
        else:
            a = seqs[prev_i]
            assert a is not None
            gap = s - a - 1
            lo, hi = sorted((prev_i, i))
            if gap > bad_between(lo, hi):
                what = "entry" if gap == 1 else f"{gap} entries"
                ids = f"seq {a + 1}" if gap == 1 else f"seq {a + 1}-{s - 1}"
                out.append((i, f"{what} after seq {a} {'is' if gap == 1 else 'are'} missing "
                               f"({ids} deleted; entry {i} has seq {s})"))
            elif gap == 0 and prevs[i] != hashes[prev_i] and not linked(i) and not bad_between(
                    lo, hi) and prev_i not in bad:
                out.append((i, f"{_name(i, s)}: does not follow seq {a} (entry {prev_i}): its "
                               "prev matches no entry — inserted, or the entry before it was "
                               "replaced"))
        prev_i = i
    in_place = _lis(uniq)
    for k, i in enumerate(uniq):
        if k not in in_place:
            s = seqs[i]
            where = (f"after seq {seqs[uniq[k - 1]]} (entry {uniq[k - 1]})" if k
                     else f"before seq {seqs[uniq[1]]} (entry {uniq[1]})")
            out.append((i, f"{_name(i, s)}: out of order — it belongs {where}; entries were "
                           "reordered"))
    return out


# -- the log --------------------------------------------------------------------------------
class _HashList(Sequence[bytes]):
    """Leaf hashes packed 32 bytes each: 32 MB for a million entries instead of ~100 MB."""

    def __init__(self, buf: bytes | bytearray) -> None:
        self._buf = buf

    def __len__(self) -> int:
        return len(self._buf) // 32

    def __getitem__(self, i):  # type: ignore[no-untyped-def, override]
        if isinstance(i, slice):
            raise TypeError("slices are not supported")
        if i < 0:
            i += len(self)
        return bytes(self._buf[32 * i:32 * i + 32])


class AuditLog:
    """The audit log in DIRECTORY/audit/ (created on the first append)."""

    def __init__(self, directory: str | Path, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.directory = Path(directory)
        self.dir = self.directory / "audit"
        self.path = self.dir / "log.jsonl"
        self._state_path = self.dir / "state.json"
        self._clock = clock

    # -- writing ----------------------------------------------------------------------------
    def append(self, actor: Identity, action: str, subject: str,
               details: Mapping[str, Any] | None = None) -> AuditEntry:
        """Sign and append one entry; returns it. Safe against concurrent appenders."""
        if not isinstance(action, str) or len(action) > 64 or not _ACTION.fullmatch(action):
            raise AuditError(f"audit action {action!r} must be dotted lower-case words, like "
                             "'vault.approve'")
        if not isinstance(subject, str) or len(subject) > 4096:
            raise AuditError("an audit subject is a string of at most 4096 characters")
        details = dict(details or {})
        try:
            json.dumps(details, allow_nan=False)
            if not all(isinstance(k, str) for k in details):
                raise TypeError("keys must be strings")
        except (TypeError, ValueError) as e:
            raise AuditError(f"audit details for {action} are not plain JSON ({e})") from None
        if not self.directory.is_dir():
            raise AuditError(f"{self.directory}: no such directory for an audit log")
        self.dir.mkdir(exist_ok=True)
        time = self._clock().astimezone(timezone.utc).isoformat()
        with self._locked(fcntl.LOCK_EX, create=True) as fd:
            st = self._state(fd, repair=True)
            seq = st["size"]
            line = _make_line(actor, seq, st["last_hash"] or GENESIS, time, action, subject,
                              details)
            data = line + b"\n"
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
            frontier = merkle.Frontier(st["size"], [bytes.fromhex(h) for h in st["frontier"]])
            frontier.append(merkle.leaf_hash(line))
            h = hashlib.sha256(line).hexdigest()
            self._save_state({"size": seq + 1, "bytes": st["bytes"] + len(data),
                              "last_offset": st["bytes"], "last_hash": h,
                              "frontier": [x.hex() for x in frontier.hashes]})
        return _parse(line, seq, self.path)

    @contextmanager
    def _locked(self, how: int, *, create: bool = False) -> Iterator[int]:
        flags = (os.O_RDWR | os.O_APPEND | os.O_CREAT) if create else os.O_RDONLY
        try:
            fd = os.open(self.path, flags, 0o644)
        except FileNotFoundError:
            raise AuditError(f"{self.directory}: no audit log here (no {self.path})") from None
        except OSError as e:
            raise AuditError(f"{self.path}: cannot open the audit log ({e.strerror})") from None
        try:
            fcntl.flock(fd, how)
            yield fd
        finally:
            os.close(fd)  # closing releases the lock

    def _save_state(self, st: dict[str, Any]) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"format": STATE_FORMAT, **st}) + "\n", encoding="utf-8")
        os.replace(tmp, self._state_path)

    def _state(self, fd: int, *, repair: bool) -> dict[str, Any]:
        """The cached state if it matches the log's tail, else rebuilt by reading the log.

        Called under the lock. With `repair`, an incomplete last line (an append that crashed
        mid-write: never a signed, newline-terminated entry) is cut off before appending."""
        size = os.fstat(fd).st_size
        try:
            st = json.loads(self._state_path.read_text(encoding="utf-8"))
            if (st.get("format") == STATE_FORMAT and st["bytes"] == size
                    and bin(st["size"]).count("1") == len(st["frontier"])):
                if st["size"] == 0:
                    return st
                line = os.pread(fd, size - st["last_offset"], st["last_offset"])
                if line.endswith(b"\n") and hashlib.sha256(line[:-1]).hexdigest() == st["last_hash"]:
                    return st
        except (OSError, ValueError, KeyError, TypeError):
            pass
        frontier = merkle.Frontier()
        count, offset, last_offset, last_hash = 0, 0, 0, ""
        with open(self.path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    if repair:
                        os.ftruncate(fd, offset)
                        os.fsync(fd)
                    break
                frontier.append(merkle.leaf_hash(line[:-1]))
                last_hash = hashlib.sha256(line[:-1]).hexdigest()
                last_offset, offset, count = offset, offset + len(line), count + 1
        st = {"size": count, "bytes": offset, "last_offset": last_offset, "last_hash": last_hash,
              "frontier": [x.hex() for x in frontier.hashes]}
        if repair:
            self._save_state(st)
        return st

    # -- reading ----------------------------------------------------------------------------
    def _snapshot(self) -> int:
        """The log's byte length at a moment no append is half-done (0 when there is no log)."""
        if not self.path.exists():
            return 0
        with self._locked(fcntl.LOCK_SH) as fd:
            return os.fstat(fd).st_size

    def _lines(self, size: int | None = None) -> Iterator[bytes]:
        if not self.path.exists():
            return
        limit = self._snapshot() if size is None else size
        done = 0
        with open(self.path, "rb") as f:
            for line in f:
                done += len(line)
                if done > limit or not line.endswith(b"\n"):
                    return
                yield line[:-1]

    def entries(self) -> Iterator[AuditEntry]:
        """Every entry, oldest first, parsed but not verified (use `verify` for that)."""
        for i, line in enumerate(self._lines()):
            yield _parse(line, i, self.path)

    def last(self, n: int) -> list[AuditEntry]:
        """The last n entries (parses only those)."""
        total, tail = 0, deque(maxlen=max(n, 0))
        for line in self._lines():
            tail.append(line)
            total += 1
        start = total - len(tail)
        return [_parse(line, start + k, self.path) for k, line in enumerate(tail)]

    def head(self, *, fresh: bool = False) -> SignedTreeHead:
        """The current tree head (size, Merkle root, now), unsigned: O(log n) from the cache,
        O(n) when the cache has to be rebuilt. `fresh` always hashes the log's lines instead
        (what an auditor's checkpoint should come from: the cache is the log owner's file)."""
        if not self.path.exists():
            return SignedTreeHead(0, merkle.EMPTY_ROOT.hex(), self._now())
        if fresh:
            leaves = self.leaf_hashes()
            return SignedTreeHead(len(leaves), merkle.root(leaves, hashed=True).hex(), self._now())
        with self._locked(fcntl.LOCK_SH) as fd:
            st = self._state(fd, repair=False)
        root = merkle.Frontier(st["size"], [bytes.fromhex(h) for h in st["frontier"]]).root()
        return SignedTreeHead(st["size"], root.hex(), self._now())

    def _now(self) -> str:
        return self._clock().astimezone(timezone.utc).isoformat()

    def leaf_hashes(self) -> Sequence[bytes]:
        buf = bytearray()
        for line in self._lines():
            buf += merkle.leaf_hash(line)
        return _HashList(buf)

    def inclusion_proof(self, index: int) -> list[bytes]:
        """Audit path of entry `index` in the current tree (RFC 6962 2.1.1); O(n)."""
        leaves = self.leaf_hashes()
        if not 0 <= index < len(leaves):
            raise AuditError(f"entry {index} is not in the log ({len(leaves)} entries)")
        return merkle.inclusion_proof(leaves, index, hashed=True)

    def consistency_proof(self, old_size: int) -> list[bytes]:
        """Proof that the tree of the first `old_size` entries is a prefix of the current one."""
        leaves = self.leaf_hashes()
        if not 0 <= old_size <= len(leaves):
            raise AuditError(f"the log has {len(leaves)} entries, fewer than {old_size}: it was "
                             "truncated or rewritten")
        return merkle.consistency_proof(leaves, old_size, hashed=True)

    # -- verification -----------------------------------------------------------------------
    def verify(self, *, trusted: Sequence[PublicIdentity] | None = None,
               checkpoint: SignedTreeHead | dict | None = None, progress: Progress | None = None,
               workers: int | None = None, chunk_bytes: int | None = None) -> VerifyReport:
        """Check every entry: format, signature, actor fingerprint, hash chain, order; with
        `trusted`, name signers outside that set; with `checkpoint`, prove the log still
        extends it. `workers` (default: the usable cores) verify signatures in parallel once
        the log is 16 MB or more; `chunk_bytes` sets the work unit (tests use tiny ones)."""
        cp = (checkpoint if isinstance(checkpoint, SignedTreeHead) or checkpoint is None
              else SignedTreeHead.from_dict(checkpoint))
        size = self._snapshot()
        trust = frozenset(p.fingerprint for p in trusted) if trusted is not None else None
        ranges, tail = self._plan(size, workers, chunk_bytes)
        n_workers = workers or len(os.sched_getaffinity(0))
        scan = None
        if n_workers > 1 and len(ranges) > 1 and (size >= POOL_MIN_BYTES or workers):
            pool = _pool(n_workers)
            try:
                scan = self._scan(ranges, trust, cp is not None, size, progress, pool)
            except BrokenProcessPool:  # e.g. a spawned worker could not import the caller's main
                scan = None
            finally:
                pool.shutdown(cancel_futures=True)
        if scan is None:
            scan = self._scan(ranges, trust, cp is not None, size, progress, None)
        problems, index = scan.problems, scan.count
        if tail:
            problems.append((index, f"the log ends in {tail} bytes that are not a complete entry "
                                    "(a crashed append, or bytes added by hand)"))
        if scan.broken:
            problems += _order_problems(self.path, size - tail, scan.bad)
        hashes = _HashList(scan.leaves) if cp is not None else None
        root = merkle.root(hashes, hashed=True) if hashes is not None else scan.frontier.root()
        if cp is not None:
            assert hashes is not None
            problems += [(index, p) for p in self._checkpoint_problems(cp, hashes, root, trust)]
        problems.sort(key=lambda p: p[0])
        return VerifyReport(not problems, index, [p for _, p in problems], root.hex())

    def _scan(self, ranges: list[tuple[int, int]], trust: frozenset[str] | None,
              keep_leaves: bool, size: int, progress: Progress | None,
              pool: ProcessPoolExecutor | None) -> _Scan:
        """Check the ranges (in the pool when given) and join them in order: links across
        range borders, problems numbered by entry, Merkle leaves folded or kept."""
        args = ([str(self.path)] * len(ranges), [r[0] for r in ranges], [r[1] for r in ranges],
                [trust] * len(ranges))
        results = pool.map(_check_range, *args) if pool else map(_check_range, *args)
        sc = _Scan()
        last_hash, last_seq, done = GENESIS, -1, 0
        for (start, end), r in zip(ranges, results, strict=True):
            if r.first_prev != last_hash or r.first_seq != last_seq + 1:
                sc.broken = True
            last_hash = r.last_hash
            last_seq = r.last_seq if r.last_seq is not None else -2
            sc.broken = sc.broken or r.broken
            sc.problems += [(sc.count + i, f"{_name(sc.count + i, s)}: {what}")
                            for i, s, what in r.problems]
            sc.bad.update(sc.count + i for i in r.bad)
            if keep_leaves:
                sc.leaves += r.leaves
            else:
                for k in range(0, len(r.leaves), 32):
                    sc.frontier.append(r.leaves[k:k + 32])
            sc.count += r.count
            done += end - start
            if progress:
                progress("verify", done, size)
        return sc

    def _plan(self, size: int, workers: int | None,
              chunk_bytes: int | None) -> tuple[list[tuple[int, int]], int]:
        """Byte ranges of whole lines, and the length of an unterminated tail."""
        if size == 0:
            return [], 0
        n = workers or len(os.sched_getaffinity(0))
        step = chunk_bytes or max(1 << 20, min(32 << 20, size // max(1, 8 * n)))
        ranges: list[tuple[int, int]] = []
        with open(self.path, "rb") as f:
            end_all = _last_newline(f, size) + 1
            start = 0
            while start < end_all:
                cut = min(start + step, end_all)
                if cut < end_all:
                    f.seek(cut - 1)
                    while True:
                        block = f.read(65536)
                        k = block.find(b"\n")
                        if k >= 0:
                            cut = min(f.tell() - len(block) + k + 1, end_all)
                            break
                        if not block:
                            cut = end_all
                            break
                ranges.append((start, cut))
                start = cut
        return ranges, size - end_all

    @staticmethod
    def _checkpoint_problems(cp: SignedTreeHead, hashes: Sequence[bytes], root: bytes,
                             trust: frozenset[str] | None) -> list[str]:
        out = []
        if cp.signature is not None and not cp.signature_ok():
            out.append("the checkpoint's signature does not verify (it was altered)")
        if cp.signer is not None and trust is not None and cp.signer.fingerprint not in trust:
            out.append(f"the checkpoint is signed by {cp.signer.name!r} "
                       f"({cp.signer.fingerprint}), who is not a trusted identity")
        n = len(hashes)
        if cp.size > n:
            out.append(f"log was truncated or rewritten since checkpoint of size {cp.size}: it "
                       f"now has {n} entries")
        else:
            proof = merkle.consistency_proof(hashes, cp.size, hashed=True)
            if not merkle.verify_consistency(cp.size, n, bytes.fromhex(cp.root), root, proof):
                out.append(f"log was truncated or rewritten since checkpoint of size {cp.size}: "
                           f"its first {cp.size} entries no longer have the checkpoint's root "
                           "(consistency proof fails)")
        return out


def _pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes for signature checks. Forked when this process has one thread (the CLI,
    scripts: cheap, and needs no `if __name__ == "__main__"` guard); spawned otherwise, since
    forking a threaded process (a server) can copy a lock some other thread holds."""
    import multiprocessing
    import sys
    import threading

    method = "fork" if sys.platform == "linux" and threading.active_count() == 1 else "spawn"
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))


def _last_newline(f: Any, size: int) -> int:
    """Offset of the last newline before `size`, or -1 (reads backwards in blocks)."""
    pos = size
    while pos > 0:
        step = min(pos, 1 << 20)
        f.seek(pos - step)
        k = f.read(step).rfind(b"\n")
        if k >= 0:
            return pos - step + k
        pos -= step
    return -1


def load_checkpoint(path: str | Path) -> SignedTreeHead:
    """A checkpoint file written by `asl3 audit head --out`."""
    from asl3.security.encoding import read_json_object

    p = Path(path)
    doc = read_json_object(p, AuditError, f"{p}: no such checkpoint file",
                           f"{p}: not a checkpoint file")
    return SignedTreeHead.from_dict(doc, str(p))
