"""Binary allowlisting: the SHA-256 hashes of the executables allowed to read decrypted weights.

The allowlist is one of the safeguard settings under change management (asl3.security.change):
it is the `allowlist` of the approved state that `load_approved(DIRECTORY)` replays from
`change.json` (the roster) and `safeguards.json` (the applied changes), every proposal,
approval and apply record verified. Nobody can allowlist a binary alone: `propose_add` and
`propose_remove` only file proposals (`ChangeControl.propose_allow`/`propose_disallow`); a
member other than the proposer must approve, and `asl3 change apply` puts the change into
effect. The change log (`change.propose`/`.approve`/`.apply` in the audit log) records who did
what, so this module writes no audit entries of its own.

A directory without a roster (no change.json) has an empty allowlist: nothing is allowed. A
roster or history that does not verify is refused (AllowlistError, naming the change), never
read as empty. `trusted=` pins who may have signed change.json; without it the roster is taken
as found (someone who can rewrite the whole directory can write a roster of their own).

An approved entry is (sha256, path field). The path field is the executable's resolved path,
optionally followed by " # " and a note (`asl3 allowlist add --note`); a field that does not
start with "/" is a note only (`asl3 change propose --allow SHA256:TEXT`). Matching is by hash
only: the path is for people and for the fapolicyd export, which takes each entry's size from
the file at its path, and leaves the entry out (with a comment) when that file no longer has
the approved hash.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from asl3.errors import AllowlistError, ChangeError
from asl3.security.change import ApprovedSafeguards, ChangeControl, load_approved
from asl3.security.identity import Identity, PublicIdentity

READ_SIZE = 1024 * 1024
ELF_MAGIC = b"\x7fELF"
MAX_SCAN_FILES = 100_000
NOTE_SEP = " # "
FAPOLICYD_TRUST_FILE = "/etc/fapolicyd/trust.d/asl3-allowlist"
FAPOLICYD_RULES_FILE = "/etc/fapolicyd/rules.d/15-asl3-weights.rules"
_SHA = re.compile(r"[0-9a-f]{64}")
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f]")  # fapolicyd splits rule and trust lines on spaces


# -- hashing ------------------------------------------------------------------------------------
def hash_stream(f: BinaryIO) -> tuple[str, int]:
    """SHA-256 hex and length of everything left in `f`, read 1 MiB at a time."""
    h, size = hashlib.sha256(), 0
    buf = memoryview(bytearray(READ_SIZE))
    while n := f.readinto(buf):
        h.update(buf[:n])
        size += n
    return h.hexdigest(), size


def _open_regular(path: str | Path) -> BinaryIO:
    """Open a regular file for reading without following a final symlink or blocking on FIFOs."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(f"{path}: not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def hash_file(path: str | Path) -> tuple[str, int]:
    """SHA-256 hex and size of a regular file (symlinks resolved first)."""
    try:
        with _open_regular(os.path.realpath(path)) as f:
            return hash_stream(f)
    except FileNotFoundError:
        raise AllowlistError(f"{path}: no such file") from None
    except OSError as e:
        raise AllowlistError(f"{path}: cannot read ({e.strerror or e})") from None


# -- entries ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AllowEntry:
    """One approved executable: its hash, the resolved path it was proposed at ("" when the
    change named none), a note, and its size (0 = unknown; the export reads it from the file)."""

    sha256: str
    path: str
    note: str = ""
    size: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_approved(cls, sha256: str, field_: str) -> AllowEntry:
        """From an approved (sha256, path field) pair: "PATH", "PATH # NOTE" or "NOTE"."""
        if field_.startswith("/"):
            path, _, note = field_.partition(NOTE_SEP)
            return cls(sha256, path, note)
        return cls(sha256, "", field_)


def path_field(path: str, note: str = "") -> str:
    """The path field of an allowlist change: the resolved path, then " # NOTE" if any."""
    note = " ".join(note.split())  # one line
    return f"{path}{NOTE_SEP}{note}" if note else path


