"""Change management: safeguard settings change only with a proposer and a distinct approver.

The settings that decide what the gateway lets through (which classifier bundle, threshold
overrides, per-principal exemptions, the weight-reader allowlist, and this roster itself) live
in a settings directory, which may also be a vault directory:

    change.json                         the roster at the start: settings id, members' public
                                        identities, K approvals needed; signed by who made it
    changes/ID/proposal.json            a proposal signed by a member: kind, payload, reason,
                                        created, expires (created + 24 h), base (the state hash
                                        it applies to)
    changes/ID/approvals/FPR.json       a member's signed approval (change id + proposal hash)
    changes/ID/withdrawn.json           a withdrawal (the proposer or any member)
    changes/ID/applied.json             written once the change is in safeguards.json
    safeguards.json                     the approved state: every applied change in order, each
                                        with its proposal, its approvals and its signed apply
                                        record, hash-chained from change.json

A change ID is the first 24 hex of the SHA-256 of its canonical proposal, as for vault
requests. The state hash starts as the hash of change.json's roster and each applied change
moves it on: H(previous state, change id, proposal hash, approval hashes). A proposal names
the state it was made against (its base) and applies only to that state, so two approved
changes can never silently clobber each other: once one is applied, the other is stale and must
be proposed again against the new state.

The rules, enforced by `ChangeControl.apply` and checked again, from an empty state, by
`load_approved` (same code, `_step`): the proposer is a member of the roster in force; K
distinct members *other than the proposer* approved (the proposer's own approval is recorded
but never counts: you cannot approve your own change); every approval was made while the
proposal was pending; it was applied before it expired and was not withdrawn first; its base is
the state it follows; every signature verifies. A roster change is approved under the roster it
replaces. Applying a new bundle clears threshold overrides (thresholds are calibrated for one
bundle; carrying them to another would be a change nobody approved for it).

An "unblock" change (`propose_unblock`: payload {client, until}) is the approval that the egress
proxy needs to lift the block of one client address: it changes no setting, but it is proposed,
approved and applied like any other change, and `load_approved` lists it (`unblocks`: change id,
client, until, when proposed and applied, reason, proposer, approvers). The proxy, not this
module, makes each one usable once, before `until`, and only for a block that began before the
change was proposed (see `asl3.egress.admin`). Like every change it moves the state hash on, so
a proposal pending meanwhile becomes stale and must be proposed again.

What this does not stop: someone who can rewrite the whole directory can write a new
change.json with their own keys and a history to match, unless the reader pins the roster's
signer (`load_approved(..., trusted=[...])`); and one who deletes both the latest entries of
safeguards.json and their `changes/ID/applied.json` files rolls the settings back to an older
approved state, which only the audit log shows.
"""

from __future__ import annotations

import copy
import fcntl
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from asl3.errors import ChangeError, SecurityError
from asl3.security.audit import AuditLog
from asl3.security.encoding import (
    b64,
    canonical,
    iso,
    parse_time,
    read_json_object,
    sha256_hex,
    unb64,
    utcnow,
    write_new_json,
)
from asl3.security.identity import Identity, PublicIdentity

ROSTER_FORMAT = "asl3-change-roster/1"
PROPOSAL_FORMAT = "asl3-change/1"
APPROVAL_FORMAT = "asl3-change-approval/1"
APPLIED_FORMAT = "asl3-change-applied/1"
WITHDRAWN_FORMAT = "asl3-change-withdrawn/1"
STATE_FORMAT = "asl3-safeguards/1"
KINDS = ("bundle", "thresholds", "exemption", "allowlist", "roster", "unblock")
DEFAULT_PENDING = timedelta(hours=24)
MAX_PENDING = timedelta(days=7)
DEFAULT_UNBLOCK_VALID = timedelta(hours=48)  # an unblock change can be used until then
MAX_UNBLOCK_VALID = timedelta(days=7)
MAX_MEMBERS = 64
MAX_ALLOW_ENTRIES = 256

