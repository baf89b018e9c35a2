"""API keys -> principals, with a short-lived cache so a request never waits on the database.

Keys are looked up by their SHA-256 in the store (never kept in clear). A lookup is reused for
``ttl`` seconds, so a revocation or a new exemption takes effect within that delay; unknown
keys are cached too (briefly), so a client hammering with a bad key costs no queries.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from asl3.guard import Exemption, Principal

MISS = object()


class KeyCache:
    def __init__(self, lookup: Callable[[str], Any], ttl: float = 5.0, max_entries: int = 10_000,
                 approve: Callable[[str, Exemption], Exemption | None] | None = None) -> None:
        """``lookup(key)`` returns the store's KeyInfo or None (unknown or revoked).

        ``approve(principal, exemption)``, when given, decides each exemption a key carries:
        the exemption to honour (possibly ending sooner) or None, in which case it is simply
        not there and the key works as an ordinary key (``asl3 serve --safeguards``)."""
        self._approve = approve
        self._lookup = lookup
        self._ttl = ttl
        self._max = max_entries
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    @staticmethod
    def _id(key: str) -> str:
        return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    def cached(self, key: str) -> Principal | None | object:
        """The cached principal (or None for a known-bad key), or MISS."""
        hit = self._cache.get(self._id(key))
        if hit is None or hit[0] < time.monotonic():
            return MISS
        return hit[1]

    def resolve(self, key: str) -> Principal | None:
        """Look the key up in the store (blocking: call from a worker thread)."""
        info = self._lookup(key)
        principal = None
        if info is not None:
            exemptions = tuple(Exemption(e.category, e.until) for e in info.exemptions)
            if self._approve is not None:
                exemptions = tuple(x for x in (self._approve(info.name, e) for e in exemptions)
                                   if x is not None)
            principal = Principal(info.name, exemptions)
        if len(self._cache) >= self._max:
            self._cache.clear()
        self._cache[self._id(key)] = (time.monotonic() + self._ttl, principal)
        return principal


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