NO_ROSTER = ("no change roster here (change.json), so the allowlist is empty and cannot change: "
             "run 'asl3 change init {d} --member A.key.pub B.key.pub --as KEY' first (in a vault "
             "directory the custodians are the default members)")


# -- the allowlist ------------------------------------------------------------------------------
@dataclass
class ScanReport:
    """What `scan` found: executables not allowlisted, files it could not read, and counts."""

    root: str
    scanned: int = 0
    executables: int = 0
    unlisted: list[dict[str, Any]] = field(default_factory=list)  # {path, sha256, size}
    skipped: list[dict[str, str]] = field(default_factory=list)  # {path, reason}
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Allowlist:
    """The approved allowlist of one settings (or vault) directory. Load with `Allowlist.load`;
    it is a snapshot: load again to see changes applied since."""

    def __init__(self, directory: Path, approved: ApprovedSafeguards | None) -> None:
        self.directory = directory
        self.approved = approved
        self.fields: dict[str, str] = dict(approved.allowlist) if approved else {}
        self.entries = [AllowEntry.from_approved(s, f) for s, f in sorted(self.fields.items())]
        self._export: tuple[list[AllowEntry], list[str]] | None = None

    @property
    def has_roster(self) -> bool:
        return self.approved is not None

    @classmethod
    def load(cls, directory: str | Path,
             trusted: Sequence[PublicIdentity] | None = None) -> Allowlist:
        """The allowlist that the applied, approved changes of DIRECTORY lead to; empty when the
        directory has no change roster. `trusted`: change.json must be signed by one of these.
        Raises AllowlistError when the roster or a change does not verify."""
        d = Path(directory)
        if not d.is_dir():
            raise AllowlistError(f"{d}: not a directory")
        if not os.path.lexists(d / "change.json"):
            return cls(d, None)
        try:
            approved = load_approved(d, trusted=trusted)
        except ChangeError as e:
            raise AllowlistError(f"{d}: the approved settings do not verify, so no allowlist is "
                                 f"trusted: {e}") from None
        return cls(d, approved)

    # -- queries --------------------------------------------------------------------------------
    def find(self, sha256: str) -> AllowEntry | None:
        sha = sha256.lower()
        return next((e for e in self.entries if e.sha256 == sha), None)

    def check_stream(self, f: BinaryIO) -> tuple[bool, str, AllowEntry | None]:
        """Hash an open executable (e.g. /proc/PID/exe) and look it up."""
        sha, _ = hash_stream(f)
        entry = self.find(sha)
        return entry is not None, sha, entry

    def check(self, path: str | Path) -> tuple[bool, str, AllowEntry | None]:
        """(allowed, sha256, matching entry or None) for the file at `path`."""
        sha, _ = hash_file(path)
        entry = self.find(sha)
        return entry is not None, sha, entry

    def scan(self, root: str | Path, *, max_files: int = MAX_SCAN_FILES) -> ScanReport:
        """Executables (regular files with an exec bit, or ELF files) under `root` that are not
        allowlisted. Symlinks are not followed (so no loops; their targets under root are seen
        themselves), each directory is visited once, unreadable entries are listed in `skipped`,
        and at most `max_files` regular files are examined (`truncated` says when more exist)."""
        top = Path(os.path.realpath(root))
        if not top.is_dir():
            raise AllowlistError(f"{root}: not a directory")
        rep = ScanReport(str(top))
        allowed = {e.sha256 for e in self.entries}
        seen: set[tuple[int, int]] = set()
        stack = [str(top)]
        while stack and not rep.truncated:
            d = stack.pop()
            try:
                st = os.stat(d, follow_symlinks=False)
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                with os.scandir(d) as it:
                    items = sorted(it, key=lambda x: x.name)
            except OSError as e:
                rep.skipped.append({"path": d, "reason": e.strerror or str(e)})
                continue
            subdirs = []
            for item in items:
                try:
                    if item.is_symlink():
                        continue
                    if item.is_dir(follow_symlinks=False):
                        subdirs.append(item.path)
                        continue
                    if not item.is_file(follow_symlinks=False):
                        continue
                except OSError as e:
                    rep.skipped.append({"path": item.path, "reason": e.strerror or str(e)})
                    continue
                if rep.scanned >= max_files:
                    rep.truncated = True
                    break
                rep.scanned += 1
                hit = self._scan_file(item.path, rep)
                if hit and hit["sha256"] not in allowed:
                    rep.unlisted.append(hit)
            stack.extend(reversed(subdirs))
        return rep

    @staticmethod
    def _scan_file(path: str, rep: ScanReport) -> dict[str, Any] | None:
        try:
            with _open_regular(path) as f:
                mode = os.fstat(f.fileno()).st_mode
                if not mode & 0o111 and f.read(4) != ELF_MAGIC:
                    return None
                f.seek(0)
                sha, size = hash_stream(f)
        except OSError as e:
            rep.skipped.append({"path": path, "reason": e.strerror or str(e)})
            return None
        rep.executables += 1
        return {"path": path, "sha256": sha, "size": size}

    # -- fapolicyd ------------------------------------------------------------------------------
    @staticmethod
    def _on_disk(e: AllowEntry) -> tuple[AllowEntry | None, str]:
        """The entry with its size read from the file at its path, or (None, why not)."""
        if not e.path:
            return None, "no path was approved with it"
        if _UNSAFE.search(e.path):
            return None, f"path {e.path!r} has spaces or control characters fapolicyd cannot express"
        if os.path.islink(e.path):
            return None, f"{e.path} is now a symbolic link, not the approved file"
        try:
            with _open_regular(e.path) as f:
                sha, size = hash_stream(f)
        except OSError as err:
            return None, f"{e.path} cannot be read ({err.strerror or err})"
        if sha != e.sha256:
            return None, (f"{e.path} no longer has the approved hash (the file changed since; "
                          "install the approved binary or propose the new one)")
        return AllowEntry(e.sha256, e.path, e.note, size), ""

    def _exportable(self) -> tuple[list[AllowEntry], list[str]]:
        if self._export is None:
            ok, notes = [], []
            for e in sorted(self.entries, key=lambda x: (x.path, x.sha256)):
                entry, why = self._on_disk(e)
                if entry is None:
                    notes.append(f"# left out {e.sha256}: {why}")
                else:
                    ok.append(entry)
            self._export = ok, notes
        return self._export

    def _header(self) -> str:
        if self.approved is None:
            return f"# asl3 allowlist {self.directory} (no change roster: empty)"
        return (f"# asl3 allowlist {self.directory} (approved state "
                f"{self.approved.state_hash[:16]}, {self.approved.change_count} change(s) applied)")

    def fapolicyd_trust(self) -> str:
        """A fapolicyd trust.d file body: one `PATH SIZE SHA256` line per entry whose file is
        still at its path with the approved hash (the others are left out, with a comment)."""
        ok, notes = self._exportable()
        lines = [f"{self._header()}; install as {FAPOLICYD_TRUST_FILE}, then: "
                 "fapolicyd-cli --update", *notes]
        lines += [f"{e.path} {e.size} {e.sha256}" for e in ok]
        return "\n".join(lines) + "\n"

    def fapolicyd_rules(self, weights_path: str) -> str:
        """A rules.d snippet: only allowlisted executables (by path AND in the trust database)
        may open files under `weights_path`; every other open there is denied and audited."""
        w = os.path.normpath(weights_path)
        if not w.startswith("/") or _UNSAFE.search(w) or w == "/":
            raise AllowlistError(f"--weights-path {weights_path!r} must be an absolute directory "
                                 "other than / without spaces or control characters")
        w = w.rstrip("/") + "/"
        ok, notes = self._exportable()
        exes = sorted({e.path for e in ok})
        lines = [f"{self._header()}; install as {FAPOLICYD_RULES_FILE}",
                 "# (numbered to come before the distribution's broad allow rules; first match "
                 "wins), then: fagenrules --load",
                 "# Set integrity = sha256 in /etc/fapolicyd/fapolicyd.conf so trust=1 checks the "
                 "hash, not only the size.", *notes]
        lines += [f"allow perm=open exe={p} trust=1 : dir={w}" for p in exes]
        lines.append(f"deny_audit perm=open all : dir={w}")
        return "\n".join(lines) + "\n"

    def export_fapolicyd(self, weights_path: str | None = None) -> str:
        """The trust.d file and (with a weights path) the rules snippet, each under a marker
        line naming the file it belongs in."""
        parts = [f"#### {FAPOLICYD_TRUST_FILE}", self.fapolicyd_trust()]
        if weights_path is not None:
            parts += [f"#### {FAPOLICYD_RULES_FILE}", self.fapolicyd_rules(weights_path)]
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        a = self.approved
        return {"directory": str(self.directory), "roster": a is not None,
                "settings": a.settings_id if a else None, "state": a.state_hash if a else None,
                "changes": a.change_count if a else 0,
                "entries": [e.to_dict() for e in self.entries]}


