"""The weight vault: model files open only with K approvals from custodians other than the requester.

Specification, as issue 4 states it: open with one approval fails; with the requester's own
second approval it still fails; with two distinct custodians it succeeds and the bytes match;
expired and revoked requests fail; a flipped bit in any ciphertext chunk, a swapped or truncated
chunk, a forged approval and a share sealed for another request are each refused with a clear
error. No single person, the vault operator included, can decrypt alone.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from asl3.cli import main
from asl3.errors import Asl3Error, VaultError
from asl3.security import identity, shamir
from asl3.security import vault as vault_mod
from asl3.security.encoding import b64, canonical, sha256_hex
from asl3.security.identity import Identity
from asl3.security.seal import seal
from asl3.security.vault import Vault

CHUNK = 1024
SIZE = 4 * CHUNK + 904  # five chunks, the last one short
HEADER = 36


@pytest.fixture()
def people() -> dict[str, Identity]:
    """alice, bob and carol are custodians; dave is not; mallory is an outsider."""
    return {n: identity.new(n) for n in ("alice", "bob", "carol", "dave", "mallory")}


@pytest.fixture()
def weights(tmp_path: Path) -> list[Path]:
    a, b = tmp_path / "model.bin", tmp_path / "config.bin"
    a.write_bytes(os.urandom(SIZE))
    b.write_bytes(os.urandom(SIZE))
    return [a, b]


@pytest.fixture()
def vault(tmp_path: Path, people, clock, weights) -> Vault:
    v = Vault.init(tmp_path / "vault", [people[n].public() for n in ("alice", "bob", "carol")],
                   threshold=2, actor=people["alice"], clock=clock)
    v.put("llm", weights, actor=people["alice"], chunk_size=CHUNK)
    return v


def ask(v: Vault, who: Identity, ttl: timedelta = timedelta(hours=4)) -> str:
    return v.request("llm", who, "evaluation run", ttl)


def refused(fn, match: str) -> str:
    with pytest.raises(VaultError, match=match) as e:
        fn()
    return str(e.value)


@pytest.fixture()
def granted(vault: Vault, people) -> str:
    """A request by dave (not a custodian) approved by bob and carol."""
    rid = ask(vault, people["dave"])
    vault.approve(rid, people["bob"])
    vault.approve(rid, people["carol"])
    return rid


def blob(v: Vault, name: str = "model.bin") -> Path:
    m = v.manifest("llm")
    return v.path / "models" / "llm" / next(f["blob"] for f in m["files"] if f["name"] == name)


def chunk_at(i: int) -> int:
    return HEADER + i * (CHUNK + 16)


# -- the two-party rule ----------------------------------------------------------------------
def test_two_distinct_custodians_open_and_the_bytes_match(vault, granted, people, weights,
                                                          tmp_path) -> None:
    written = vault.open(granted, people["dave"], tmp_path / "out")
    assert [p.name for p in written] == ["model.bin", "config.bin"]
    for src in weights:
        assert (tmp_path / "out" / src.name).read_bytes() == src.read_bytes()


def test_one_approval_is_not_enough(vault, people, tmp_path) -> None:
    rid = ask(vault, people["dave"])
    refused(lambda: vault.open(rid, people["dave"], tmp_path / "out"), "has 0 of the 2")
    vault.approve(rid, people["bob"])
    refused(lambda: vault.open(rid, people["dave"], tmp_path / "out"), r"has 1 of the 2.*\(bob\)")
    assert not (tmp_path / "out").exists()


def test_the_requesters_own_second_approval_does_not_count(vault, people, tmp_path) -> None:
    rid = ask(vault, people["alice"])  # alice is a custodian asking for herself
    vault.approve(rid, people["bob"])
    assert vault.approve(rid, people["alice"])["self_approval"] is True
    msg = refused(lambda: vault.open(rid, people["alice"], tmp_path / "out"), "has 1 of the 2")
    assert "requester's own approval does not count" in msg
    vault.approve(rid, people["carol"])  # a second *other* custodian completes the quorum
    assert len(vault.open(rid, people["alice"], tmp_path / "out")) == 2


def test_the_same_custodian_cannot_approve_twice(vault, people) -> None:
    rid = ask(vault, people["dave"])
    vault.approve(rid, people["bob"])
    refused(lambda: vault.approve(rid, people["bob"]), "already approved")


def test_only_custodians_approve_and_only_the_requester_opens(vault, granted, people,
                                                              tmp_path) -> None:
    refused(lambda: vault.approve(granted, people["mallory"]), "not a custodian")
    refused(lambda: vault.open(granted, people["bob"], tmp_path / "out"),
            "made by dave; only they can open it")


def test_a_threshold_below_two_or_duplicate_custodians_are_refused(tmp_path, people) -> None:
    pubs = [people[n].public() for n in ("alice", "bob")]
    op = people["alice"]
    refused(lambda: Vault.init(tmp_path / "a", pubs, threshold=1, actor=op), "at least 2")
    refused(lambda: Vault.init(tmp_path / "b", pubs, threshold=3, actor=op), "at most")
    refused(lambda: Vault.init(tmp_path / "c", [pubs[0], pubs[0]], actor=op), "listed twice")


# -- time and revocation ---------------------------------------------------------------------
def test_a_pending_request_expires_after_24_hours(vault, people, clock, tmp_path) -> None:
    rid = ask(vault, people["dave"])
    vault.approve(rid, people["bob"])
    clock.advance(hours=24)
    refused(lambda: vault.approve(rid, people["carol"]), "expired")
    refused(lambda: vault.open(rid, people["dave"], tmp_path / "out"), "expired at")
    assert vault.status()["requests"][0]["state"] == "expired"


def test_the_grant_lasts_the_ttl_from_the_quorum(vault, people, clock, tmp_path) -> None:
    rid = ask(vault, people["dave"], ttl=timedelta(hours=1))
    clock.advance(hours=5)
    vault.approve(rid, people["bob"])
    vault.approve(rid, people["carol"])
    assert vault.status()["requests"][0]["state"] == "granted"
    clock.advance(minutes=61)
    refused(lambda: vault.open(rid, people["dave"], tmp_path / "out"), "grant .* expired")
    assert vault.status()["requests"][0]["state"] == "grant expired"


def test_a_revoked_request_can_no_longer_be_approved_or_opened(vault, granted, people,
                                                               tmp_path) -> None:
    refused(lambda: vault.revoke(granted, people["mallory"]), "may not revoke")
    vault.revoke(granted, people["alice"])  # any custodian, or the requester, may revoke
    refused(lambda: vault.open(granted, people["dave"], tmp_path / "out"), "revoked by alice")
    refused(lambda: vault.approve(granted, people["alice"]), "revoked")
    refused(lambda: vault.revoke(granted, people["dave"]), "already revoked")
    assert vault.status()["requests"][0]["state"] == "revoked"


# -- tampered ciphertext ---------------------------------------------------------------------
def assert_refused_and_nothing_written(vault, rid, people, out: Path, match: str) -> None:
    refused(lambda: vault.open(rid, people["dave"], out), match)
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("index", range(5))
def test_a_flipped_bit_in_any_chunk_is_refused(vault, granted, people, tmp_path, index) -> None:
    path = blob(vault)
    data = bytearray(path.read_bytes())
    data[chunk_at(index) + 7] ^= 0x10
    path.write_bytes(bytes(data))
    assert_refused_and_nothing_written(vault, granted, people, tmp_path / "out",
                                       f"chunk {index + 1} of 5 fails authentication")


def test_a_changed_header_is_refused(vault, granted, people, tmp_path) -> None:
    path = blob(vault)
    data = bytearray(path.read_bytes())
    data[30] ^= 1  # inside the salt; the header is bound into every chunk
    path.write_bytes(bytes(data))
    assert_refused_and_nothing_written(vault, granted, people, tmp_path / "out",
                                       "chunk 1 of 5 fails authentication")


def test_swapped_chunks_are_refused(vault, granted, people, tmp_path) -> None:
    path = blob(vault)
    d = path.read_bytes()
    one, two = d[chunk_at(1):chunk_at(2)], d[chunk_at(2):chunk_at(3)]
    path.write_bytes(d[:chunk_at(1)] + two + one + d[chunk_at(3):])
    assert_refused_and_nothing_written(vault, granted, people, tmp_path / "out",
                                       "chunk 2 of 5 fails authentication")


def test_a_chunk_from_another_file_is_refused(vault, granted, people, tmp_path) -> None:
    a, b = blob(vault, "model.bin"), blob(vault, "config.bin")
    d, other = a.read_bytes(), b.read_bytes()
    a.write_bytes(d[:chunk_at(0)] + other[chunk_at(0):chunk_at(1)] + d[chunk_at(1):])
    assert_refused_and_nothing_written(vault, granted, people, tmp_path / "out",
                                       "chunk 1 of 5 fails authentication")


def test_a_truncated_file_is_refused(vault, granted, people, tmp_path) -> None:
    path = blob(vault)
    path.write_bytes(path.read_bytes()[:chunk_at(4)])  # the last chunk dropped
    assert_refused_and_nothing_written(vault, granted, people, tmp_path / "out",
                                       "truncated: chunk 5 of 5 is missing")


def test_an_extended_file_is_refused(vault, granted, people, tmp_path) -> None:
    path = blob(vault)
    path.write_bytes(path.read_bytes() + b"\x00" * 16)
    assert_refused_and_nothing_written(vault, granted, people, tmp_path / "out",
                                       "unexpected bytes after the last chunk")


def test_the_second_file_failing_removes_the_first(vault, granted, people, tmp_path) -> None:
    path = blob(vault, "config.bin")
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    assert_refused_and_nothing_written(vault, granted, people, tmp_path / "out",
                                       "config.bin: chunk 5 of 5")


# -- forged and misplaced approvals ----------------------------------------------------------
def approval_path(vault: Vault, rid: str, who: Identity) -> Path:
    return vault.path / "requests" / rid / "approvals" / f"{who.fingerprint}.json"


def test_an_altered_approval_is_refused(vault, granted, people, tmp_path) -> None:
    p = approval_path(vault, granted, people["carol"])
    doc = json.loads(p.read_text())
    doc["approval"]["approved_at"] = doc["approval"]["approved_at"].replace("09:00", "09:01")
    p.write_text(json.dumps(doc))
    refused(lambda: vault.open(granted, people["dave"], tmp_path / "out"),
            "carol's signature does not verify")


def test_an_approval_signed_by_a_non_custodian_is_refused(vault, people, tmp_path) -> None:
    rid = ask(vault, people["dave"])
    vault.approve(rid, people["bob"])
    real = json.loads(approval_path(vault, rid, people["bob"]).read_text())
    payload = {**real["approval"], "custodian": people["mallory"].fingerprint}
    forged = {"approval": payload, "resealed": real["resealed"],
              "signature": b64(people["mallory"].sign(canonical(payload)))}
    p = approval_path(vault, rid, people["mallory"])
    p.write_text(json.dumps(forged))
    refused(lambda: vault.open(rid, people["dave"], tmp_path / "out"), "not from a custodian")
    # ... and passed off as carol's, it fails carol's signature
    p.unlink()
    payload = {**real["approval"], "custodian": people["carol"].fingerprint}
    forged = {"approval": payload, "resealed": real["resealed"],
              "signature": b64(people["mallory"].sign(canonical(payload)))}
    approval_path(vault, rid, people["carol"]).write_text(json.dumps(forged))
    refused(lambda: vault.open(rid, people["dave"], tmp_path / "out"),
            "carol's signature does not verify")


def test_approvals_copied_from_another_request_are_refused(vault, granted, people,
                                                           tmp_path) -> None:
    other = ask(vault, people["dave"])
    src = vault.path / "requests" / granted / "approvals"
    shutil.copytree(src, vault.path / "requests" / other / "approvals")
    refused(lambda: vault.open(other, people["dave"], tmp_path / "out"),
            "for another request .*request_id, request_hash differ")


def test_a_share_sealed_for_another_request_is_refused(vault, granted, people, tmp_path) -> None:
    """Even validly signed by real custodians, a share resealed for request 1 does not open
    under request 2: the request id and hash are bound into the sealed box."""
    other = ask(vault, people["dave"])
    body = json.loads((vault.path / "requests" / other / "request.json").read_text())["request"]
    for who in ("bob", "carol"):
        old = json.loads(approval_path(vault, granted, people[who]).read_text())
        payload = {**old["approval"], "request_id": other,
                   "request_hash": sha256_hex(canonical(body))}
        doc = {"approval": payload, "resealed": old["resealed"],
               "signature": b64(people[who].sign(canonical(payload)))}
        path = approval_path(vault, other, people[who])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc))
    refused(lambda: vault.open(other, people["dave"], tmp_path / "out"),
            "share does not open for this request")


def test_an_altered_request_is_refused(vault, granted, people, tmp_path) -> None:
    p = vault.path / "requests" / granted / "request.json"
    doc = json.loads(p.read_text())
    doc["request"]["ttl_seconds"] = 30 * 86400
    p.write_text(json.dumps(doc))
    refused(lambda: vault.open(granted, people["dave"], tmp_path / "out"), "was altered")


def test_a_hand_made_request_cannot_exceed_the_vaults_limits(vault, people, clock,
                                                           tmp_path) -> None:
    """The requester signs their own request file; its TTL and pending time are still checked."""
    dave = people["dave"]
    body = {"format": "asl3-request/1", "vault": vault.vault_id, "model": "llm",
            "key_id": vault.manifest("llm")["key_id"], "requester": dave.public().to_dict(),
            "reason": "forever", "created": clock().isoformat(),
            "expires": (clock() + timedelta(days=365)).isoformat(), "ttl_seconds": 3600,
            "nonce": "00"}
    rid = sha256_hex(canonical(body))[:24]
    path = vault.path / "requests" / rid / "request.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"request": body, "signature": b64(dave.sign(canonical(body)))}))
    refused(lambda: vault.approve(rid, people["bob"]), "outside the vault's limits")
    refused(lambda: vault.request("llm", dave, "r", timedelta(hours=1), pending=timedelta(days=8)),
            "pending at most 7 days")


# -- no single person, the operator included -------------------------------------------------
def test_the_vault_operator_alone_cannot_decrypt(tmp_path, people, clock, weights,
                                                 monkeypatch) -> None:
    keys: list[bytes] = []
    real_new_key = vault_mod._new_data_key
    monkeypatch.setattr(vault_mod, "_new_data_key", lambda: keys.append(real_new_key()) or keys[-1])
    real_split = shamir.split
    shares: list[shamir.Share] = []
    monkeypatch.setattr(shamir, "split", lambda *a: shares.extend(real_split(*a)) or shares)
    op = people["mallory"]
    v = Vault.init(tmp_path / "vault", [people[n].public() for n in ("alice", "bob", "carol")],
                   actor=op, clock=clock)
    refused(lambda: v.put("llm", weights, actor=op), "only a custodian may put")
    v.put("llm", weights, actor=people["alice"], chunk_size=CHUNK)
    # 1. Nothing in the directory holds the key or any share in the clear, in any encoding.
    secrets_ = [keys[0]] + [s.y for s in shares] + [s.to_bytes() for s in shares]
    forms = [f(x) for x in secrets_ for f in (bytes, bytes.hex, base64.b64encode)]
    for f in v.path.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert not any((x if isinstance(x, bytes) else x.encode()) in data for x in forms), f
    # 2. The operator's own identity is no custodian...
    rid = v.request("llm", op, "I run the vault", timedelta(hours=1))
    refused(lambda: v.approve(rid, op), "not a custodian")
    # 3. ... and adding it to vault.json is caught: the signed vault.init entry says otherwise.
    doc = json.loads((v.path / "vault.json").read_text())
    doc["custodians"].append(op.public().to_dict())
    (v.path / "vault.json").write_text(json.dumps(doc))
    refused(lambda: Vault(v.path, clock=clock), "the roster was edited")
    # Even past that check it would get no share: shares were sealed to the others at put.
    monkeypatch.setattr(Vault, "_check_roster", lambda self: None)
    v = Vault(v.path, clock=clock)
    refused(lambda: v.approve(rid, op), "holds no share for mallory")
    # 4. Two more operator identities "approve" with shares the operator makes up, sealed
    #    exactly as real ones would be: they do not recombine to the key, and open says so.
    extra = [identity.new("mallory-2"), identity.new("mallory-3")]
    doc["custodians"] += [x.public().to_dict() for x in extra]
    (v.path / "vault.json").write_text(json.dumps(doc))
    v = Vault(v.path, clock=clock)
    body = json.loads((v.path / "requests" / rid / "request.json").read_text())["request"]
    digest = sha256_hex(canonical(body))
    for x, who in enumerate(extra, start=1):
        ctx = v._grant_context(body, rid, digest, op.fingerprint, who.fingerprint)
        fake = seal(op.public().x25519, bytes([x]) + os.urandom(32), ctx)
        payload = {"format": "asl3-approval/1", "vault": v.vault_id, "model": "llm",
                   "key_id": body["key_id"], "request_id": rid, "request_hash": digest,
                   "custodian": who.fingerprint, "resealed_sha256": sha256_hex(fake),
                   "approved_at": clock().isoformat()}
        path = approval_path(v, rid, who)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"approval": payload, "resealed": b64(fake),
                                    "signature": b64(who.sign(canonical(payload)))}))
    refused(lambda: v.open(rid, op, tmp_path / "out"), "fails the key check")
    assert not (tmp_path / "out" / "model.bin").exists()


def test_a_model_manifest_is_signed_by_the_custodian_who_put_it(vault, people, weights,
                                                                 tmp_path) -> None:
    """Whoever can write the directory cannot swap weights in under a model's name."""
    path = vault.path / "models" / "llm" / "manifest.json"
    original = path.read_text()
    doc = json.loads(original)
    assert doc["put_by"]["name"] == "alice" and doc["vault"] == vault.vault_id
    rid = vault.request("llm", people["dave"], "eval", timedelta(hours=1))
    for a in ("alice", "bob"):
        vault.approve(rid, people[a])
    doc["files"][0]["size"] += 1  # any edit breaks the custodian's signature
    path.write_text(json.dumps(doc))
    refused(lambda: vault.open(rid, people["dave"], tmp_path / "o1"), "altered")
    refused(lambda: vault.request("llm", people["dave"], "again", timedelta(hours=1)),
            "altered")
    mallory = identity.new("mallory")  # re-signed by a non-custodian: refused by who signed it
    doc["put_by"] = mallory.public().to_dict()
    doc.pop("signature")
    doc["signature"] = b64(mallory.sign(canonical(doc)))
    path.write_text(json.dumps(doc))
    refused(lambda: vault.open(rid, people["dave"], tmp_path / "o2"), "not a custodian")
    path.write_text(original)
    assert [p.name for p in vault.open(rid, people["dave"], tmp_path / "o3")]