_CHANGE_ID = re.compile(r"[0-9a-f]{24}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_THRESHOLD = re.compile(r"[a-z][a-z0-9_]{0,63}")
_CATEGORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

Clock = Callable[[], datetime]


_utcnow, _iso = utcnow, iso


def _time(text: Any, what: str) -> datetime:
    return parse_time(text, what, ChangeError)


def parse_until(text: str) -> datetime:
    """An ISO date (00:00 UTC that day) or datetime (no zone = UTC; 'Z' accepted)."""
    s = str(text).strip()
    try:
        t = datetime.fromisoformat(s[:-1] + "+00:00" if s[-1:] in ("Z", "z") else s)
    except ValueError:
        raise ChangeError(f"until {text!r} is not an ISO date (2026-12-31) or datetime "
                          "(2026-12-31T18:00:00Z)") from None
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    return read_json_object(path, ChangeError, f"{what}: not found ({path})",
                            f"{what}: unreadable ({path})")


_write_new = write_new_json


def _write_replace(path: Path, doc: dict[str, Any]) -> None:
    """Replace a file atomically: readers see the old or the new one, never half of either."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(json.dumps(doc, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _signed(key: str, body: dict[str, Any], signer: Identity) -> dict[str, Any]:
    return {key: body, "signature": b64(signer.sign(canonical(body)))}


def _body(doc: Any, key: str, where: str) -> tuple[dict[str, Any], bytes]:
    """The signed object and its signature from a `{key: {...}, "signature": b64}` document."""
    if not isinstance(doc, dict) or not isinstance(doc.get(key), dict):
        raise ChangeError(f"{where}: malformed (no {key} object)")
    try:
        sig = unb64(doc["signature"], "signature")
    except (KeyError, ValueError) as e:
        raise ChangeError(f"{where}: malformed ({e})") from None
    return doc[key], sig


def _check_id(change_id: str) -> str:
    if not isinstance(change_id, str) or not _CHANGE_ID.fullmatch(change_id):
        raise ChangeError(f"{change_id!r} is not a change id (24 hex characters)")
    return change_id


# -- payloads ---------------------------------------------------------------------------------
def _sha(value: Any, where: str) -> str:
    s = str(value).lower() if isinstance(value, str) else ""
    if not _SHA256.fullmatch(s):
        raise ChangeError(f"{where}: {value!r} is not a SHA-256 (64 hex characters)")
    return s


def client_address(value: Any, where: str = "unblock") -> str:
    """An egress client (an IP address) in canonical form ('10.0.0.7', '2001:db8::1')."""
    try:
        return str(ipaddress.ip_address(str(value).strip().strip("[]")))
    except ValueError:
        raise ChangeError(f"{where}: {value!r} is not an IP address (an egress client is its "
                          "source address)") from None


def _roster(members: Any, approvals: Any, where: str) -> dict[str, PublicIdentity]:
    """Members by fingerprint; K approvals from members other than the proposer must be possible."""
    if not isinstance(members, list) or not members:
        raise ChangeError(f"{where}: the roster needs a list of members")
    if len(members) > MAX_MEMBERS:
        raise ChangeError(f"{where}: at most {MAX_MEMBERS} members")
    try:
        pubs = [PublicIdentity.from_dict(m, f"{where} member") for m in members]
    except SecurityError as e:
        raise ChangeError(str(e)) from None
    by_fpr = {p.fingerprint: p for p in pubs}
    if len(by_fpr) != len(pubs):
        raise ChangeError(f"{where}: the same member is listed twice")
    if isinstance(approvals, bool) or not isinstance(approvals, int) or approvals < 1:
        raise ChangeError(f"{where}: approvals must be a whole number, at least 1 (a change "
                          "always needs someone besides its proposer)")
    if approvals > len(pubs) - 1:
        raise ChangeError(f"{where}: {approvals} approval(s) besides the proposer need at least "
                          f"{approvals + 1} members, not {len(pubs)}")
    return by_fpr


def check_payload(kind: str, payload: Any, where: str = "change") -> None:
    """Structural checks of a change's payload (what can be judged without the settings)."""
    if kind not in KINDS:
        raise ChangeError(f"{where}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
    if not isinstance(payload, dict):
        raise ChangeError(f"{where}: the payload must be an object")

    def exactly(*names: str) -> None:
        if set(payload) != set(names):
            raise ChangeError(f"{where}: a {kind} change has exactly the fields "
                              f"{', '.join(names)}, not {', '.join(sorted(payload)) or 'none'}")

    if kind == "bundle":
        exactly("sha256", "name", "path")
        _sha(payload["sha256"], where)
        if not isinstance(payload["name"], str) or not isinstance(payload["path"], str):
            raise ChangeError(f"{where}: bundle name and path must be text")
    elif kind == "thresholds":
        exactly("set")
        values = payload["set"]
        if not isinstance(values, dict) or not values:
            raise ChangeError(f"{where}: a thresholds change sets at least one threshold")
        for name, value in values.items():
            if not _THRESHOLD.fullmatch(name):
                raise ChangeError(f"{where}: {name!r} is not a threshold name")
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0.0 < float(value) < 1.0:
                raise ChangeError(f"{where}: threshold {name} = {value!r} is not a number "
                                  "strictly between 0 and 1")
    elif kind == "exemption":
        action = payload.get("action")
        if action == "add":
            exactly("action", "principal", "category", "until")
            _time(payload["until"], f"{where} until")
        elif action == "remove":
            exactly("action", "principal", "category")
        else:
            raise ChangeError(f"{where}: an exemption change's action is 'add' or 'remove'")
        if not isinstance(payload["principal"], str) or not payload["principal"].strip():
            raise ChangeError(f"{where}: an exemption needs a principal name")
        if not isinstance(payload["category"], str) or not _CATEGORY.fullmatch(payload["category"]):
            raise ChangeError(f"{where}: {payload['category']!r} is not a category id")
    elif kind == "allowlist":
        action = payload.get("action")
        if action not in ("add", "remove"):
            raise ChangeError(f"{where}: an allowlist change's action is 'add' or 'remove'")
        exactly("action", "entries")
        entries = payload["entries"]
        if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_ALLOW_ENTRIES:
            raise ChangeError(f"{where}: an allowlist change lists 1 to {MAX_ALLOW_ENTRIES} "
                              "entries")
        seen: set[str] = set()
        for e in entries:
            if not isinstance(e, dict) or set(e) != {"sha256", "path"}:
                raise ChangeError(f"{where}: each allowlist entry has exactly sha256 and path")
            if e["sha256"] != _sha(e["sha256"], where):
                raise ChangeError(f"{where}: write the SHA-256 in lower case")
            if not isinstance(e["path"], str):
                raise ChangeError(f"{where}: the path note must be text")
            if e["sha256"] in seen:
                raise ChangeError(f"{where}: {e['sha256'][:16]}... is listed twice")
            seen.add(e["sha256"])
    elif kind == "unblock":
        exactly("client", "until")
        if not isinstance(payload["client"], str) \
                or client_address(payload["client"], where) != payload["client"]:
            raise ChangeError(f"{where}: the client must be an IP address in canonical form, "
                              f"not {payload['client']!r}")
        _time(payload["until"], f"{where} until")
    else:  # roster
        exactly("members", "approvals")
        _roster(payload["members"], payload["approvals"], where)


def summary(kind: str, payload: dict[str, Any]) -> str:
    """One line saying what a change does."""
    if kind == "bundle":
        return f"bundle {payload['name']} (sha256 {payload['sha256'][:16]}...)"
    if kind == "thresholds":
        return "thresholds " + ", ".join(f"{k}={v}" for k, v in sorted(payload["set"].items()))
    if kind == "exemption":
        if payload["action"] == "add":
            return (f"exempt {payload['principal']} from {payload['category']} until "
                    f"{payload['until']}")
        return f"remove the exemption of {payload['principal']} from {payload['category']}"
    if kind == "allowlist":
        verb = "allow" if payload["action"] == "add" else "disallow"
        return f"{verb} " + ", ".join(
            f"{e['sha256'][:16]}..." + (f" ({e['path']})" if e["path"] else "")
            for e in payload["entries"])
    if kind == "unblock":
        return f"unblock egress client {payload['client']} (usable once, until {payload['until']})"
    names = ", ".join(str(m.get("name")) for m in payload["members"])
    return f"roster {names}; {payload['approvals']} approval(s) besides the proposer"


# -- state ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ApprovedUnblock:
    """An applied "unblock" change: the approval to lift the egress block of `client`."""

    change: str
    client: str
    until: datetime       # usable before this
    proposed_at: datetime
    applied_at: datetime
    reason: str
    proposer: str
    approvers: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"change": self.change, "client": self.client, "until": _iso(self.until),
                "proposed_at": _iso(self.proposed_at), "applied_at": _iso(self.applied_at),
                "reason": self.reason, "proposer": self.proposer,
                "approvers": list(self.approvers)}


@dataclass
class _State:
    """The settings while a history is replayed (mutable; `ApprovedSafeguards` is the result)."""

    settings_id: str
    members: dict[str, PublicIdentity]
    approvals: int
    hash: str
    bundle: dict[str, str] | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    exemptions: dict[tuple[str, str], str] = field(default_factory=dict)
    allowlist: dict[str, str] = field(default_factory=dict)
    applied: list[str] = field(default_factory=list)
    unblocks: list[ApprovedUnblock] = field(default_factory=list)


def _apply_payload(state: _State, kind: str, payload: dict[str, Any], where: str) -> None:
    if kind == "bundle":
        state.bundle = {"sha256": payload["sha256"], "name": payload["name"],
                        "path": payload["path"]}
        state.thresholds = {}  # calibrated for the previous bundle: not carried over
    elif kind == "thresholds":
        state.thresholds.update({k: float(v) for k, v in payload["set"].items()})
    elif kind == "exemption":
        key = (payload["principal"], payload["category"])
        if payload["action"] == "add":
            state.exemptions[key] = payload["until"]
        elif state.exemptions.pop(key, None) is None:
            raise ChangeError(f"{where}: {key[0]} has no approved exemption from {key[1]} to "
                              "remove")
    elif kind == "allowlist":
        for e in payload["entries"]:
            if payload["action"] == "add":
                state.allowlist[e["sha256"]] = e["path"]
            elif state.allowlist.pop(e["sha256"], None) is None:
                raise ChangeError(f"{where}: {e['sha256'][:16]}... is not on the allowlist")
    elif kind == "unblock":
        pass  # no setting changes: `_step` records the approval in `unblocks`
    else:
        state.members = _roster(payload["members"], payload["approvals"], where)
        state.approvals = int(payload["approvals"])


def _next_hash(prev: str, change_id: str, proposal_hash: str, approval_hashes: Sequence[str]) -> str:
    return sha256_hex(canonical({"prev": prev, "change": change_id, "proposal": proposal_hash,
                                 "approvals": sorted(approval_hashes)}))


@dataclass(frozen=True)
class Proposal:
    """A proposal whose signature verified (membership is judged against a state separately)."""

    id: str
    body: dict[str, Any]
    hash: str
    proposer: PublicIdentity

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def payload(self) -> dict[str, Any]:
        return self.body["payload"]

    @property
    def created(self) -> datetime:
        return _time(self.body["created"], f"change {self.id}")

    @property
    def expires(self) -> datetime:
        return _time(self.body["expires"], f"change {self.id}")


@dataclass(frozen=True)
class ChangeApproval:
    approver: PublicIdentity
    at: datetime
    hash: str
    doc: dict[str, Any]


def _read_proposal(doc: Any, where: str, expect_id: str | None = None) -> Proposal:
    body, sig = _body(doc, "proposal", where)
    data = canonical(body)
    digest = sha256_hex(data)
    cid = digest[:24]
    if expect_id is not None and cid != expect_id:
        raise ChangeError(f"change {expect_id}: the proposal was altered (its hash no longer "
                          "matches its id)")
    where = f"change {cid}"
    if body.get("format") != PROPOSAL_FORMAT:
        raise ChangeError(f"{where}: not a change proposal (format is not {PROPOSAL_FORMAT})")
    try:
        proposer = PublicIdentity.from_dict(body["proposer"], f"{where} proposer")
    except (KeyError, SecurityError) as e:
        raise ChangeError(f"{where}: malformed ({e})") from None
    if not proposer.verify(sig, data):
        raise ChangeError(f"{where}: the proposer's signature does not verify (forged or altered)")
    for k in ("settings", "kind", "reason", "created", "expires", "base"):
        if not isinstance(body.get(k), str):
            raise ChangeError(f"{where}: malformed ({k})")
    check_payload(body["kind"], body.get("payload"), where)
    pending = _time(body["expires"], where) - _time(body["created"], where)
    if not timedelta(0) < pending <= MAX_PENDING:
        raise ChangeError(f"{where}: may stay pending at most {MAX_PENDING.days} days")
    return Proposal(cid, body, digest, proposer)


def _read_approval(doc: Any, state: _State, p: Proposal, where: str) -> ChangeApproval:
    body, sig = _body(doc, "approval", where)
    fpr = body.get("approver")
    member = state.members.get(fpr) if isinstance(fpr, str) else None
    if member is None:
        raise ChangeError(f"{where}: approval by {fpr!r}, who is not a member of the roster "
                          "(forged)")
    if not member.verify(sig, canonical(body)):
        raise ChangeError(f"{where}: {member.name}'s approval signature does not verify (forged "
                          "or altered)")
    expected = {"format": APPROVAL_FORMAT, "settings": state.settings_id, "change": p.id,
                "proposal_hash": p.hash}
    wrong = [k for k, v in expected.items() if body.get(k) != v]
    if wrong:
        raise ChangeError(f"{where}: {member.name}'s approval was signed for another change "
                          f"({', '.join(wrong)} differ); approvals cannot be reused")
    at = _time(body.get("approved_at"), where)
    if not p.created <= at < p.expires:
        raise ChangeError(f"{where}: {member.name} approved outside the proposal's pending window "
                          f"({p.body['created']} to {p.body['expires']})")
    return ChangeApproval(member, at, sha256_hex(canonical(doc)), doc)


def _withdrawal(directory: Path | None, cid: str, state: _State,
                p: Proposal) -> tuple[str, datetime] | None:
    """(who, when) of a verified withdrawal of this change, or None when there is none."""
    if directory is None:
        return None
    path = directory / "changes" / cid / "withdrawn.json"
    if not path.exists():
        return None
    where = f"change {cid}: withdrawal"
    body, sig = _body(_read_json(path, where), "withdrawal", where)
    fpr = body.get("by")
    who = p.proposer if fpr == p.proposer.fingerprint else state.members.get(str(fpr))
    if who is None or not who.verify(sig, canonical(body)) or body.get("change") != cid \
            or body.get("settings") != state.settings_id:
        # a withdrawal that does not verify still stops the change: refusing is the safe side
        raise ChangeError(f"{where} ({path}) does not verify; remove it only if you know why "
                          "it is there")
    return who.name, _time(body.get("at"), where)


def _step(state: _State, rec: Any, n: int, directory: Path | None = None) -> None:
    """Check one applied change against the state it follows, then apply it (in place)."""
    if not isinstance(rec, dict):
        raise ChangeError(f"safeguards.json: change #{n} is not an object")
    rid = rec.get("id")
    p = _read_proposal(rec.get("proposal"), f"safeguards.json change #{n}",
                       expect_id=rid if isinstance(rid, str) else "?")
    where = f"change {p.id} (#{n} in safeguards.json)"
    if p.body["settings"] != state.settings_id:
        raise ChangeError(f"{where}: belongs to other settings ({p.body['settings']})")
    if p.id in state.applied:
        raise ChangeError(f"{where}: applied twice")
    proposer = state.members.get(p.proposer.fingerprint)
    if proposer is None:
        raise ChangeError(f"{where}: proposed by {p.proposer.name} ({p.proposer.fingerprint}), "
                          "who is not a member of the roster")
    if p.body["base"] != state.hash:
        raise ChangeError(f"{where}: proposed against state {p.body['base'][:16]}... but follows "
                          f"state {state.hash[:16]}... (a change was dropped, reordered or "
                          "inserted, or the proposal is stale)")
    docs = rec.get("approvals")
    if not isinstance(docs, list):
        raise ChangeError(f"{where}: malformed (approvals)")
    approvals = [_read_approval(d, state, p, f"{where} approval") for d in docs]
    fprs = [a.approver.fingerprint for a in approvals]
    if len(set(fprs)) != len(fprs):
        raise ChangeError(f"{where}: the same member's approval is counted twice")
    counted = [a for a in approvals if a.approver.fingerprint != p.proposer.fingerprint]
    if len(counted) < state.approvals:
        own = " (the proposer's own approval does not count)" if len(counted) < len(approvals) \
            else ""
        raise ChangeError(f"{where}: has {len(counted)} of the {state.approvals} approval(s) it "
                          f"needs from members other than the proposer{own}")
    body, sig = _body(rec.get("applied"), "applied", f"{where} apply record")
    applier = state.members.get(str(body.get("by")))
    if applier is None or not applier.verify(sig, canonical(body)):
        raise ChangeError(f"{where}: the apply record is not signed by a member (forged or "
                          "altered)")
    new_hash = _next_hash(state.hash, p.id, p.hash, [a.hash for a in approvals])
    expected = {"format": APPLIED_FORMAT, "settings": state.settings_id, "change": p.id,
                "proposal_hash": p.hash, "prev": state.hash, "state": new_hash}
    wrong = [k for k, v in expected.items() if body.get(k) != v]
    if wrong:
        raise ChangeError(f"{where}: the apply record does not match ({', '.join(wrong)} differ)")
    at = _time(body.get("applied_at"), f"{where} apply record")
    if not p.created <= at < p.expires:
        raise ChangeError(f"{where}: applied at {body['applied_at']}, outside its pending window")
    if any(a.at > at for a in approvals):
        raise ChangeError(f"{where}: an approval is dated after the change was applied")
    withdrawn = _withdrawal(directory, p.id, state, p)
    if withdrawn is not None and withdrawn[1] <= at:
        raise ChangeError(f"{where}: was withdrawn by {withdrawn[0]} before it was applied")
    _apply_payload(state, p.kind, p.payload, where)
    if p.kind == "unblock":
        state.unblocks.append(ApprovedUnblock(
            p.id, p.payload["client"], _time(p.payload["until"], where), p.created, at,
            p.body["reason"], p.proposer.name, tuple(a.approver.name for a in counted)))
    state.hash = new_hash
    state.applied.append(p.id)


def _genesis(directory: Path, trusted: Sequence[PublicIdentity] | None) -> _State:
    where = f"{directory}/change.json"
    doc = _read_json(directory / "change.json", f"{directory}: no change settings "
                     "(run 'asl3 change init')")
    body, sig = _body(doc, "roster", where)
    if body.get("format") != ROSTER_FORMAT:
        raise ChangeError(f"{where}: not a change roster (format is not {ROSTER_FORMAT})")
    try:
        by = PublicIdentity.from_dict(body.get("by"), f"{where} signer")
    except SecurityError as e:
        raise ChangeError(str(e)) from None
    if not by.verify(sig, canonical(body)):
        raise ChangeError(f"{where}: the signature of {by.name} does not verify (altered)")
    if trusted is not None and by.fingerprint not in {t.fingerprint for t in trusted}:
        raise ChangeError(f"{where}: signed by {by.name} ({by.fingerprint}), who is not one of "
                          "the trusted identities")
    if not isinstance(body.get("settings"), str):
        raise ChangeError(f"{where}: malformed (settings)")
    members = _roster(body.get("members"), body.get("approvals"), where)
    return _State(body["settings"], members, int(body["approvals"]), sha256_hex(canonical(body)))


class _Moved(Exception):
    """safeguards.json was replaced while it was being checked (an apply ran meanwhile)."""


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _replay_once(directory: Path, trusted: Sequence[PublicIdentity] | None,
                 ) -> tuple[_State, list[dict[str, Any]]]:
    state = _genesis(directory, trusted)
    genesis = state.hash
    path = directory / "safeguards.json"
    seen = _file_id(path)
    records: list[dict[str, Any]] = []
    if seen is not None:
        doc = _read_json(path, "safeguards.json")
        if doc.get("format") != STATE_FORMAT:
            raise ChangeError(f"{path}: not approved safeguards (format is not {STATE_FORMAT})")
        if doc.get("settings") != state.settings_id or doc.get("genesis") != genesis:
            raise ChangeError(f"{path}: belongs to other settings than change.json")
        records = doc.get("changes")  # type: ignore[assignment]
        if not isinstance(records, list):
            raise ChangeError(f"{path}: malformed (changes)")
        for n, rec in enumerate(records, 1):
            _step(state, rec, n, directory)
        if doc.get("state") != state.hash:
            raise ChangeError(f"{path}: its state hash is not the one its changes lead to "
                              "(altered)")
    cdir = directory / "changes"
    for d in sorted(cdir.iterdir()) if cdir.is_dir() else []:
        if (d / "applied.json").exists() and d.name not in state.applied:
            if _file_id(path) != seen:
                raise _Moved
            raise ChangeError(f"change {d.name} was applied ({d}/applied.json) but is not in "
                              "safeguards.json: the settings were rolled back or replaced")
    return state, records


def _replay(directory: Path, trusted: Sequence[PublicIdentity] | None,
            ) -> tuple[_State, list[dict[str, Any]]]:
    """The state safeguards.json leads to from change.json, every change checked by `_step`."""
    for _ in range(3):
        try:
            return _replay_once(directory, trusted)
        except _Moved:
            continue
    raise ChangeError(f"{directory}: the settings kept changing while they were read; try again")


# -- the approved state -----------------------------------------------------------------------
def _manifest_digest(bundle_dir: str | Path) -> str:
    p = Path(bundle_dir) / "manifest.json"
    try:
        return sha256_hex(p.read_bytes())
    except OSError:
        raise ChangeError(f"{bundle_dir}: not a model bundle (no readable manifest.json)") from None


@dataclass(frozen=True)
class ApprovedSafeguards:
    """The settings as the approved changes left them, every signature checked.

    `bundle_sha256` None: no bundle has been approved (any verified bundle may be used);
    `thresholds`: approved overrides of the bundle's thresholds; `exemptions`: (principal,
    category, until) approved; `allowlist`: (sha256, path note); `unblocks`: applied egress
    unblock changes, oldest first (each is usable once: the proxy keeps track)."""

    directory: str
    settings_id: str
    state_hash: str
    change_count: int
    change_ids: tuple[str, ...]
    bundle_sha256: str | None
    bundle_name: str | None
    bundle_path: str | None
    thresholds: Mapping[str, float]
    exemptions: tuple[tuple[str, str, datetime], ...]
    allowlist: tuple[tuple[str, str], ...]
    members: tuple[PublicIdentity, ...]
    approvals: int
    unblocks: tuple[ApprovedUnblock, ...] = ()

    @classmethod
    def _from_state(cls, directory: Path, s: _State) -> ApprovedSafeguards:
        b = s.bundle or {}
        return cls(str(directory), s.settings_id, s.hash, len(s.applied), tuple(s.applied),
                   b.get("sha256"), b.get("name"), b.get("path"), dict(s.thresholds),
                   tuple((p, c, parse_until(u)) for (p, c), u in sorted(s.exemptions.items())),
                   tuple(sorted(s.allowlist.items())), tuple(s.members.values()), s.approvals,
                   tuple(s.unblocks))

    def unblock(self, change_id: str) -> ApprovedUnblock | None:
        """The applied unblock change with this id, or None."""
        return next((u for u in self.unblocks if u.change == change_id), None)

    def check_digest(self, digest: str, what: str = "the bundle") -> None:
        """Raise unless a bundle with this manifest digest is the approved one (or none is)."""
        if self.bundle_sha256 is not None and digest != self.bundle_sha256:
            raise ChangeError(f"bundle {what} is not the approved one (approved sha256 "
                              f"{self.bundle_sha256}, {self.bundle_name}; this one "
                              f"{digest[:16]}...)")

    def check_bundle(self, bundle_dir: str | Path) -> str:
        """The bundle's manifest digest, or ChangeError when it is not the approved bundle."""
        digest = _manifest_digest(bundle_dir)
        self.check_digest(digest, str(bundle_dir))
        return digest

    def exemption_until(self, principal: str, category: str,
                        at: datetime | None = None) -> datetime | None:
        """When the approved exemption of principal from category ends, if it is active at `at`."""
        at = at or _utcnow()
        for p, c, until in self.exemptions:
            if p == principal and c == category and at < until:
                return until
        return None

    def exemption_allowed(self, principal: str, category: str, at: datetime | None = None) -> bool:
        return self.exemption_until(principal, category, at) is not None

    def allowed(self, sha256: str) -> bool:
        return sha256.lower() in {s for s, _ in self.allowlist}

    def to_dict(self) -> dict[str, Any]:
        return {"directory": self.directory, "settings": self.settings_id,
                "state": self.state_hash, "changes": self.change_count,
                "bundle": ({"sha256": self.bundle_sha256, "name": self.bundle_name,
                            "path": self.bundle_path} if self.bundle_sha256 else None),
                "thresholds": dict(self.thresholds),
                "exemptions": [{"principal": p, "category": c, "until": _iso(u)}
                               for p, c, u in self.exemptions],
                "allowlist": [{"sha256": s, "path": n} for s, n in self.allowlist],
                "members": [{"name": m.name, "fingerprint": m.fingerprint} for m in self.members],
                "approvals": self.approvals,
                "unblocks": [u.to_dict() for u in self.unblocks]}


def load_approved(directory: str | Path, *,
                  trusted: Sequence[PublicIdentity] | None = None) -> ApprovedSafeguards:
    """Replay safeguards.json from change.json, checking every proposal, approval and apply
    record; raise ChangeError naming the first change that fails.

    `trusted`: change.json must be signed by one of these identities (pins where the roster
    comes from; without it the roster in change.json is taken as found)."""
    d = Path(directory)
    state, _ = _replay(d, trusted)
    return ApprovedSafeguards._from_state(d, state)


# -- the settings directory -------------------------------------------------------------------
def _default_bundle() -> Path:
    return Path(str(resources.files("asl3") / "models" / "default"))


class ChangeControl:
    """One settings directory: propose, approve, apply and withdraw changes."""

    def __init__(self, path: str | Path, *, clock: Clock = _utcnow) -> None:
        self.path = Path(path)
        self._clock = clock
        if not (self.path / "change.json").is_file():
            raise ChangeError(f"{self.path}: no change settings here (run 'asl3 change init "
                              f"{self.path} --member PUBFILE ... --as KEY' first)")

    @classmethod
    def init(cls, path: str | Path, members: Sequence[PublicIdentity], approvals: int = 1, *,
             by: Identity, clock: Clock = _utcnow) -> ChangeControl:
        """Write change.json: the first roster, signed by `by`. Refuses to replace one."""
        p = Path(path)
        body = {"format": ROSTER_FORMAT, "settings": secrets.token_hex(16),
                "created": _iso(clock()), "by": by.public().to_dict(),
                "members": [m.to_dict() for m in members], "approvals": approvals}
        _roster(body["members"], approvals, "roster")
        p.mkdir(parents=True, exist_ok=True)
        try:
            _write_new(p / "change.json", _signed("roster", body, by))
        except FileExistsError:
            raise ChangeError(f"{p}/change.json already exists; change the roster with "
                              "'asl3 change propose --member ...'") from None
        cc = cls(p, clock=clock)
        cc._audit(by, "change.init", body["settings"],
                  {"members": [m.fingerprint for m in members], "approvals": approvals})
        return cc

    # -- helpers ----------------------------------------------------------------------------
    def _audit(self, actor: Identity, action: str, subject: str, details: dict[str, Any]) -> None:
        AuditLog(self.path, clock=self._clock).append(actor, action, subject, details)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """One apply at a time: the second waits, then finds its proposal stale."""
        with open(self.path / ".change.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _state(self) -> _State:
        return _replay(self.path, None)[0]

    def approved(self, trusted: Sequence[PublicIdentity] | None = None) -> ApprovedSafeguards:
        return load_approved(self.path, trusted=trusted)

    def _member(self, state: _State, ident: Identity, doing: str) -> PublicIdentity:
        pub = ident.public()
        if pub.fingerprint not in state.members:
            raise ChangeError(f"{pub.name} ({pub.fingerprint}) is not a member of the change "
                              f"roster and may not {doing}")
        return pub

    def _change_dir(self, change_id: str) -> Path:
        d = self.path / "changes" / _check_id(change_id)
        if not (d / "proposal.json").is_file():
            raise ChangeError(f"no change {change_id} in {self.path}")
        return d

    def proposal(self, change_id: str) -> Proposal:
        d = self._change_dir(change_id)
        return _read_proposal(_read_json(d / "proposal.json", f"change {change_id}"),
                              f"change {change_id}", expect_id=change_id)

    def _approvals(self, state: _State, p: Proposal) -> list[ChangeApproval]:
        d = self.path / "changes" / p.id / "approvals"
        out = []
        for f in sorted(d.glob("*.json")) if d.is_dir() else []:
            where = f"change {p.id}: approval {f.name}"
            a = _read_approval(_read_json(f, where), state, p, where)
            if f.stem != a.approver.fingerprint:
                raise ChangeError(f"{where}: filed under another member's name (forged)")
            out.append(a)
        return out

    def _reference_manifest(self, state: _State, against: str | Path | None) -> dict[str, Any]:
        """The manifest of the bundle a thresholds or exemption change is checked against:
        `against` (which must be the approved bundle when one is approved), else the approved
        bundle at its recorded path, else the bundled default model."""
        if against is not None:
            path = Path(against)
        elif state.bundle is not None:
            path = Path(state.bundle["path"])
        else:
            path = _default_bundle()
        raw_path = path / "manifest.json"
        try:
            raw = raw_path.read_bytes()
        except OSError:
            hint = " (give --against DIR, a copy of the approved bundle)" if against is None else ""
            raise ChangeError(f"{path}: cannot read the bundle's manifest.json to check the "
                              f"change against{hint}") from None
        if state.bundle is not None and sha256_hex(raw) != state.bundle["sha256"]:
            raise ChangeError(f"bundle {path} is not the approved one (approved sha256 "
                              f"{state.bundle['sha256']}, {state.bundle['name']})")
        try:
            m = json.loads(raw)
            m["thresholds"], m["categories"]  # noqa: B018 - presence check
        except (ValueError, KeyError, TypeError) as e:
            raise ChangeError(f"{raw_path}: not a bundle manifest ({e})") from None
        return m

    # -- propose ----------------------------------------------------------------------------
    def propose(self, proposer: Identity, kind: str, payload: dict[str, Any], reason: str, *,
                pending: timedelta = DEFAULT_PENDING, against: str | Path | None = None) -> str:
        """Sign and file a proposal against the current state; returns its change id.

        `against`: for thresholds and exemptions, the bundle whose thresholds and constitution
        the change is checked against (default: the approved bundle, else the bundled one)."""
        if not reason.strip():
            raise ChangeError("a change needs a reason")
        if not timedelta(0) < pending <= MAX_PENDING:
            raise ChangeError(f"a change may stay pending at most {MAX_PENDING.days} days")
        check_payload(kind, payload, f"{kind} change")
        state = self._state()
        pub = self._member(state, proposer, "propose changes")
        now = self._clock()
        if kind in ("thresholds", "exemption"):
            m = self._reference_manifest(state, against)
            if kind == "thresholds":
                unknown = sorted(set(payload["set"]) - set(m["thresholds"]))
                if unknown:
                    raise ChangeError(f"no threshold {', '.join(unknown)} in the bundle (it has "
                                      f"{', '.join(sorted(m['thresholds']))})")
            elif payload["action"] == "add":
                cats = {c.get("id"): c for c in m["categories"] if isinstance(c, dict)}
                exemptible = sorted(c for c, v in cats.items() if v.get("exemptible"))
                allowed = f"exemptible categories: {', '.join(exemptible) or 'none'}"
                if payload["category"] not in cats:
                    raise ChangeError(f"unknown category {payload['category']!r} in the bundle's "
                                      f"constitution ({allowed})")
                if payload["category"] not in exemptible:
                    raise ChangeError(f"category {payload['category']!r} is not exemptible "
                                      f"({allowed})")
                if _time(payload["until"], "until") <= now:
                    raise ChangeError(f"until {payload['until']} is in the past: an exemption "
                                      "must end in the future")
        if kind == "unblock":
            until = _time(payload["until"], "until")
            if until <= now:
                raise ChangeError(f"until {payload['until']} is in the past: an unblock must be "
                                  "usable in the future")
            if until > now + MAX_UNBLOCK_VALID:
                raise ChangeError(f"until {payload['until']} is more than "
                                  f"{MAX_UNBLOCK_VALID.days} days ahead: an unblock is for a "
                                  "block that exists now")
        _apply_payload(copy.deepcopy(state), kind, payload, f"{kind} change")  # would it apply?
        body = {"format": PROPOSAL_FORMAT, "settings": state.settings_id, "kind": kind,
                "payload": payload, "reason": reason, "proposer": pub.to_dict(),
                "created": _iso(now), "expires": _iso(now + pending), "base": state.hash,
                "nonce": secrets.token_hex(8)}
        cid = sha256_hex(canonical(body))[:24]
        _write_new(self.path / "changes" / cid / "proposal.json",
                   _signed("proposal", body, proposer))
        self._audit(proposer, "change.propose", cid,
                    {"kind": kind, "summary": summary(kind, payload), "reason": reason,
                     "base": state.hash})
        return cid

    def propose_bundle(self, proposer: Identity, bundle_dir: str | Path, reason: str,
                       **kw: Any) -> str:
        """Propose a classifier bundle; it must load and verify now."""
        from asl3.classify.bundle import load_bundle
        from asl3.errors import BundleError

        try:
            b = load_bundle(bundle_dir)
        except BundleError as e:
            raise ChangeError(f"the bundle does not verify, so it cannot be proposed: {e}") from None
        return self.propose(proposer, "bundle", {
            "sha256": b.digest, "name": str(b.manifest.get("name", "bundle")),
            "path": str(Path(bundle_dir).resolve())}, reason, **kw)

    def propose_thresholds(self, proposer: Identity, overrides: Mapping[str, float], reason: str,
                           **kw: Any) -> str:
        return self.propose(proposer, "thresholds", {"set": dict(overrides)}, reason, **kw)

    def propose_exemption(self, proposer: Identity, principal: str, category: str,
                          until: datetime | str, reason: str, **kw: Any) -> str:
        t = parse_until(until) if isinstance(until, str) else until
        if t.tzinfo is None:
            raise ChangeError("until has no time zone")
        return self.propose(proposer, "exemption", {
            "action": "add", "principal": principal, "category": category, "until": _iso(t)},
            reason, **kw)

    def propose_unexemption(self, proposer: Identity, principal: str, category: str, reason: str,
                            **kw: Any) -> str:
        return self.propose(proposer, "exemption", {
            "action": "remove", "principal": principal, "category": category}, reason, **kw)

    def propose_allowlist(self, proposer: Identity, action: str,
                          entries: Sequence[tuple[str, str]], reason: str, **kw: Any) -> str:
        """One change that allows (action "add") or disallows ("remove") several executables,
        given as (sha256, path note): several files added together are approved and applied
        together, instead of each making the others stale."""
        return self.propose(proposer, "allowlist", {
            "action": action,
            "entries": [{"sha256": _sha(s, "allowlist"), "path": p} for s, p in entries]},
            reason, **kw)

    def propose_allow(self, proposer: Identity, sha256: str, path: str, reason: str,
                      **kw: Any) -> str:
        return self.propose_allowlist(proposer, "add", [(sha256, path)], reason, **kw)

    def propose_disallow(self, proposer: Identity, sha256: str, reason: str, **kw: Any) -> str:
        return self.propose_allowlist(proposer, "remove", [(sha256, "")], reason, **kw)

    def propose_unblock(self, proposer: Identity, client: str, reason: str, *,
                        until: datetime | str | None = None, **kw: Any) -> str:
        """Propose lifting the egress block of one client address. Once applied, `asl3 egress
        unblock CLIENT --change ID` may use it once, before `until` (default: 48 h from now, at
        most 7 days), for a block that began before this proposal."""
        if until is None:
            t = self._clock() + DEFAULT_UNBLOCK_VALID
        else:
            t = parse_until(until) if isinstance(until, str) else until
        if t.tzinfo is None:
            raise ChangeError("until has no time zone")
        return self.propose(proposer, "unblock", {
            "client": client_address(client), "until": _iso(t)}, reason, **kw)

    def propose_roster(self, proposer: Identity, members: Sequence[PublicIdentity],
                       approvals: int, reason: str, **kw: Any) -> str:
        return self.propose(proposer, "roster", {
            "members": [m.to_dict() for m in members], "approvals": approvals}, reason, **kw)

    # -- approve, apply, withdraw -----------------------------------------------------------
    def _usable(self, state: _State, p: Proposal, now: datetime, doing: str) -> None:
        """Refuse to approve or apply a change that is applied, withdrawn, expired or stale."""
        if p.body["settings"] != state.settings_id:
            raise ChangeError(f"change {p.id} belongs to other settings")
        if p.id in state.applied:
            raise ChangeError(f"change {p.id} is already applied")
        w = _withdrawal(self.path, p.id, state, p)
        if w is not None:
            raise ChangeError(f"change {p.id} was withdrawn by {w[0]}; it cannot be {doing}")
        if now < p.created:
            raise ChangeError(f"change {p.id} is dated in the future; refusing")
        if now >= p.expires:
            raise ChangeError(f"change {p.id} expired at {p.body['expires']} before it was "
                              f"{doing}; propose it again")
        if p.body["base"] != state.hash:
            raise ChangeError(f"change {p.id} is stale: it was proposed against state "
                              f"{p.body['base'][:16]}... and the settings are now at "
                              f"{state.hash[:16]}...; propose it again")

    def approve(self, change_id: str, approver: Identity) -> dict[str, Any]:
        """A member consents. The proposer's own approval is recorded but never counts."""
        p = self.proposal(change_id)
        state = self._state()
        me = self._member(state, approver, "approve changes")
        now = self._clock()
        self._usable(state, p, now, "approved")
        body = {"format": APPROVAL_FORMAT, "settings": state.settings_id, "change": p.id,
                "proposal_hash": p.hash, "approver": me.fingerprint, "approved_at": _iso(now)}
        try:
            _write_new(self._change_dir(p.id) / "approvals" / f"{me.fingerprint}.json",
                       _signed("approval", body, approver))
        except FileExistsError:
            raise ChangeError(f"{me.name} has already approved change {p.id}") from None
        own = me.fingerprint == p.proposer.fingerprint
        self._audit(approver, "change.approve", p.id, {"self_approval": own})
        return {"change": p.id, "approver": me.name, "fingerprint": me.fingerprint,
                "self_approval": own}

    def apply(self, change_id: str, applier: Identity) -> dict[str, Any]:
        """Put an approved change into safeguards.json; refuse anything else, in one line."""
        with self._lock():
            p = self.proposal(change_id)
            state, records = _replay(self.path, None)
            me = self._member(state, applier, "apply changes")
            now = self._clock()
            self._usable(state, p, now, "applied")
            if state.members.get(p.proposer.fingerprint) is None:
                raise ChangeError(f"change {p.id}: its proposer {p.proposer.name} is not a member "
                                  "of the roster")
            approvals = self._approvals(state, p)
            counted = [a for a in approvals if a.approver.fingerprint != p.proposer.fingerprint]
            if len(counted) < state.approvals:
                own = " (the proposer's own approval does not count)" \
                    if len(counted) < len(approvals) else ""
                names = ", ".join(a.approver.name for a in counted) or "none"
                raise ChangeError(f"change {p.id} has {len(counted)} of the {state.approvals} "
                                  f"approval(s) it needs from members other than the proposer "
                                  f"({names}){own}")
            new_hash = _next_hash(state.hash, p.id, p.hash, [a.hash for a in approvals])
            applied = {"format": APPLIED_FORMAT, "settings": state.settings_id, "change": p.id,
                       "proposal_hash": p.hash, "prev": state.hash, "state": new_hash,
                       "by": me.fingerprint, "applied_at": _iso(now)}
            rec = {"id": p.id,
                   "proposal": _read_json(self._change_dir(p.id) / "proposal.json", "proposal"),
                   "approvals": [a.doc for a in approvals],
                   "applied": _signed("applied", applied, applier)}
            _step(state, copy.deepcopy(rec), len(records) + 1, self.path)  # the reader's rules
            genesis = _genesis(self.path, None).hash
            _write_replace(self.path / "safeguards.json", {
                "format": STATE_FORMAT, "settings": state.settings_id, "genesis": genesis,
                "state": state.hash, "changes": [*records, rec]})
            _write_new(self._change_dir(p.id) / "applied.json", rec["applied"])
        self._audit(applier, "change.apply", p.id,
                    {"kind": p.kind, "summary": summary(p.kind, p.payload),
                     "approvers": [a.approver.fingerprint for a in counted],
                     "prev": applied["prev"], "state": state.hash})
        return {"change": p.id, "kind": p.kind, "summary": summary(p.kind, p.payload),
                "state": state.hash, "approvers": [a.approver.name for a in counted]}

    def withdraw(self, change_id: str, who: Identity) -> None:
        """The proposer or any member withdraws a change that is not applied yet."""
        p = self.proposal(change_id)
        state = self._state()
        pub = who.public()
        if pub.fingerprint != p.proposer.fingerprint and pub.fingerprint not in state.members:
            raise ChangeError(f"{pub.name} may not withdraw change {p.id}: only its proposer or "
                              "a member may")
        if p.id in state.applied:
            raise ChangeError(f"change {p.id} is already applied; propose a change that undoes it")
        body = {"format": WITHDRAWN_FORMAT, "settings": state.settings_id, "change": p.id,
                "by": pub.fingerprint, "name": pub.name, "at": _iso(self._clock())}
        try:
            _write_new(self._change_dir(p.id) / "withdrawn.json", _signed("withdrawal", body, who))
        except FileExistsError:
            raise ChangeError(f"change {p.id} is already withdrawn") from None
        self._audit(who, "change.withdraw", p.id, {})

    # -- status -----------------------------------------------------------------------------
    def changes(self) -> list[dict[str, Any]]:
        """Every filed change with its state: pending, approved, applied, stale, expired,
        withdrawn or invalid (oldest first)."""
        state, records = _replay(self.path, None)
        names = {fp: m.name for fp, m in state.members.items()}
        for r in records:  # members of earlier rosters
            for m in r["proposal"]["proposal"]["payload"].get("members", []):
                names.setdefault(m.get("fingerprint", ""), m.get("name"))
        now = self._clock()
        out = []
        cdir = self.path / "changes"
        for d in sorted(cdir.iterdir()) if cdir.is_dir() else []:
            if not (d / "proposal.json").is_file():
                continue
            try:
                p = self.proposal(d.name)
                if p.id in state.applied:  # approved under the roster of its time: names only
                    fprs = [d["approval"]["approver"] for r in records if r["id"] == p.id
                            for d in r["approvals"]]
                    approvals_names = [names.get(f, f[:12]) for f in fprs]
                    counted_n = sum(f != p.proposer.fingerprint for f in fprs)
                else:
                    approvals = self._approvals(state, p)
                    approvals_names = [a.approver.name for a in approvals]
                    counted_n = sum(a.approver.fingerprint != p.proposer.fingerprint
                                    for a in approvals)
                withdrawn = _withdrawal(self.path, p.id, state, p)
            except ChangeError as e:
                out.append({"id": d.name, "state": "invalid", "detail": str(e), "created": ""})
                continue
            if p.id in state.applied:
                st = "applied"
            elif withdrawn is not None:
                st = "withdrawn"
            elif now >= p.expires:
                st = "expired"
            elif p.body["base"] != state.hash:
                st = "stale"
            else:
                st = "approved" if counted_n >= state.approvals else "pending"
            out.append({"id": p.id, "kind": p.kind, "summary": summary(p.kind, p.payload),
                        "proposer": p.proposer.name, "reason": p.body["reason"],
                        "created": p.body["created"], "expires": p.body["expires"],
                        "approvals": approvals_names, "counted": counted_n,
                        "needed": state.approvals, "state": st})
        out.sort(key=lambda r: r.get("created", ""))
        return out
