"""Identities: who signs requests and approvals (Ed25519) and who shares are sealed to (X25519).

A person holds one private identity file; everyone else (the vault, other custodians) holds
only the public part. The private file is created with mode 0600 and refused when group or
others can read it, because a readable key file is a key handed to every local user.
Keys may be passphrase-protected (PKCS#8 with the best encryption `cryptography` offers).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from asl3.errors import IdentityError
from asl3.security.encoding import b64, read_json_object, unb64

FORMAT = "asl3-identity/1"
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


def fingerprint(ed25519: bytes, x25519: bytes) -> str:
    """Short hex name of a key pair: SHA-256 of both public keys, first 16 bytes."""
    return hashlib.sha256(b"asl3-identity" + ed25519 + x25519).hexdigest()[:32]


@dataclass(frozen=True)
class PublicIdentity:
    """What others need to verify a person's signatures and seal shares to them."""

    name: str
    ed25519: bytes
    x25519: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.ed25519, self.x25519)

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.ed25519).verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True

    def to_dict(self) -> dict[str, str]:
        return {"format": FORMAT, "kind": "public", "name": self.name,
                "ed25519": b64(self.ed25519), "x25519": b64(self.x25519),
                "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, d: Any, where: str = "identity") -> PublicIdentity:
        """Read a public identity, checking its fingerprint when it carries one."""
        try:
            pub = cls(str(d["name"]), unb64(d["ed25519"], "ed25519"), unb64(d["x25519"], "x25519"))
        except (KeyError, TypeError, ValueError) as e:
            raise IdentityError(f"{where}: not a public identity ({e})") from None
        if len(pub.ed25519) != 32 or len(pub.x25519) != 32:
            raise IdentityError(f"{where}: public keys must be 32 bytes each")
        if "fingerprint" in d and d["fingerprint"] != pub.fingerprint:
            raise IdentityError(f"{where}: fingerprint does not match its keys")
        return pub


@dataclass(frozen=True)
class Identity:
    """A person's private keys. Never written anywhere but their own 0600 file."""

    name: str
    signing: Ed25519PrivateKey
    exchange: X25519PrivateKey

    def public(self) -> PublicIdentity:
        return PublicIdentity(self.name, self.signing.public_key().public_bytes(*_RAW),
                              self.exchange.public_key().public_bytes(*_RAW))

    @property
    def fingerprint(self) -> str:
        return self.public().fingerprint

    def sign(self, data: bytes) -> bytes:
        return self.signing.sign(data)


def new(name: str) -> Identity:
    if not name.strip():
        raise IdentityError("an identity needs a non-empty name")
    return Identity(name, Ed25519PrivateKey.generate(), X25519PrivateKey.generate())


def _create_exclusive(path: Path, data: bytes, mode: int) -> None:
    """Write a new file with this mode from the start; refuse to replace an existing one."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise IdentityError(f"{path}: already exists; refusing to overwrite a key file") from None
    except OSError as e:
        raise IdentityError(f"{path}: cannot create ({e.strerror})") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def save(identity: Identity, path: str | Path, passphrase: bytes | None = None) -> None:
    """Write the private identity (mode 0600, new file only), optionally passphrase-encrypted."""
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase
        else serialization.NoEncryption())
    pem = {k: key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                enc).decode("ascii")
           for k, key in (("ed25519_private", identity.signing),
                          ("x25519_private", identity.exchange))}
    doc = {**identity.public().to_dict(), "kind": "private", "encrypted": bool(passphrase), **pem}
    _create_exclusive(Path(path), (json.dumps(doc, indent=2) + "\n").encode(), 0o600)


def save_public(pub: PublicIdentity, path: str | Path) -> None:
    _create_exclusive(Path(path), (json.dumps(pub.to_dict(), indent=2) + "\n").encode(), 0o644)


def _read_json(path: Path) -> dict[str, Any]:
    doc = read_json_object(path, IdentityError, f"{path}: no such identity file",
                           f"{path}: not an identity file")
    if doc.get("format") != FORMAT:
        raise IdentityError(f"{path}: not an identity file (format is not {FORMAT})")
    return doc


def load_public(path: str | Path) -> PublicIdentity:
    """The public part of a public or private identity file."""
    return PublicIdentity.from_dict(_read_json(Path(path)), str(path))


def load(path: str | Path, passphrase: bytes | None = None) -> Identity:
    """Load a private identity; refuse a file that group or others can read."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise IdentityError(f"{p}: no such identity file") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise IdentityError(f"{p}: private key file is accessible to group or others "
                            f"(mode {stat.S_IMODE(mode):o}); run 'chmod 600 {p}'")
    doc = _read_json(p)
    if doc.get("kind") != "private":
        raise IdentityError(f"{p}: a public identity; this needs the private key file")
    if doc.get("encrypted") and not passphrase:
        raise IdentityError(f"{p}: the key is passphrase-protected; give the passphrase "
                            "(--passphrase-env VAR)")
    keys = []
    for field in ("ed25519_private", "x25519_private"):
        try:
            keys.append(serialization.load_pem_private_key(
                str(doc[field]).encode("ascii"), passphrase if doc.get("encrypted") else None))
        except KeyError:
            raise IdentityError(f"{p}: missing {field}") from None
        except (ValueError, TypeError):
            raise IdentityError(f"{p}: cannot read {field} (wrong passphrase?)") from None
    sk, xk = keys
    if not isinstance(sk, Ed25519PrivateKey) or not isinstance(xk, X25519PrivateKey):
        raise IdentityError(f"{p}: keys are not Ed25519 and X25519")
    ident = Identity(str(doc.get("name", "")), sk, xk)
    if ident.fingerprint != doc.get("fingerprint"):
        raise IdentityError(f"{p}: private keys do not match the file's fingerprint")
    return ident