def test_the_roster_must_match_the_signed_first_audit_entry(vault, people) -> None:
    doc = json.loads((vault.path / "vault.json").read_text())
    doc["threshold"] = 3
    (vault.path / "vault.json").write_text(json.dumps(doc))
    refused(lambda: Vault(vault.path), "the roster was edited")
    doc["threshold"] = 2
    (vault.path / "vault.json").write_text(json.dumps(doc))
    assert Vault(vault.path).threshold == 2
    shutil.rmtree(vault.path / "audit")  # deleting the log does not remove the check
    refused(lambda: Vault(vault.path), "custodians cannot be confirmed")


def test_a_short_quorum_fails_loudly_on_the_key_check(tmp_path, people, clock, weights,
                                                      monkeypatch) -> None:
    """Shamir gives wrong bytes without error for too few shares; the key check catches it.
    Here the operator lowers a 3-of-3 model's threshold to 2 so that two approvals pass the
    count: recombining two shares of a degree-2 polynomial gives a wrong key. The manifest's
    signature refuses the edit first; the key check is the second line, tested without it."""
    custodians = [people[n].public() for n in ("alice", "bob", "carol")]
    v = Vault.init(tmp_path / "vault", custodians, threshold=3, actor=people["alice"], clock=clock)
    v.put("llm", weights, actor=people["alice"], chunk_size=CHUNK)
    manifest = v.path / "models" / "llm" / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["threshold"] = 2
    manifest.write_text(json.dumps(doc))
    refused(lambda: ask(v, people["dave"]), "altered")
    monkeypatch.setattr(Vault, "manifest", lambda self, model: json.loads(
        (self.path / "models" / model / "manifest.json").read_text()))
    rid = ask(v, people["dave"])
    v.approve(rid, people["alice"])
    v.approve(rid, people["bob"])
    refused(lambda: v.open(rid, people["dave"], tmp_path / "out"),
            "fails the key check: the shares are not a valid quorum")
    assert not (tmp_path / "out" / "model.bin").exists()


