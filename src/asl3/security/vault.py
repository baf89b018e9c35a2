"""The weight vault: encrypted model files that open only with K custodians' consent.

A vault is a self-contained directory:

    vault.json                          vault id, threshold K, the custodians' public identities
    models/MODEL/manifest.json          files, key check, one sealed Shamir share per custodian
    models/MODEL/NNNN.enc               the files, encrypted in chunks (chunks.py)
    requests/ID/request.json            a signed request: who, which model, why, how long
    requests/ID/approvals/FPR.json      a custodian's signed approval + its share resealed
    requests/ID/revoked.json            a revocation (the request can no longer be approved or opened)
    audit/log.jsonl                     the signed, hash-chained audit log (audit.py): one entry
                                        per action or refusal, signed by the person acting

Why no single person can decrypt: each model has a random 256-bit data key that is never
written anywhere; it is split K-of-N with Shamir and each share is sealed to one custodian's
X25519 key. The vault operator holds only ciphertext. A custodian who approves a request
unseals their own share and reseals it to the requester, bound to that request id, and signs
the approval. `open` recombines K resealed shares and checks the result against the key check
before decrypting anything.

The second party: `open` counts only approvals from custodians *other than the requester*
(their own approval is recorded but never counts) and needs K of them, all distinct, valid,
made while the request was pending and not revoked; the grant then lasts the request's TTL
from the moment the quorum was complete. Cryptographically, any K custodians together hold
the key: a requester who is also a custodian and holds K-1 resealed shares could recombine
outside this tool, which is still K distinct people consenting; the tool's rule is stricter.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from asl3.errors import AuditError, SecurityError, VaultError
from asl3.security import chunks, shamir
from asl3.security.audit import AuditLog, SignedTreeHead
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
from asl3.security.seal import open_sealed, seal

FORMAT = "asl3-vault/1"
DEFAULT_PENDING = timedelta(hours=24)
MAX_PENDING = timedelta(days=7)
MAX_TTL = timedelta(days=30)
_REQUEST_FIELDS = {"model": str, "key_id": str, "reason": str, "created": str, "expires": str,
                   "ttl_seconds": int}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_REQUEST_ID = re.compile(r"[0-9a-f]{24}")

Clock = Callable[[], datetime]
StageProgress = Callable[[str, int, int], None]


_utcnow, _iso = utcnow, iso


def _time(text: Any, what: str) -> datetime:
    return parse_time(text, what, VaultError)


def _new_data_key() -> bytes:
    """A model's data key (its own function so tests can see it and prove it is never stored)."""
    return secrets.token_bytes(32)


def key_check(key: bytes, vault_id: str, model: str, key_id: str) -> str:
    """A one-way commitment to a data key, stored beside its shares.

    Shamir returns wrong bytes, silently, from too few or mismatched shares. HKDF under its own
    label gives a value that reveals nothing about the key (or the file keys chunks.py derives
    under other labels) yet lets `open` tell a wrong quorum apart, loudly, before any file is
    touched, instead of failing on the first chunk as if it had been tampered with."""
    info = b"asl3-vault/v1 key check " + canonical(
        {"vault": vault_id, "model": model, "key_id": key_id})
    return HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(key).hex()


