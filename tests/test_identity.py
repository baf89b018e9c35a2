"""Identities: an Ed25519 signing key and an X25519 key per person, kept in a 0600 file.

Private files are created with mode 0600 and never overwritten; a file that group or others
can read is refused; a passphrase-protected file needs its passphrase; the public part carries
a fingerprint that names both keys. Sealed boxes open only for their recipient and context.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

from asl3.errors import IdentityError
from asl3.security import identity
from asl3.security.seal import SealError, open_sealed, seal


def test_a_new_identity_round_trips_through_a_0600_file(tmp_path) -> None:
    alice = identity.new("alice")
    path = tmp_path / "alice.key"
    identity.save(alice, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = identity.load(path)
    assert loaded.name == "alice" and loaded.fingerprint == alice.fingerprint
    assert loaded.public().verify(alice.sign(b"msg"), b"msg")


def test_the_public_part_names_both_keys_and_verifies_signatures(tmp_path) -> None:
    alice = identity.new("alice")
    pub = alice.public()
    assert len(pub.fingerprint) == 32
    identity.save_public(pub, tmp_path / "alice.pub")
    again = identity.load_public(tmp_path / "alice.pub")
    assert again == pub
    assert again.verify(alice.sign(b"hello"), b"hello")
    assert not again.verify(alice.sign(b"hello"), b"hellO")
    assert not again.verify(identity.new("mallory").sign(b"hello"), b"hello")
    doc = json.loads((tmp_path / "alice.pub").read_text())
    assert "ed25519_private" not in doc and doc["kind"] == "public"


def test_public_part_can_be_read_from_the_private_file(tmp_path) -> None:
    alice = identity.new("alice")
    identity.save(alice, tmp_path / "alice.key")
    assert identity.load_public(tmp_path / "alice.key") == alice.public()


def test_a_key_file_is_never_overwritten(tmp_path) -> None:
    path = tmp_path / "k"
    identity.save(identity.new("a"), path)
    with pytest.raises(IdentityError, match="refusing to overwrite"):
        identity.save(identity.new("b"), path)
    assert identity.load(path).name == "a"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_a_key_file_readable_by_others_is_refused(tmp_path, mode: int) -> None:
    path = tmp_path / "k"
    identity.save(identity.new("a"), path)
    os.chmod(path, mode)
    with pytest.raises(IdentityError, match="chmod 600"):
        identity.load(path)


def test_passphrase_protected_keys_need_the_right_passphrase(tmp_path) -> None:
    path = tmp_path / "k"
    alice = identity.new("alice")
    identity.save(alice, path, passphrase=b"correct horse")
    assert b"BEGIN ENCRYPTED PRIVATE KEY" in path.read_bytes()
    with pytest.raises(IdentityError, match="passphrase-protected"):
        identity.load(path)
    with pytest.raises(IdentityError, match="wrong passphrase"):
        identity.load(path, passphrase=b"battery staple")
    assert identity.load(path, passphrase=b"correct horse").fingerprint == alice.fingerprint


def test_a_public_file_cannot_be_loaded_as_a_private_key(tmp_path) -> None:
    identity.save_public(identity.new("a").public(), tmp_path / "a.pub")
    os.chmod(tmp_path / "a.pub", 0o600)
    with pytest.raises(IdentityError, match="needs the private key"):
        identity.load(tmp_path / "a.pub")


def test_a_tampered_fingerprint_or_garbage_is_refused(tmp_path) -> None:
    pub = identity.new("a").public().to_dict()
    pub["x25519"] = identity.new("b").public().to_dict()["x25519"]
    (tmp_path / "bad.pub").write_text(json.dumps(pub))
    with pytest.raises(IdentityError, match="fingerprint does not match"):
        identity.load_public(tmp_path / "bad.pub")
    (tmp_path / "junk").write_text("not json")
    with pytest.raises(IdentityError, match="not an identity file"):
        identity.load_public(tmp_path / "junk")
    with pytest.raises(IdentityError, match="no such identity file"):
        identity.load(tmp_path / "missing")


def test_a_sealed_box_opens_only_for_its_recipient_and_context() -> None:
    alice, bob = identity.new("alice"), identity.new("bob")
    box = seal(alice.public().x25519, b"share bytes", b"request 1")
    assert open_sealed(alice.exchange, box, b"request 1") == b"share bytes"
    with pytest.raises(SealError, match="another recipient or purpose"):
        open_sealed(alice.exchange, box, b"request 2")
    with pytest.raises(SealError):
        open_sealed(bob.exchange, box, b"request 1")
    flipped = bytearray(box)
    flipped[-1] ^= 1
    with pytest.raises(SealError):
        open_sealed(alice.exchange, bytes(flipped), b"request 1")
    assert seal(alice.public().x25519, b"x", b"c") != seal(alice.public().x25519, b"x", b"c")
