"""Sealed boxes: encrypt bytes so that only the holder of one X25519 private key can read them.

Ephemeral X25519 + HKDF-SHA256 + AES-256-GCM (the ECIES shape of HPKE's base mode). The
`context` (what the box is for: vault, model, request id, recipient fingerprint) goes into both
the HKDF info and the AEAD associated data, so a box sealed for one request or recipient fails
to open under any other context instead of being silently reused.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from asl3.errors import SecurityError

_LABEL = b"asl3-seal/v1 "
_NONCE = bytes(12)  # every box has a fresh key (fresh ephemeral), so one fixed nonce is safe
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


class SealError(SecurityError):
    """A sealed box does not open: wrong recipient, wrong context, or altered bytes."""


def _key(shared: bytes, eph_pub: bytes, recipient: bytes, context: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=eph_pub + recipient,
                info=_LABEL + context).derive(shared)


def seal(recipient_x25519: bytes, plaintext: bytes, context: bytes) -> bytes:
    """Box = ephemeral public key (32 bytes) || AES-GCM ciphertext and tag."""
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(*_RAW)
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient_x25519))
    key = _key(shared, eph_pub, recipient_x25519, context)
    return eph_pub + AESGCM(key).encrypt(_NONCE, plaintext, _LABEL + context)


def open_sealed(recipient: X25519PrivateKey, box: bytes, context: bytes) -> bytes:
    if len(box) < 32 + 16:
        raise SealError("sealed box is too short")
    eph_pub, ct = box[:32], box[32:]
    mine = recipient.public_key().public_bytes(*_RAW)
    try:
        shared = recipient.exchange(X25519PublicKey.from_public_bytes(eph_pub))
        return AESGCM(_key(shared, eph_pub, mine, context)).decrypt(_NONCE, ct, _LABEL + context)
    except (InvalidTag, ValueError):
        raise SealError("sealed box does not open with this key and context (sealed for another "
                        "recipient or purpose, or altered)") from None
