"""Shamir secret sharing over GF(256): any K of N shares give the secret back; fewer do not.

Recombining too few shares raises no error and returns wrong bytes: that is why the vault
authenticates the recombined key (tests/test_vault.py, the key check).
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asl3.security import shamir
from asl3.security.shamir import Share, combine, split

secrets_ = st.binary(min_size=1, max_size=48)


@st.composite
def scheme(draw: st.DrawFn) -> tuple[bytes, int, int, list[int]]:
    n = draw(st.integers(2, 12))
    k = draw(st.integers(2, n))
    order = draw(st.permutations(range(n)))
    return draw(secrets_), k, n, list(order)


@settings(max_examples=150, deadline=None)
@given(scheme())
def test_any_k_shares_in_any_order_recombine(case) -> None:
    secret, k, n, order = case
    shares = split(secret, k, n)
    assert len(shares) == n and sorted(s.x for s in shares) == list(range(1, n + 1))
    assert combine([shares[i] for i in order[:k]]) == secret
    assert combine([shares[i] for i in order]) == secret  # more than K is fine too


@settings(max_examples=150, deadline=None)
@given(scheme())
def test_k_minus_one_shares_give_no_error_but_not_the_secret(case) -> None:
    secret, k, n, order = case
    if len(secret) < 8:  # a short secret can collide by chance; 8+ random-looking bytes cannot
        secret = secret * 8
    shares = split(secret, k, n)
    assert combine([shares[i] for i in order[: k - 1]]) != secret


def test_every_k_subset_of_a_3_of_5_split_recombines() -> None:
    secret = bytes(range(32))
    shares = split(secret, 3, 5)
    for subset in itertools.combinations(shares, 3):
        assert combine(list(subset)) == secret


def test_fewer_than_k_shares_say_nothing_about_the_secret() -> None:
    """For K=2 a single share byte is uniform whatever the secret: count over many splits."""
    ones = [split(b"\x00", 2, 2)[0].y[0] for _ in range(4000)]
    sevens = [split(b"\xff", 2, 2)[0].y[0] for _ in range(4000)]
    assert len(set(ones)) > 200 and len(set(sevens)) > 200


@given(st.binary(min_size=2, max_size=40).filter(lambda b: b[0] != 0))
def test_shares_round_trip_through_bytes(data: bytes) -> None:
    assert Share.from_bytes(data).to_bytes() == data


@pytest.mark.parametrize(("k", "n"), [(1, 3), (4, 3), (2, 256), (0, 0)])
def test_split_refuses_impossible_thresholds(k: int, n: int) -> None:
    with pytest.raises(ValueError, match="K <= N"):
        split(b"secret", k, n)


def test_combine_refuses_duplicate_or_mismatched_shares() -> None:
    a, b, _ = split(b"0123456789", 2, 3)
    with pytest.raises(ValueError, match="distinct"):
        combine([a, a])
    with pytest.raises(ValueError, match="lengths"):
        combine([a, Share(b.x, b.y[:-1])])
    with pytest.raises(ValueError, match="no shares"):
        combine([])
    with pytest.raises(ValueError, match="x = 0"):
        Share.from_bytes(b"\x00abc")


def test_field_arithmetic_has_inverses() -> None:
    for a in range(1, 256):
        assert shamir._mul(a, shamir._div(1, a)) == 1
