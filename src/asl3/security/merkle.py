"""Merkle tree heads and proofs exactly as RFC 6962 section 2.1 (and RFC 9162 section 2.1).

    leaf_hash(d)      = SHA-256(0x00 || d)
    node_hash(l, r)   = SHA-256(0x01 || l || r)
    MTH({})           = SHA-256()                       (the empty tree)
    MTH(D[n])         = node_hash(MTH(D[0:k]), MTH(D[k:n]))   k = largest power of 2 < n

The split at the largest power of two means an odd node is *promoted* to the level above,
never paired with a copy of itself (duplicating it, as some Merkle trees do, lets two different
lists share a root). The 0x00/0x01 prefixes keep a leaf from passing for an inner node.

Leaves are the entries' bytes unless `hashed=True`, in which case the sequence already holds
their leaf hashes (the audit log keeps 32 bytes per entry rather than the entries). Proof
generation and root computation are O(n) hash calls; verification is O(log n) and needs no
leaves: `verify_inclusion` and `verify_consistency` follow RFC 9162 2.1.3.2 and 2.1.4.2 step by
step and return False (never raise) for any proof that is wrong, short, long or misplaced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """k with k < n <= 2k (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class Frontier:
    """The compact range of a growing tree: the roots of its perfect subtrees, largest first.

    n leaves decompose into perfect subtrees of the sizes of n's binary digits; RFC 6962's tree
    is those subtrees joined right to left, so `root()` needs only them: O(log n) memory and
    amortized O(1) hashes per `append` (a binary counter's carries)."""

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != bin(size).count("1"):
            raise ValueError(f"a frontier of {size} leaves has {bin(size).count('1')} hashes, "
                             f"not {len(hashes)}")
        self.size = size
        self.hashes = list(hashes)

    def append(self, hashed_leaf: bytes) -> None:
        h, n = hashed_leaf, self.size
        while n & 1:  # merge equal-sized subtrees, like carrying in binary addition
            h = node_hash(self.hashes.pop(), h)
            n >>= 1
        self.hashes.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        r = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            r = node_hash(h, r)
        return r


def _hashes(leaves: Sequence[bytes], hashed: bool) -> Sequence[bytes]:
    return leaves if hashed else [leaf_hash(d) for d in leaves]


def _mth(h: Sequence[bytes], lo: int, hi: int) -> bytes:
    f = Frontier()
    for i in range(lo, hi):
        f.append(h[i])
    return f.root()


def root(leaves: Sequence[bytes], *, hashed: bool = False) -> bytes:
    """MTH(D[n]): the tree head of these leaves (SHA-256 of nothing for none)."""
    return _mth(_hashes(leaves, hashed), 0, len(leaves))


def _path(h: Sequence[bytes], m: int, lo: int, hi: int) -> list[bytes]:
    """PATH(m, D[lo:hi]) of RFC 6962 2.1.1, leaf m counted from lo."""
    n = hi - lo
    if n <= 1:
        return []
    k = _largest_power_of_two_below(n)
    if m < k:
        return _path(h, m, lo, lo + k) + [_mth(h, lo + k, hi)]
    return _path(h, m - k, lo + k, hi) + [_mth(h, lo, lo + k)]


def inclusion_proof(leaves: Sequence[bytes], index: int, *, hashed: bool = False) -> list[bytes]:
    """The audit path of leaf `index` in the tree of all `leaves` (RFC 6962 2.1.1)."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf index {index} is not in a tree of {len(leaves)} leaves")
    return _path(_hashes(leaves, hashed), index, 0, len(leaves))


def _subproof(h: Sequence[bytes], m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
    """SUBPROOF(m, D[lo:hi], b) of RFC 6962 2.1.2."""
    n = hi - lo
    if m == n:
        return [] if complete else [_mth(h, lo, hi)]
    k = _largest_power_of_two_below(n)
    if m <= k:
        return _subproof(h, m, lo, lo + k, complete) + [_mth(h, lo + k, hi)]
    return _subproof(h, m - k, lo + k, hi, False) + [_mth(h, lo, lo + k)]


def consistency_proof(leaves: Sequence[bytes], old_size: int, *,
                      hashed: bool = False) -> list[bytes]:
    """PROOF(m, D[n]): the tree of the first `old_size` leaves is a prefix of this one.

    Empty for old_size 0 (every tree extends the empty one) and for old_size == n."""
    n = len(leaves)
    if not 0 <= old_size <= n:
        raise ValueError(f"old size {old_size} is not between 0 and the tree's size {n}")
    if old_size == 0:
        return []
    return _subproof(_hashes(leaves, hashed), old_size, 0, n, True)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes,
                     *, hashed: bool = False) -> bool:
    """Does `proof` show `leaf` (its bytes, or its leaf hash with hashed=True) at `index` of
    the tree of `size` leaves whose head is `root`? RFC 9162 2.1.3.2."""
    if not 0 <= index < size or any(len(p) != 32 for p in proof):
        return False
    fn, sn = index, size - 1
    r = leaf if hashed else leaf_hash(leaf)
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """Does `proof` show the tree of `old_size` leaves (head `old_root`) to be a prefix of the
    tree of `new_size` leaves (head `new_root`)? RFC 9162 2.1.4.2, plus the two edge cases it
    leaves out: equal sizes need an empty proof and equal roots; the empty tree is a prefix of
    every tree (empty proof)."""
    if not 0 <= old_size <= new_size or any(len(p) != 32 for p in proof):
        return False
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of 2: the old root is a node itself
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
