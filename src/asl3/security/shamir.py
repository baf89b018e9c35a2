"""Shamir secret sharing over GF(256), K of N, byte by byte.

Small enough to read in one sitting: each byte of the secret is the constant term of its own
random polynomial of degree K-1; share x holds the polynomial values at x (1..255). Any K shares
give back the secret by Lagrange interpolation at 0. Fewer than K shares reveal nothing, and
recombining them returns *some* bytes without any error: the result must be authenticated
by the caller (the vault keeps a key check for this), never trusted as is.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

# log/exp tables for GF(2^8) with the AES polynomial x^8+x^4+x^3+x+1, generator 3.
_EXP = [0] * 510
_LOG = [0] * 256
_v = 1
for _i in range(255):
    _EXP[_i] = _EXP[_i + 255] = _v
    _LOG[_v] = _i
    _v ^= (_v << 1) ^ (0x11B if _v & 0x80 else 0)  # multiply by 3
del _v, _i


def _mul(a: int, b: int) -> int:
    return 0 if a == 0 or b == 0 else _EXP[_LOG[a] + _LOG[b]]


def _div(a: int, b: int) -> int:
    return 0 if a == 0 else _EXP[_LOG[a] + 255 - _LOG[b]]


@dataclass(frozen=True)
class Share:
    """One share: its x coordinate (1..255) and one y byte per secret byte."""

    x: int
    y: bytes

    def to_bytes(self) -> bytes:
        return bytes([self.x]) + self.y

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        if len(data) < 2 or data[0] == 0:
            raise ValueError("not a share (empty, or x = 0)")
        return cls(data[0], data[1:])


def split(secret: bytes, k: int, n: int) -> list[Share]:
    """N shares of which any K recombine to `secret` (2 <= K <= N <= 255)."""
    if not 2 <= k <= n <= 255:
        raise ValueError(f"need 2 <= K <= N <= 255 (got K={k}, N={n})")
    if not secret:
        raise ValueError("the secret is empty")
    coeffs = [[b, *(secrets.randbelow(256) for _ in range(k - 1))] for b in secret]
    shares = []
    for x in range(1, n + 1):
        ys = bytearray()
        for poly in coeffs:
            acc = 0
            for c in reversed(poly):  # Horner
                acc = _mul(acc, x) ^ c
            ys.append(acc)
        shares.append(Share(x, bytes(ys)))
    return shares


def combine(shares: Sequence[Share]) -> bytes:
    """Interpolate at 0. Any K valid shares give the secret; fewer give unrelated bytes."""
    if not shares:
        raise ValueError("no shares")
    xs = [s.x for s in shares]
    if len(set(xs)) != len(xs) or not all(1 <= x <= 255 for x in xs):
        raise ValueError("shares must have distinct x in 1..255")
    size = len(shares[0].y)
    if any(len(s.y) != size for s in shares):
        raise ValueError("shares have different lengths")
    out = bytearray(size)
    for i, si in enumerate(shares):
        basis = 1  # Lagrange basis at 0: prod x_j / (x_j - x_i); minus is xor in GF(2^8)
        for j, sj in enumerate(shares):
            if j != i:
                basis = _mul(basis, _div(sj.x, sj.x ^ si.x))
        for b in range(size):
            out[b] ^= _mul(basis, si.y[b])
    return bytes(out)