# -- changes: proposals only --------------------------------------------------------------------
def _control(directory: str | Path) -> ChangeControl:
    d = Path(directory)
    if not d.is_dir():
        raise AllowlistError(f"{d}: not a directory")
    if not (d / "change.json").is_file():
        raise AllowlistError(f"{d}: " + NO_ROSTER.format(d=d))
    return ChangeControl(d)


def propose_add(directory: str | Path, paths: Sequence[str | Path], proposer: Identity, *,
                note: str = "", reason: str = "") -> list[dict[str, str]]:
    """Propose allowlisting the files (symlinks resolved, hashed now) in one change.
    Nothing is allowed until a member other than the proposer approves and a member applies.
    Returns [{change, sha256, path, note}], one row per file, all with the same change id."""
    if not paths:
        raise AllowlistError("add needs at least one file")
    cc = _control(directory)
    approved = Allowlist.load(directory).fields
    planned: dict[tuple[str, str], str] = {}
    for p in paths:
        real = os.path.realpath(p)
        sha, _ = hash_file(real)
        f = path_field(real, note)
        if approved.get(sha) == f:
            raise AllowlistError(f"{p}: already allowlisted (sha256 {sha})")
        planned.setdefault((sha, f), real)
    reals = list(planned.values())
    why = reason.strip() or (f"allow {', '.join(reals)}" + (f": {note}" if note.strip() else ""))
    cid = cc.propose_allowlist(proposer, "add", list(planned), why[:500])
    return [{"change": cid, "sha256": sha, "path": real, "note": note}
            for (sha, _), real in planned.items()]