def _check_name(name: str, what: str) -> str:
    if not _NAME.fullmatch(name):
        raise VaultError(f"{what} {name!r} must be 1-128 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return name


def _read_json(path: Path, what: str) -> dict[str, Any]:
    return read_json_object(path, VaultError, f"{what}: not found ({path})",
                            f"{what}: unreadable ({path})")


_write_new = write_new_json


@dataclass(frozen=True)
class Approval:
    """A verified approval: who, when, and the share they resealed to the requester."""

    custodian: PublicIdentity
    approved_at: datetime
    resealed: bytes


@dataclass
class Grant:
    """Everything `open` and `status` need to judge one request (signatures already checked)."""

    request_id: str
    body: dict[str, Any]
    request_hash: str
    requester: PublicIdentity
    threshold: int
    approvals: list[Approval]
    revoked: dict[str, Any] | None
    counted: list[Approval] = field(default_factory=list)

    @property
    def expires(self) -> datetime:
        return _time(self.body["expires"], f"request {self.request_id}")

    @property
    def quorum_at(self) -> datetime | None:
        times = sorted(a.approved_at for a in self.counted)
        return times[self.threshold - 1] if len(times) >= self.threshold else None

    @property
    def grant_until(self) -> datetime | None:
        q = self.quorum_at
        return q + timedelta(seconds=int(self.body["ttl_seconds"])) if q else None

    def problem(self, now: datetime) -> str | None:
        """Why this request cannot be opened now, or None when it can."""
        rid = self.request_id
        if self.revoked:
            return f"request {rid} was revoked by {self.revoked.get('name')} at {self.revoked.get('at')}"
        until = self.grant_until
        if until is None:
            if now >= self.expires:
                return f"request {rid} expired at {_iso(self.expires)} without enough approvals"
            own = any(a.custodian.fingerprint == self.requester.fingerprint for a in self.approvals)
            note = " (the requester's own approval does not count)" if own else ""
            names = ", ".join(a.custodian.name for a in self.counted) or "none"
            return (f"request {rid} has {len(self.counted)} of the {self.threshold} approvals it "
                    f"needs from custodians other than the requester ({names}){note}")
        if now >= until:
            return f"the grant for request {rid} expired at {_iso(until)}"
        return None


class Vault:
    """One vault directory. Every state change goes through `_record`."""

    def __init__(self, path: str | Path, *, clock: Clock = _utcnow, _fresh: bool = False) -> None:
        self.path = Path(path)
        self._clock = clock
        doc = _read_json(self.path / "vault.json", f"vault {self.path}")
        if doc.get("format") != FORMAT:
            raise VaultError(f"{self.path}: not an asl3 vault (format is not {FORMAT})")
        try:
            self.vault_id = str(doc["vault_id"])
            self.threshold = int(doc["threshold"])
            self.custodians = {c.fingerprint: c for c in (
                PublicIdentity.from_dict(d, f"{self.path}/vault.json custodian")
                for d in doc["custodians"])}
        except (KeyError, TypeError, ValueError, SecurityError) as e:
            raise VaultError(f"{self.path}/vault.json is malformed ({e})") from None
        if not 2 <= self.threshold <= len(self.custodians):
            raise VaultError(f"{self.path}/vault.json: threshold {self.threshold} is not between 2 "
                             f"and the number of custodians ({len(self.custodians)})")
        if not _fresh:  # only `init`, before it writes the first entry
            self._check_roster()

    def _check_roster(self) -> None:
        """vault.json must say what the signed `vault.init` entry (the audit log's first) says.

        vault.json itself is unsigned: without this, whoever can write the directory could add
        themselves as a custodian, then put a model signed by themselves. The first entry is
        signed, and every later entry chains to it, so rewriting it means re-signing every
        entry after it with other people's keys (`asl3 audit verify` names such a rewrite)."""
        first = next(iter(self.audit.entries()), None)
        where = f"{self.path}/vault.json"
        if first is None or first.action != "vault.init" or first.seq != 0:
            raise VaultError(f"{where}: the audit log does not start with the vault's signed "
                             "vault.init entry; the custodians cannot be confirmed")
        if not first.verify_signature():
            raise VaultError(f"{where}: the audit log's vault.init entry does not verify")
        d = first.details
        signed = sorted(str(c.get("fingerprint")) for c in d.get("custodians", [])
                        if isinstance(c, dict))
        if (first.subject != self.vault_id or d.get("threshold") != self.threshold
                or signed != sorted(self.custodians)):
            raise VaultError(f"{where}: custodians, threshold or vault id differ from the signed "
                             "vault.init entry of the audit log: the roster was edited")

    # -- setup ------------------------------------------------------------------------------
    @classmethod
    def init(cls, path: str | Path, custodians: Sequence[PublicIdentity], threshold: int = 2,
             *, actor: Identity, clock: Clock = _utcnow) -> Vault:
        """Create an empty vault with these custodians, K of whom must approve every opening.

        `actor` (whoever sets the vault up; need not be a custodian) signs the first entry of
        the vault's audit log."""
        p = Path(path)
        fps = [c.fingerprint for c in custodians]
        if len(set(fps)) != len(fps):
            raise VaultError("the same custodian is listed twice")
        if not 2 <= threshold <= len(custodians):
            raise VaultError(f"threshold {threshold} must be at least 2 (two-party) and at most "
                             f"the number of custodians ({len(custodians)})")
        if p.exists() and any(p.iterdir()):
            raise VaultError(f"{p}: exists and is not empty; a vault needs a new directory")
        p.mkdir(parents=True, exist_ok=True)
        doc = {"format": FORMAT, "vault_id": secrets.token_hex(16), "threshold": threshold,
               "created": _iso(clock()), "custodians": [c.to_dict() for c in custodians]}
        _write_new(p / "vault.json", doc)
        v = cls(p, clock=clock, _fresh=True)
        v._record(actor, "init", v.vault_id, threshold=threshold,
                  custodians=[{"name": c.name, "fingerprint": c.fingerprint} for c in custodians])
        return v

    @property
    def audit(self) -> AuditLog:
        """The vault's audit log (DIR/audit/), on the vault's clock."""
        return AuditLog(self.path, clock=self._clock)

    def _record(self, actor: Identity, action: str, subject: str, **details: Any) -> None:
        """Append a `vault.ACTION` entry signed by the person acting. Done after the action
        succeeded; if the log cannot be written, the AuditError reaches the caller, so an
        unlogged action never passes silently."""
        self.audit.append(actor, f"vault.{action}", subject, details)

    def _refused(self, actor: Identity, action: str, subject: str, err: VaultError) -> VaultError:
        """Log a refusal (`vault.ACTION.refused` with the reason); returns the error to raise,
        which still carries the refusal's reason if the log itself failed."""
        try:
            self._record(actor, f"{action}.refused", subject[:128], reason=str(err))
        except AuditError as e:
            return VaultError(f"{err} (and the refusal could not be logged: {e})")
        return err

    def _custodian(self, ident: Identity, doing: str = "") -> PublicIdentity:
        pub = ident.public()
        known = self.custodians.get(pub.fingerprint)
        if known is None:
            raise VaultError(f"{pub.name} ({pub.fingerprint}) is not a custodian of this vault"
                             + (f"; only a custodian may {doing}" if doing else ""))
        return known

    # -- models -----------------------------------------------------------------------------
    def _model_dir(self, model: str) -> Path:
        return self.path / "models" / _check_name(model, "model name")

    def manifest(self, model: str) -> dict[str, Any]:
        """A model's manifest, its custodian's signature checked (see `put`)."""
        doc = _read_json(self._model_dir(model) / "manifest.json", f"model {model!r}")
        where = f"model {model!r}: manifest"
        body = {k: v for k, v in doc.items() if k != "signature"}
        try:
            signer = PublicIdentity.from_dict(doc.get("put_by"), f"{where} put_by")
            sig = unb64(str(doc.get("signature", "")), "signature")
        except (SecurityError, ValueError):
            raise VaultError(f"{where} is not signed by the custodian who put it") from None
        known = self.custodians.get(signer.fingerprint)
        if known is None or known.ed25519 != signer.ed25519:
            raise VaultError(f"{where} was signed by {signer.name}, who is not a custodian")
        if not signer.verify(sig, canonical(body)):
            raise VaultError(f"{where} does not match its custodian's signature (altered)")
        if body.get("model") != model or body.get("vault") != self.vault_id:
            raise VaultError(f"{where} belongs to another model or vault")
        return doc

    def put(self, model: str, files: Sequence[str | Path], *, actor: Identity,
            chunk_size: int = chunks.DEFAULT_CHUNK, progress: StageProgress | None = None,
            ) -> dict[str, Any]:
        """Encrypt files as a new model under a fresh data key; seal one share per custodian.

        Only a custodian may put: the manifest (vault, model, key id, key check, files,
        sealed shares) is signed by them, and `request` and `open` refuse a manifest that is
        not signed by a custodian, so whoever can write the directory cannot swap in weights
        of their own under a model's name."""
        signer = self._custodian(actor, "put a model (its manifest is signed by a custodian)")
        final = self._model_dir(model)
        if final.exists():
            raise VaultError(f"model {model!r} is already in the vault; models are immutable")
        if not 1 <= chunk_size <= chunks.MAX_CHUNK:
            raise VaultError(f"chunk size must be 1 to {chunks.MAX_CHUNK} bytes")
        srcs = [Path(f) for f in files]
        if not srcs:
            raise VaultError("put needs at least one file")
        names = [_check_name(s.name, "file name") for s in srcs]
        if len(set(names)) != len(names):
            raise VaultError("two files have the same name; the vault keeps files by name")
        for s in srcs:
            if not s.is_file():
                raise VaultError(f"{s}: no such file")
        key, key_id = _new_data_key(), secrets.token_hex(16)
        work = final.with_name(f".{model}.partial")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            entries = []
            for i, (src, name) in enumerate(zip(srcs, names, strict=True)):
                blob = f"{i:04d}.enc"
                cb = (lambda d, t, n=name: progress(f"encrypt {n}", d, t)) if progress else None
                size = chunks.encrypt_file(src, work / blob, key, model=model, name=name,
                                           chunk_size=chunk_size, progress=cb)
                entries.append({"name": name, "size": size, "blob": blob})
            shares = shamir.split(key, self.threshold, len(self.custodians))
            sealed = [{"custodian": fp, "name": c.name, "x": sh.x,
                       "sealed": b64(seal(c.x25519, sh.to_bytes(),
                                          self._share_context(model, key_id, fp)))}
                      for (fp, c), sh in zip(self.custodians.items(), shares, strict=True)]
            manifest = {"format": FORMAT, "model": model, "key_id": key_id,
                        "created": _iso(self._clock()), "threshold": self.threshold,
                        "chunk_size": chunk_size,
                        "key_check": key_check(key, self.vault_id, model, key_id),
                        "files": entries, "shares": sealed, "vault": self.vault_id,
                        "put_by": signer.to_dict()}
            manifest["signature"] = b64(actor.sign(canonical(manifest)))
            _write_new(work / "manifest.json", manifest)
            os.replace(work, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self._record(actor, "put", model, key_id=key_id,
                     files=[{"name": e["name"], "size": e["size"]} for e in entries])
        return {"model": model, "key_id": key_id, "files": entries}

    def _share_context(self, model: str, key_id: str, custodian_fp: str) -> bytes:
        return canonical({"purpose": "custodian-share", "vault": self.vault_id, "model": model,
                          "key_id": key_id, "recipient": custodian_fp})

    # -- requests ---------------------------------------------------------------------------
    def _request_dir(self, request_id: str) -> Path:
        if not _REQUEST_ID.fullmatch(request_id):
            raise VaultError(f"{request_id!r} is not a request id (24 hex characters)")
        d = self.path / "requests" / request_id
        if not (d / "request.json").is_file():
            raise VaultError(f"no request {request_id} in this vault")
        return d

    def request(self, model: str, requester: Identity, reason: str, ttl: timedelta, *,
                pending: timedelta = DEFAULT_PENDING) -> str:
        """Ask for access to a model; returns the request id. Pending requests expire."""
        if not reason.strip():
            raise VaultError("a request needs a reason")
        if not timedelta(0) < ttl <= MAX_TTL:
            raise VaultError(f"ttl must be more than 0 and at most {MAX_TTL.days} days")
        if not timedelta(0) < pending <= MAX_PENDING:
            raise VaultError(f"a request may stay pending at most {MAX_PENDING.days} days")
        manifest = self.manifest(model)
        pub = requester.public()
        now = self._clock()
        body = {"format": "asl3-request/1", "vault": self.vault_id, "model": model,
                "key_id": manifest["key_id"], "requester": pub.to_dict(), "reason": reason,
                "created": _iso(now), "expires": _iso(now + pending),
                "ttl_seconds": int(ttl.total_seconds()), "nonce": secrets.token_hex(8)}
        data = canonical(body)
        request_id = sha256_hex(data)[:24]
        _write_new(self.path / "requests" / request_id / "request.json",
                   {"request": body, "signature": b64(requester.sign(data))})
        self._record(requester, "request", request_id, model=model, key_id=body["key_id"],
                     reason=reason, ttl_seconds=body["ttl_seconds"], expires=body["expires"])
        return request_id

    def _load_request(self, request_id: str) -> tuple[dict[str, Any], str, PublicIdentity]:
        doc = _read_json(self._request_dir(request_id) / "request.json", f"request {request_id}")
        body = doc.get("request")
        if not isinstance(body, dict):
            raise VaultError(f"request {request_id}: malformed request file")
        data = canonical(body)
        digest = sha256_hex(data)
        if digest[:24] != request_id:
            raise VaultError(f"request {request_id}: the request file was altered (its hash no "
                             "longer matches its id)")
        try:
            requester = PublicIdentity.from_dict(body["requester"], f"request {request_id}")
            sig = unb64(doc["signature"], "signature")
        except (KeyError, ValueError, SecurityError) as e:
            raise VaultError(f"request {request_id}: malformed ({e})") from None
        if not requester.verify(sig, data):
            raise VaultError(f"request {request_id}: the requester's signature does not verify")
        if body.get("vault") != self.vault_id:
            raise VaultError(f"request {request_id} belongs to another vault")
        # the requester signs their own request, so its limits are checked here, not trusted
        bad = [k for k, t in _REQUEST_FIELDS.items() if not isinstance(body.get(k), t)]
        if bad:
            raise VaultError(f"request {request_id}: malformed ({', '.join(bad)})")
        where = f"request {request_id}"
        pending = _time(body["expires"], where) - _time(body["created"], where)
        if not timedelta(0) < pending <= MAX_PENDING or not (
                0 < body["ttl_seconds"] <= MAX_TTL.total_seconds()):
            raise VaultError(f"request {request_id}: pending time or ttl outside the vault's "
                             f"limits ({MAX_PENDING.days} days pending, {MAX_TTL.days} days ttl)")
        return body, digest, requester

    def _grant_context(self, body: dict[str, Any], request_id: str, request_hash: str,
                       requester_fp: str, custodian_fp: str) -> bytes:
        return canonical({"purpose": "grant-share", "vault": self.vault_id,
                          "model": body["model"], "key_id": body["key_id"],
                          "request_id": request_id, "request_hash": request_hash,
                          "recipient": requester_fp, "custodian": custodian_fp})

    def _revocation(self, request_id: str) -> dict[str, Any] | None:
        p = self._request_dir(request_id) / "revoked.json"
        # any revocation file stops a request: refusing is the safe side of a doubt
        return _read_json(p, f"revocation of {request_id}").get("revocation", {}) if p.exists() else None

    def _current_key_id(self, body: dict[str, Any], request_id: str) -> dict[str, Any]:
        manifest = self.manifest(str(body["model"]))
        if manifest.get("key_id") != body.get("key_id"):
            raise VaultError(f"request {request_id}: model {body['model']!r} has been replaced "
                             "since the request was made")
        return manifest

    def approve(self, request_id: str, custodian: Identity) -> dict[str, Any]:
        """A custodian consents: their share is resealed to the requester for this request."""
        try:
            return self._approve(request_id, custodian)
        except VaultError as e:
            raise self._refused(custodian, "approve", request_id, e) from None

    def _approve(self, request_id: str, custodian: Identity) -> dict[str, Any]:
        body, digest, requester = self._load_request(request_id)
        me = self._custodian(custodian)
        revoked = self._revocation(request_id)
        if revoked:
            raise VaultError(f"request {request_id} was revoked by {revoked.get('name')}")
        now = self._clock()
        expires = _time(body["expires"], f"request {request_id}")
        if now < _time(body["created"], f"request {request_id}"):
            raise VaultError(f"request {request_id} is dated in the future; refusing to approve")
        if now >= expires:
            raise VaultError(f"request {request_id} expired at {_iso(expires)}; ask for a new one")
        manifest = self._current_key_id(body, request_id)
        path = self._request_dir(request_id) / "approvals" / f"{me.fingerprint}.json"
        if path.exists():
            raise VaultError(f"{me.name} has already approved request {request_id}")
        entry = next((s for s in manifest.get("shares", []) if s.get("custodian") == me.fingerprint),
                     None)
        if entry is None:
            raise VaultError(f"model {body['model']!r} holds no share for {me.name}")
        try:
            share = open_sealed(custodian.exchange, unb64(entry["sealed"], "share"),
                                self._share_context(body["model"], body["key_id"], me.fingerprint))
        except (SecurityError, ValueError) as e:
            raise VaultError(f"{me.name}'s share of {body['model']!r} does not open ({e})") from None
        resealed = seal(requester.x25519, share, self._grant_context(
            body, request_id, digest, requester.fingerprint, me.fingerprint))
        payload = {"format": "asl3-approval/1", "vault": self.vault_id, "model": body["model"],
                   "key_id": body["key_id"], "request_id": request_id, "request_hash": digest,
                   "custodian": me.fingerprint, "resealed_sha256": sha256_hex(resealed),
                   "approved_at": _iso(now)}
        try:
            _write_new(path, {"approval": payload, "resealed": b64(resealed),
                              "signature": b64(custodian.sign(canonical(payload)))})
        except FileExistsError:
            raise VaultError(f"{me.name} has already approved request {request_id}") from None
        own = me.fingerprint == requester.fingerprint
        self._record(custodian, "approve", request_id, model=body["model"], self_approval=own)
        return {"request": request_id, "custodian": me.name, "fingerprint": me.fingerprint,
                "self_approval": own}

    def _verified_approval(self, path: Path, request_id: str, digest: str,
                           body: dict[str, Any]) -> Approval:
        where = f"approval {path.name} of request {request_id}"
        doc = _read_json(path, where)
        payload = doc.get("approval")
        try:
            if not isinstance(payload, dict):
                raise ValueError("no approval object")
            fp = str(payload["custodian"])
            sig, resealed = unb64(doc["signature"], "signature"), unb64(doc["resealed"], "resealed")
        except (KeyError, ValueError) as e:
            raise VaultError(f"{where}: malformed ({e})") from None
        custodian = self.custodians.get(fp)
        if custodian is None or path.stem != fp:
            raise VaultError(f"{where}: not from a custodian of this vault (forged)")
        if not custodian.verify(sig, canonical(payload)):
            raise VaultError(f"{where}: {custodian.name}'s signature does not verify (forged or "
                             "altered)")
        expected = {"vault": self.vault_id, "model": body["model"], "key_id": body["key_id"],
                    "request_id": request_id, "request_hash": digest}
        wrong = [k for k, v in expected.items() if payload.get(k) != v]
        if wrong:
            raise VaultError(f"{where}: signed by {custodian.name} for another request "
                             f"({', '.join(wrong)} differ); approvals cannot be reused")
        if payload.get("resealed_sha256") != sha256_hex(resealed):
            raise VaultError(f"{where}: the resealed share is not the one {custodian.name} signed")
        at = _time(payload.get("approved_at"), where)
        if not _time(body["created"], where) <= at < _time(body["expires"], where):
            raise VaultError(f"{where}: approved outside the request's pending window")
        return Approval(custodian, at, resealed)

    def grant(self, request_id: str) -> Grant:
        """The request with its verified approvals; any forged or misplaced approval refuses."""
        body, digest, requester = self._load_request(request_id)
        self._current_key_id(body, request_id)
        d = self._request_dir(request_id) / "approvals"
        approvals = [self._verified_approval(p, request_id, digest, body)
                     for p in sorted(d.glob("*.json"))] if d.is_dir() else []
        manifest = self.manifest(str(body["model"]))
        g = Grant(request_id, body, digest, requester, int(manifest["threshold"]), approvals,
                  self._revocation(request_id))
        g.counted = [a for a in approvals if a.custodian.fingerprint != requester.fingerprint]
        return g

    def open(self, request_id: str, requester: Identity, out_dir: str | Path, *,
             progress: StageProgress | None = None) -> list[Path]:
        """Decrypt a granted request's model files into `out_dir` (the requester only)."""
        try:
            written = self._open(request_id, requester, Path(out_dir), progress)
        except VaultError as e:
            raise self._refused(requester, "open", request_id, e) from None
        self._record(requester, "open", request_id, files=[p.name for p in written])
        return written

    def unlock_key(self, request_id: str, requester: Identity,
                   verb: str = "open") -> tuple[str, str, bytes, dict[str, Any]]:
        """The granted request's (model, key id, data key, manifest), recombined in memory.

        Every check of a grant lives here, for `open` and for `vault serve` alike: the
        requester only, a live grant (quorum of other custodians, not revoked or expired),
        shares that open for this request and recipient, and a key that passes the key check.
        Nothing is logged or written: the callers do that."""
        g = self.grant(request_id)
        if requester.fingerprint != g.requester.fingerprint:
            raise VaultError(f"request {request_id} was made by {g.requester.name}; only they can "
                             f"{verb} it")
        problem = g.problem(self._clock())
        if problem:
            raise VaultError(problem)
        model, key_id = str(g.body["model"]), str(g.body["key_id"])
        quorum = sorted(g.counted, key=lambda a: a.approved_at)[: g.threshold]
        shares = []
        for a in quorum:
            ctx = self._grant_context(g.body, request_id, g.request_hash,
                                      g.requester.fingerprint, a.custodian.fingerprint)
            try:
                shares.append(shamir.Share.from_bytes(
                    open_sealed(requester.exchange, a.resealed, ctx)))
            except (SecurityError, ValueError):
                raise VaultError(f"request {request_id}: {a.custodian.name}'s share does not open "
                                 "for this request and requester (sealed for another request or "
                                 "recipient, or altered)") from None
        try:
            key = shamir.combine(shares)
        except ValueError as e:
            raise VaultError(f"request {request_id}: shares do not combine ({e})") from None
        manifest = self.manifest(model)
        if not hmac.compare_digest(key_check(key, self.vault_id, model, key_id),
                                   str(manifest.get("key_check", ""))):
            raise VaultError(f"request {request_id}: the recombined key fails the key check: the "
                             "shares are not a valid quorum for this model's key")
        return model, key_id, key, manifest

    def _open(self, request_id: str, requester: Identity, out: Path,
              progress: StageProgress | None) -> list[Path]:
        model, _, key, manifest = self.unlock_key(request_id, requester)
        files = manifest["files"]
        out.mkdir(parents=True, exist_ok=True)
        targets = [out / _check_name(str(f["name"]), "file name") for f in files]
        for t in targets:
            if t.exists():
                raise VaultError(f"{t}: already exists; refusing to overwrite")
        written: list[Path] = []
        try:
            for f, t in zip(files, targets, strict=True):
                cb = (lambda d, n, name=t.name: progress(f"decrypt {name}", d, n)) if progress else None
                chunks.decrypt_file(self._model_dir(model) / _check_name(str(f["blob"]), "blob"),
                                    t, key, model=model, name=t.name, progress=cb)
                written.append(t)
        except (SecurityError, OSError) as e:
            for w in written:
                w.unlink(missing_ok=True)
            raise VaultError(f"model {model!r}: {e}; no files were written") from None
        return written

    def revoke(self, request_id: str, identity: Identity) -> None:
        """The requester or any custodian withdraws a request; it can no longer be used."""
        try:
            self._revoke(request_id, identity)
        except VaultError as e:
            raise self._refused(identity, "revoke", request_id, e) from None
        self._record(identity, "revoke", request_id)

    def _revoke(self, request_id: str, identity: Identity) -> None:
        body, _, requester = self._load_request(request_id)
        pub = identity.public()
        if pub.fingerprint != requester.fingerprint and pub.fingerprint not in self.custodians:
            raise VaultError(f"{pub.name} may not revoke request {request_id}: only its requester "
                             "or a custodian may")
        payload = {"request_id": request_id, "by": pub.fingerprint, "name": pub.name,
                   "at": _iso(self._clock())}
        try:
            _write_new(self._request_dir(request_id) / "revoked.json",
                       {"revocation": payload, "signature": b64(identity.sign(canonical(payload)))})
        except FileExistsError:
            raise VaultError(f"request {request_id} is already revoked") from None

    # -- status -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Custodians, models and every request with its state, as plain JSON-able data."""
        now = self._clock()
        models = []
        mdir = self.path / "models"
        for d in sorted(mdir.iterdir()) if mdir.is_dir() else []:
            if d.name.startswith(".") or not (d / "manifest.json").is_file():
                continue
            m = self.manifest(d.name)
            models.append({"model": m["model"], "key_id": m["key_id"], "created": m["created"],
                           "files": [{"name": f["name"], "size": f["size"]} for f in m["files"]]})
        requests = []
        rdir = self.path / "requests"
        for d in sorted(rdir.iterdir()) if rdir.is_dir() else []:
            requests.append(self._request_status(d.name, now))
        requests.sort(key=lambda r: r.get("created", ""))
        head: SignedTreeHead = self.audit.head()
        return {"vault": str(self.path), "vault_id": self.vault_id, "threshold": self.threshold,
                "custodians": [{"name": c.name, "fingerprint": fp}
                               for fp, c in self.custodians.items()],
                "models": models, "requests": requests,
                "audit": {"entries": head.size, "root": head.root}}

    def _request_status(self, request_id: str, now: datetime) -> dict[str, Any]:
        try:
            g = self.grant(request_id)
        except VaultError as e:
            return {"id": request_id, "state": "invalid", "detail": str(e)}
        problem = g.problem(now)
        if g.revoked:
            state = "revoked"
        elif problem is None:
            state = "granted"
        elif g.grant_until is not None:
            state = "grant expired"
        else:
            state = "expired" if now >= g.expires else "pending"
        until = g.grant_until
        return {"id": request_id, "model": g.body["model"], "requester": g.requester.name,
                "reason": g.body["reason"], "created": g.body["created"],
                "expires": g.body["expires"], "ttl_seconds": g.body["ttl_seconds"],
                "approvals": [a.custodian.name for a in g.approvals],
                "counted": len(g.counted), "threshold": g.threshold, "state": state,
                "grant_until": _iso(until) if until else None, "detail": problem}