def test_key_check_commits_to_the_key_without_revealing_it() -> None:
    key = os.urandom(32)
    check = vault_mod.key_check(key, "v", "m", "k")
    assert check == vault_mod.key_check(key, "v", "m", "k")
    assert check != vault_mod.key_check(os.urandom(32), "v", "m", "k")
    assert check != vault_mod.key_check(key, "v", "other-model", "k")
    assert key.hex() not in check


# -- bookkeeping -----------------------------------------------------------------------------
def test_every_action_and_refusal_is_a_signed_entry_by_the_person_acting(vault, granted, people,
                                                                         tmp_path) -> None:
    refused(lambda: vault.approve(granted, people["mallory"]), "not a custodian")
    refused(lambda: vault.open(granted, people["bob"], tmp_path / "x"), "only they can open it")
    vault.open(granted, people["dave"], tmp_path / "out")
    refused(lambda: vault.revoke(granted, people["mallory"]), "may not revoke")
    vault.revoke(granted, people["carol"])
    entries = list(vault.audit.entries())
    assert [(e.action, e.actor.name) for e in entries] == [
        ("vault.init", "alice"), ("vault.put", "alice"), ("vault.request", "dave"),
        ("vault.approve", "bob"), ("vault.approve", "carol"),
        ("vault.approve.refused", "mallory"), ("vault.open.refused", "bob"),
        ("vault.open", "dave"), ("vault.revoke.refused", "mallory"), ("vault.revoke", "carol")]
    assert entries[0].subject == vault.vault_id and entries[1].subject == "llm"
    assert all(e.subject == granted for e in entries[2:])
    assert "not a custodian" in entries[5].details["reason"]
    assert entries[7].details["files"] == ["model.bin", "config.bin"]
    assert entries[0].time == "2026-11-24T09:00:00+00:00"  # the vault's clock
    report = vault.audit.verify(trusted=[p.public() for p in people.values()])
    assert report.ok and report.entries == 10, report.problems
    assert vault.status()["audit"] == {"entries": 10, "root": report.root}
    assert not (vault.path / "events.jsonl").exists()