def propose_remove(directory: str | Path, target: str, proposer: Identity, *,
                   reason: str = "") -> list[dict[str, str]]:
    """Propose removing a hash, or every entry approved for a path (symlinks resolved; a path
    with no entry of its own matches by the hash of the file there). All in one change.
    Returns [{change, sha256, path}]."""
    cc = _control(directory)
    entries = Allowlist.load(directory).entries
    t = target.strip()
    if _SHA.fullmatch(t.lower()):
        hits = [e for e in entries if e.sha256 == t.lower()]
    elif t:
        real = os.path.realpath(t)
        hits = [e for e in entries if e.path == real]
        if not hits and os.path.isfile(real):
            sha, _ = hash_file(real)
            hits = [e for e in entries if e.sha256 == sha]
    else:
        raise AllowlistError("remove needs a SHA-256 or a path")
    if not hits:
        raise AllowlistError(f"{t}: not on the approved allowlist of {directory}")
    why = reason.strip() or "disallow " + ", ".join(e.path or e.sha256 for e in hits)
    cid = cc.propose_allowlist(proposer, "remove", [(e.sha256, "") for e in hits], why[:500])
    return [{"change": cid, "sha256": e.sha256, "path": e.path} for e in hits]


__all__ = ["AllowEntry", "Allowlist", "ScanReport", "hash_file", "hash_stream", "path_field",
           "propose_add", "propose_remove"]