def test_a_changed_vault_log_entry_is_caught(vault, granted, people) -> None:
    log = vault.audit.path
    lines = log.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace('"self_approval":false', '"self_approval":true')
    log.write_text("".join(lines))
    report = vault.audit.verify()
    assert report.problems == ["entry 3 (seq 3): content changed — signature does not verify"]


def test_models_are_immutable_and_names_are_checked(vault, weights, people) -> None:
    op = people["alice"]
    refused(lambda: vault.put("llm", weights, actor=op), "already in the vault")
    refused(lambda: vault.put("../escape", weights, actor=op), "model name")
    refused(lambda: vault.put("other", [weights[0], weights[0]], actor=op), "same name")
    refused(lambda: vault.status() and vault.open("../../x", identity.new("x"), "o"),
            "not a request id")


def test_open_refuses_to_overwrite(vault, granted, people, tmp_path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.bin").write_bytes(b"keep me")
    refused(lambda: vault.open(granted, people["dave"], tmp_path / "out"), "refusing to overwrite")
    assert (tmp_path / "out" / "config.bin").read_bytes() == b"keep me"


def test_an_empty_file_round_trips(tmp_path, people, clock) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    v = Vault.init(tmp_path / "v", [people["alice"].public(), people["bob"].public()],
                   actor=people["alice"], clock=clock)
    v.put("m", [empty], actor=people["alice"])
    rid = v.request("m", people["dave"], "r", timedelta(hours=1))
    v.approve(rid, people["alice"])
    v.approve(rid, people["bob"])
    assert v.open(rid, people["dave"], tmp_path / "o")[0].read_bytes() == b""


# -- the command line ------------------------------------------------------------------------
def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_round_trip(tmp_path, capsys, monkeypatch, weights) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAVE_PASS", "s3cret")
    for name in ("alice", "bob", "carol"):
        code, out, err = run(capsys, "identity", "new", name, "--out", f"{name}.key")
        assert code == 0 and name in out and "0600" in err
    code, out, _ = run(capsys, "identity", "new", "dave", "--out", "dave.key",
                       "--passphrase-env", "DAVE_PASS", "--json")
    assert code == 0 and json.loads(out)["name"] == "dave"
    code, out, _ = run(capsys, "identity", "show", "alice.key.pub", "--json")
    assert json.loads(out)["fingerprint"] == identity.load_public("alice.key").fingerprint
    with pytest.raises(SystemExit) as exit_:  # who sets up the vault signs its first audit entry
        main(["vault", "init", "v", "--custodian", "alice.key.pub"])
    assert exit_.value.code == 2 and "required: --as" in capsys.readouterr().err
    assert run(capsys, "vault", "init", "v", "--custodian", "alice.key.pub", "bob.key.pub",
               "carol.key.pub", "--as", "alice.key")[0] == 0
    code, out, _ = run(capsys, "vault", "put", "v", "llm", *map(str, weights), "--chunk-size",
                       "1000", "--as", "alice.key", "--json")
    assert code == 0 and len(json.loads(out)["files"]) == 2
    dave = ("--as", "dave.key", "--passphrase-env", "DAVE_PASS")
    code, out, _ = run(capsys, "vault", "request", "v", "llm", *dave, "--reason", "eval",
                       "--ttl", "4h", "--json")
    rid = json.loads(out)["request"]
    assert run(capsys, "vault", "approve", "v", rid, "--as", "alice.key")[0] == 0
    code, _, err = run(capsys, "vault", "open", "v", rid, *dave, "--out", "out")
    assert code == 2 and err.startswith("asl3: request") and "has 1 of the 2" in err
    assert err.count("\n") == 1
    assert run(capsys, "vault", "approve", "v", rid, "--as", "bob.key")[0] == 0
    code, out, _ = run(capsys, "vault", "open", "v", rid, *dave, "--out", "out", "--json")
    assert code == 0 and len(json.loads(out)["files"]) == 2
    for src in weights:
        assert (tmp_path / "out" / src.name).read_bytes() == src.read_bytes()
    code, out, _ = run(capsys, "vault", "status", "v", "--json")
    assert json.loads(out)["requests"][0]["state"] == "granted"
    code, out, _ = run(capsys, "vault", "status", "v")
    assert code == 0 and rid in out and "audit log: 7 entries" in out
    assert run(capsys, "vault", "revoke", "v", rid, "--as", "carol.key")[0] == 0
    code, _, err = run(capsys, "vault", "open", "v", rid, *dave, "--out", "out2")
    assert code == 2 and "revoked by carol" in err
    code, out, _ = run(capsys, "audit", "verify", "v", "--trust", *(f"{n}.key.pub" for n in (
        "alice", "bob", "carol", "dave")))
    assert code == 0 and out.startswith("ok: 9 entries")


@pytest.mark.parametrize(("argv", "reason"), [
    (["vault", "request", "v", "llm", "--as", "dave.key", "--reason", "r", "--ttl", "4 weeks"],
     "not a duration"),
    (["vault", "request", "v", "llm", "--as", "dave.key", "--reason", "r", "--ttl", "31d"],
     "at most 30 days"),
    (["vault", "request", "v", "llm", "--as", "dave.key", "--passphrase-env", "NOPE",
      "--reason", "r", "--ttl", "1h"], "NOPE is not set"),
    (["vault", "status", "nowhere"], "not found"),
    (["identity", "show", "missing.pub"], "no such identity file"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, monkeypatch, argv,
                                             reason) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NOPE", raising=False)
    identity.save(identity.new("dave"), "dave.key")
    alice, bob = identity.new("alice"), identity.new("bob")
    Vault.init("v", [alice.public(), bob.public()], actor=alice)
    (tmp_path / "w").write_bytes(b"w")
    Vault("v").put("llm", [tmp_path / "w"], actor=alice)
    code, _, err = run(capsys, *argv)
    assert code == 2 and reason in err and err.count("\n") == 1
    assert isinstance(VaultError("x"), Asl3Error)
