"""The audit log: append-only, hash-chained, signed entries with RFC 6962 Merkle tree heads.

Specification, as the issue states it: `asl3 audit verify` detects a modified, deleted,
reordered or inserted entry and says which; an entry inserted with the attacker's own valid key
breaks the chain, and with a trusted set its signer is named; a truncated tail shows against a
saved checkpoint. Merkle roots follow RFC 6962 (leaf 0x00, node 0x01, odd node promoted);
inclusion and consistency proofs verify, and deliberately wrong proofs are refused.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from asl3.cli import main
from asl3.errors import AuditError
from asl3.security import identity, merkle
from asl3.security.audit import GENESIS, AuditLog, SignedTreeHead, _make_line
from asl3.security.encoding import canonical
from asl3.security.identity import Identity

N = 30  # entries in the sample log


# -- Merkle trees (RFC 6962 section 2.1) -----------------------------------------------------
def mth(d: list[bytes]) -> bytes:
    """MTH exactly as RFC 6962 2.1 writes it: recursive, split at the largest power of 2 < n."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1
    while k * 2 < len(d):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


LEAVES = [f"entry {i}".encode() for i in range(70)]


def test_roots_match_the_rfc_recursive_definition_for_sizes_0_to_70() -> None:
    frontier = merkle.Frontier()
    for n in range(len(LEAVES) + 1):
        assert merkle.root(LEAVES[:n]) == mth(LEAVES[:n]) == frontier.root(), n
        if n < len(LEAVES):
            frontier.append(merkle.leaf_hash(LEAVES[n]))


def test_roots_match_the_certificate_transparency_test_vectors() -> None:
    """An odd node is promoted, never duplicated: these are the published RFC 6962 roots."""
    leaves = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
              bytes(range(0x50, 0x58)), bytes(range(0x60, 0x70))]
    roots = ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
             "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
             "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
             "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
             "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
             "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
             "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"]
    assert [merkle.root(leaves[:n]).hex() for n in range(1, 9)] == roots
    three = merkle.root(leaves[:3])
    assert three != merkle.root([*leaves[:3], leaves[2]])  # not padded with a copy of the last


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b")
    assert merkle.root([a + b]) != merkle.root([b"a", b"b"])  # a leaf never passes for a node


def test_inclusion_proofs_verify_for_every_leaf_of_every_tree_up_to_40() -> None:
    for n in range(1, 41):
        root = merkle.root(LEAVES[:n])
        hashes = [merkle.leaf_hash(x) for x in LEAVES[:n]]
        for i in range(n):
            proof = merkle.inclusion_proof(LEAVES[:n], i)
            assert proof == merkle.inclusion_proof(hashes, i, hashed=True)
            assert merkle.verify_inclusion(LEAVES[i], i, n, proof, root), (i, n)
            assert merkle.verify_inclusion(hashes[i], i, n, proof, root, hashed=True)


def test_consistency_proofs_verify_for_every_pair_up_to_40() -> None:
    for n in range(0, 41):
        new = merkle.root(LEAVES[:n])
        for m in range(0, n + 1):
            proof = merkle.consistency_proof(LEAVES[:n], m)
            assert merkle.verify_consistency(m, n, merkle.root(LEAVES[:m]), new, proof), (m, n)


def wrong_inclusions(i: int, n: int, proof: list[bytes]):
    root = merkle.root(LEAVES[:n])
    yield "wrong leaf", (LEAVES[i] + b"!", i, n, proof, root)
    yield "wrong root", (LEAVES[i], i, n, proof, merkle.root(LEAVES[1:n + 1]))
    for k in range(len(proof)):
        flipped = list(proof)
        flipped[k] = bytes([proof[k][0] ^ 1]) + proof[k][1:]
        yield f"flipped byte in hash {k}", (LEAVES[i], i, n, flipped, root)
    if proof:
        yield "truncated", (LEAVES[i], i, n, proof[:-1], root)
        yield "first hash dropped", (LEAVES[i], i, n, proof[1:], root)
    yield "extended", (LEAVES[i], i, n, [*proof, proof[-1] if proof else root], root)
    yield "short hash", (LEAVES[i], i, n, [p[:31] for p in proof] or [b"x"], root)
    for j in range(n + 2):
        if j != i:
            yield f"claimed at index {j}", (LEAVES[i], j, n, proof, root)
    for m in range(max(1, i + 1), 44):
        if m != n:  # a tree head binds size and root together: check against that head
            yield f"tree head of size {m}", (LEAVES[i], i, m, proof, merkle.root(LEAVES[:m]))
    if n > 1:
        other = [bytes(32 - len(x)) + x[-32:] for x in (b"other %d" % k for k in range(n))]
        yield "proof for another tree", (LEAVES[i], i, n, merkle.inclusion_proof(other, i), root)


def test_wrong_inclusion_proofs_are_rejected() -> None:
    for n in range(1, 21):
        for i in range(n):
            proof = merkle.inclusion_proof(LEAVES[:n], i)
            for why, args in wrong_inclusions(i, n, proof):
                assert not merkle.verify_inclusion(*args), (why, i, n)


def test_wrong_consistency_proofs_are_rejected() -> None:
    for n in range(1, 21):
        new = merkle.root(LEAVES[:n])
        for m in range(1, n + 1):
            old = merkle.root(LEAVES[:m])
            proof = merkle.consistency_proof(LEAVES[:n], m)
            bad = [("swapped roots", (m, n, new, old, proof) if m < n else None),
                   ("old root of another tree", (m, n, merkle.root(LEAVES[1:m + 1]), new, proof)),
                   ("new root of another tree", (m, n, old, merkle.root(LEAVES[1:n + 1]), proof)),
                   ("extended", (m, n, old, new, [*proof, new])),
                   ("old size larger than new", (n + 1, n, old, new, proof)),
                   ("proof for another tree", (m, n, old, new, merkle.consistency_proof(
                       [x + b"!" for x in LEAVES[:n]], m)) if m < n else None)]
            for k in range(len(proof)):
                flipped = list(proof)
                flipped[k] = proof[k][:-1] + bytes([proof[k][-1] ^ 0x80])
                bad.append((f"flipped byte in hash {k}", (m, n, old, new, flipped)))
            if proof:
                bad += [("truncated", (m, n, old, new, proof[:-1])),
                        ("first hash dropped", (m, n, old, new, proof[1:]))]
            for m2 in range(1, n + 1):
                if m2 != m:
                    bad.append((f"old size {m2}", (m2, n, merkle.root(LEAVES[:m2]), new, proof)))
            for n2 in range(m, 24):
                if n2 != n:
                    bad.append((f"new size {n2}", (m, n2, old, merkle.root(LEAVES[:n2]), proof)))
            for why, args in bad:
                if args is not None:
                    assert not merkle.verify_consistency(*args), (why, m, n)
    assert not merkle.verify_consistency(0, 3, merkle.root([]), merkle.root(LEAVES[:3]),
                                         [merkle.root(LEAVES[:3])])


def test_proof_generation_refuses_indexes_outside_the_tree() -> None:
    with pytest.raises(ValueError, match="not in a tree of 3"):
        merkle.inclusion_proof(LEAVES[:3], 3)
    with pytest.raises(ValueError, match="old size 4"):
        merkle.consistency_proof(LEAVES[:3], 4)


# -- the log: fixtures -----------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture(scope="session")
def people() -> dict[str, Identity]:
    """alice and bob act on the vault; mallory is an insider with a valid key of her own."""
    return {n: identity.new(n) for n in ("alice", "bob", "mallory")}


@pytest.fixture(scope="session")
def sample(tmp_path_factory, people) -> Path:
    d = tmp_path_factory.mktemp("sample")
    log = AuditLog(d, clock=Clock())
    for i in range(N):
        who = people["alice"] if i % 3 else people["bob"]
        log.append(who, "vault.approve" if i % 2 else "vault.put", f"subject-{i}", {"i": i})
    return d


@pytest.fixture()
def log(sample, tmp_path) -> AuditLog:
    shutil.copytree(sample, tmp_path / "d")
    return AuditLog(tmp_path / "d", clock=Clock())


def lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def rewrite(log: AuditLog, new: list[bytes]) -> None:
    log.path.write_bytes(b"".join(new))


def problems(log: AuditLog, **kw) -> list[str]:
    report = log.verify(**kw)
    assert report.ok is (not report.problems)
    return report.problems


def forged(by: Identity, seq: int, prev: str, action: str = "vault.open") -> bytes:
    return _make_line(by, seq, prev, "2026-11-24T10:00:00+00:00", action, "x", {}) + b"\n"


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


# -- the log: format and append ---------------------------------------------------------------
def test_entries_are_canonical_json_lines_hash_chained_and_signed(log, people) -> None:
    raw = lines(log)
    assert len(raw) == N
    entries = list(log.entries())
    for i, (line, e) in enumerate(zip(raw, entries, strict=True)):
        doc = json.loads(line)
        assert canonical(doc) + b"\n" == line  # the stored line is the canonical form
        assert doc["entry"]["seq"] == e.seq == i
        assert e.prev == (GENESIS if i == 0 else line_hash(raw[i - 1]))
        assert e.hash == line_hash(line) and e.verify_signature()
    assert entries[1].actor.fingerprint == people["alice"].fingerprint
    assert entries[1].actor.ed25519 == people["alice"].public().ed25519
    assert (entries[1].action, entries[1].subject, entries[1].details) == (
        "vault.approve", "subject-1", {"i": 1})
    assert entries[0].time == "2026-11-24T09:00:01+00:00"
    assert b"pickle" not in log.path.read_bytes()


def test_a_clean_log_verifies_and_its_head_is_the_merkle_root_of_its_lines(log, people) -> None:
    report = log.verify(trusted=[people["alice"].public(), people["bob"].public()])
    assert report.ok and report.entries == N and report.problems == []
    head = log.head()
    expected = merkle.root([x.rstrip(b"\n") for x in lines(log)]).hex()
    assert (head.size, head.root) == (N, expected) == (report.entries, report.root)
    assert log.head(fresh=True).root == expected


def test_append_returns_the_entry_and_extends_the_head_in_place(log, people) -> None:
    before = log.head()
    e = log.append(people["bob"], "allowlist.add", "/usr/bin/infer", {"sha256": "ab" * 32})
    assert (e.seq, e.action, e.actor.name) == (N, "allowlist.add", "bob")
    after = log.head()
    assert after.size == N + 1
    assert merkle.verify_consistency(N, N + 1, bytes.fromhex(before.root),
                                     bytes.fromhex(after.root), log.consistency_proof(N))
    assert log.verify().ok


def test_a_lost_or_stale_state_cache_is_rebuilt_from_the_log(log, people) -> None:
    root = log.head().root
    (log.dir / "state.json").write_text('{"format": "asl3-audit-state/1", "size": 3}')
    assert log.head().root == root
    (log.dir / "state.json").unlink()
    log.append(people["alice"], "vault.put", "m")
    assert log.verify().ok and log.head().size == N + 1


def test_two_processes_appending_at_once_keep_one_chain(tmp_path, people) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(tmp_path, people[n], 25))
             for n in ("alice", "bob")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    log = AuditLog(tmp_path)
    report = log.verify()
    assert report.ok and report.entries == 50, report.problems
    assert [e.seq for e in log.entries()] == list(range(50))


def _append_many(directory: Path, who: Identity, n: int) -> None:
    log = AuditLog(directory)
    for i in range(n):
        log.append(who, "change.propose", f"c{i}")


def test_bad_entries_are_refused_before_anything_is_written(tmp_path, people) -> None:
    log = AuditLog(tmp_path)
    alice = people["alice"]
    with pytest.raises(AuditError, match="dotted lower-case"):
        log.append(alice, "Vault Put", "m")
    with pytest.raises(AuditError, match="not plain JSON"):
        log.append(alice, "vault.put", "m", {"when": datetime.now()})
    with pytest.raises(AuditError, match="not plain JSON"):
        log.append(alice, "vault.put", "m", {"x": float("nan")})
    with pytest.raises(AuditError, match="no such directory"):
        AuditLog(tmp_path / "missing").append(alice, "vault.put", "m")
    assert not log.path.exists()


def test_a_torn_last_line_is_reported_and_the_next_append_cuts_it_off(log, people) -> None:
    with open(log.path, "ab") as f:
        f.write(b'{"entry":{"v":1,"seq":30')  # an append that crashed mid-write
    assert problems(log) == ["the log ends in 24 bytes that are not a complete entry (a crashed "
                             "append, or bytes added by hand)"]
    log.append(people["alice"], "vault.put", "m")
    assert log.verify().ok and log.head().size == N + 1


# -- the log: tampering, each kind named ------------------------------------------------------
def test_a_modified_entry_is_named(log) -> None:
    raw = lines(log)
    raw[17] = raw[17].replace(b"subject-17", b"subject-71")
    rewrite(log, raw)
    assert problems(log) == ["entry 17 (seq 17): content changed — signature does not verify"]


def test_a_modified_signature_or_unreadable_line_is_named(log) -> None:
    raw = lines(log)
    doc = json.loads(raw[4])
    doc["sig"] = doc["sig"][:10] + ("A" if doc["sig"][10] != "A" else "B") + doc["sig"][11:]
    raw[4] = canonical(doc) + b"\n"
    raw[9] = b"not json at all\n"
    rewrite(log, raw)
    assert problems(log) == ["entry 4 (seq 4): content changed — signature does not verify",
                             "entry 9: not a valid audit entry (not an entry line)"]


def test_a_deleted_entry_is_named(log) -> None:
    raw = lines(log)
    rewrite(log, raw[:17] + raw[18:])
    assert problems(log) == ["entry after seq 16 is missing (seq 17 deleted; entry 17 has seq 18)"]


def test_several_deleted_entries_and_a_deleted_first_entry_are_named(log) -> None:
    raw = lines(log)
    rewrite(log, raw[1:10] + raw[13:])
    assert problems(log) == ["entry before seq 1 is missing (seq 0 deleted)",
                             "3 entries after seq 9 are missing (seq 10-12 deleted; entry 9 has "
                             "seq 13)"]


def test_reordered_entries_are_named(log) -> None:
    raw = lines(log)
    raw[5], raw[6] = raw[6], raw[5]
    raw.insert(25, raw.pop(2))  # seq 2 moved far down
    rewrite(log, raw)
    assert problems(log) == [  # after the move, seq 6 is at index 4 and seq 5 at index 5
        "entry 5 (seq 5): out of order — it belongs after seq 4 (entry 3); entries were reordered",
        "entry 25 (seq 2): out of order — it belongs after seq 1 (entry 1); entries were "
        "reordered"]


def test_an_inserted_copy_of_an_entry_is_named(log) -> None:
    raw = lines(log)
    raw.insert(12, raw[3])
    rewrite(log, raw)
    assert problems(log) == ["entry 12 (seq 3): a copy of entry 3 — an inserted duplicate"]


def test_an_entry_inserted_with_the_attackers_own_valid_key_breaks_the_chain(log, people) -> None:
    """Mallory signs a well-formed entry that claims seq 10 and links to seq 9: its signature
    is valid, but the real seq 10 links to seq 9 too and the chain continues from it."""
    raw = lines(log)
    raw.insert(10, forged(people["mallory"], 10, line_hash(raw[9])))
    rewrite(log, raw)
    assert problems(log) == ["entry 10 (seq 10): inserted — entry 11 also follows seq 9 (entry 9) "
                             "and the chain continues from it"]
    trusted = [people["alice"].public(), people["bob"].public()]
    mallory = people["mallory"].fingerprint
    assert problems(log, trusted=trusted) == [
        f"entry 10 (seq 10): signed by 'mallory' ({mallory}), who is not a trusted identity",
        "entry 10 (seq 10): inserted — entry 11 also follows seq 9 (entry 9) and the chain "
        "continues from it"]


def test_an_entry_inserted_with_a_made_up_link_is_named(log, people) -> None:
    raw = lines(log)
    raw.insert(20, forged(people["mallory"], 7, "ab" * 32))
    rewrite(log, raw)
    assert problems(log) == ["entry 20 (seq 7): inserted — it follows no entry of the log and no "
                             "entry follows it"]


def test_an_entry_appended_with_an_unknown_key_is_caught_by_the_trusted_set(log, people) -> None:
    """Appended at the end with a correct link, a forged entry is a valid extension of the
    chain: only knowing who may sign tells it apart."""
    raw = lines(log)
    rewrite(log, [*raw, forged(people["mallory"], N, line_hash(raw[-1]))])
    assert problems(log) == []
    trusted = [people["alice"].public(), people["bob"].public()]
    assert problems(log, trusted=trusted) == [
        f"entry {N} (seq {N}): signed by 'mallory' ({people['mallory'].fingerprint}), who is not "
        "a trusted identity"]


def test_an_entry_passed_off_as_someone_elses_is_named(log, people) -> None:
    """Mallory signs an entry and puts bob's identity on it: bob's key does not verify her
    signature; swapping only the key, not the fingerprint, fails the fingerprint check."""
    raw = lines(log)
    bob = json.loads(raw[0])["entry"]["actor"]
    assert bob["name"] == "bob"
    mine = json.loads(forged(people["mallory"], N - 1, line_hash(raw[-2])))
    mine["entry"]["actor"] = bob
    raw[-1] = canonical(mine) + b"\n"
    rewrite(log, raw)
    assert problems(log) == [f"entry {N - 1} (seq {N - 1}): content changed — signature does not "
                             "verify"]
    mine["entry"]["actor"] = {**bob, "ed25519": json.loads(forged(
        people["mallory"], 0, GENESIS))["entry"]["actor"]["ed25519"]}
    raw[-1] = canonical(mine) + b"\n"
    rewrite(log, raw)
    assert problems(log) == [f"entry {N - 1} (seq {N - 1}): actor fingerprint does not match the "
                             "actor's keys"]


def test_a_truncated_tail_shows_only_against_a_checkpoint(log, tmp_path) -> None:
    checkpoint = log.head()
    raw = lines(log)
    rewrite(log, raw[:-3])
    assert problems(log) == []  # a shorter log is a valid log...
    assert problems(log, checkpoint=checkpoint) == [  # ... but not an extension of the checkpoint
        f"log was truncated or rewritten since checkpoint of size {N}: it now has {N - 3} entries"]


def test_a_rewritten_history_fails_the_consistency_proof(log, people) -> None:
    """Mallory rebuilds the whole log with her own key and adds to it: the chain and signatures
    hold, the checkpoint does not."""
    checkpoint = log.head().to_dict()
    entries = list(log.entries())
    rebuilt = AuditLog(log.directory / "rebuilt", clock=Clock())
    (log.directory / "rebuilt").mkdir()
    for e in entries[:-1] + entries:
        rebuilt.append(people["mallory"], e.action, e.subject, e.details)
    shutil.copy(rebuilt.path, log.path)
    (log.dir / "state.json").unlink()
    assert problems(log) == []
    assert problems(log, checkpoint=checkpoint) == [
        f"log was truncated or rewritten since checkpoint of size {N}: its first {N} entries no "
        "longer have the checkpoint's root (consistency proof fails)"]


def test_a_checkpoint_of_a_grown_log_still_verifies(log, people) -> None:
    checkpoint = log.head()
    log.append(people["alice"], "vault.open", "r")
    assert problems(log, checkpoint=checkpoint) == []
    assert problems(log, checkpoint=SignedTreeHead(0, merkle.EMPTY_ROOT.hex(), "t")) == []


def test_a_signed_checkpoint_round_trips_and_an_altered_one_is_refused(log, people) -> None:
    head = log.head().signed(people["alice"])
    doc = json.loads(json.dumps(head.to_dict()))
    again = SignedTreeHead.from_dict(doc)
    assert again == head and again.signature_ok()
    assert problems(log, checkpoint=doc, trusted=[people["alice"].public(),
                                                  people["bob"].public()]) == []
    doc["time"] = "2030-01-01T00:00:00+00:00"
    assert problems(log, checkpoint=doc) == [
        "the checkpoint's signature does not verify (it was altered)"]
    with pytest.raises(AuditError, match="not an audit checkpoint"):
        SignedTreeHead.from_dict({"size": 1})


def test_parallel_verification_names_the_same_problems_as_one_process(log, people) -> None:
    raw = lines(log)
    raw[3] = raw[3].replace(b"subject-3", b"subject-x")
    del raw[14]
    raw.insert(22, raw[21])
    rewrite(log, raw)
    one = log.verify(workers=1, chunk_bytes=1)
    assert one.problems and one.problems == log.verify().problems
    for chunk in (1, 1500, 4000):
        assert log.verify(workers=2, chunk_bytes=chunk) == one


def test_inclusion_and_consistency_proofs_from_the_log_verify(log) -> None:
    head = log.head()
    root = bytes.fromhex(head.root)
    leaf = merkle.leaf_hash(lines(log)[7].rstrip(b"\n"))
    proof = log.inclusion_proof(7)
    assert merkle.verify_inclusion(leaf, 7, N, proof, root, hashed=True)
    assert not merkle.verify_inclusion(leaf, 8, N, proof, root, hashed=True)
    old = merkle.root([x.rstrip(b"\n") for x in lines(log)[:11]])
    assert merkle.verify_consistency(11, N, old, root, log.consistency_proof(11))
    with pytest.raises(AuditError, match="not in the log"):
        log.inclusion_proof(N)
    with pytest.raises(AuditError, match="truncated or rewritten"):
        log.consistency_proof(N + 1)


# -- the command line ------------------------------------------------------------------------
def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_verify_show_head_and_prove(log, people, capsys, tmp_path) -> None:
    d = str(log.directory)
    for n in ("alice", "bob"):
        identity.save_public(people[n].public(), tmp_path / f"{n}.pub")
    identity.save(people["bob"], tmp_path / "bob.key")
    code, out, _ = run(capsys, "audit", "verify", d, "--trust", str(tmp_path / "alice.pub"),
                       str(tmp_path / "bob.pub"))
    assert code == 0 and out.startswith(f"ok: {N} entries")
    code, out, _ = run(capsys, "audit", "show", d, "--last", "2")
    assert code == 0 and len(out.splitlines()) == 2 and "subject-29" in out
    code, out, _ = run(capsys, "audit", "show", d, "--json")
    assert [e["seq"] for e in json.loads(out)] == list(range(N))
    cp = tmp_path / "head.json"
    code, _, err = run(capsys, "audit", "head", d, "--out", str(cp), "--as",
                       str(tmp_path / "bob.key"))
    assert code == 0 and "keep it" in err and json.loads(cp.read_text())["signer"]["name"] == "bob"
    code, out, _ = run(capsys, "audit", "prove", d, "--index", "7", "--checkpoint", str(cp),
                       "--json")
    doc = json.loads(out)
    assert code == 0 and doc["included"] and doc["consistent"] and doc["tree_size"] == N
    rewrite(log, lines(log)[:-1])
    code, out, _ = run(capsys, "audit", "verify", d, "--checkpoint", str(cp))
    assert code == 1 and out.startswith("FAILED: 1 problem(s)")
    assert f"log was truncated or rewritten since checkpoint of size {N}" in out
    code, out, _ = run(capsys, "audit", "verify", d, "--checkpoint", str(cp), "--json")
    assert code == 1 and json.loads(out)["ok"] is False
    code, _, _ = run(capsys, "audit", "prove", d, "--index", "3", "--checkpoint", str(cp))
    assert code == 1


def test_cli_names_tampering_and_exits_1(log, capsys) -> None:
    raw = lines(log)
    rewrite(log, raw[:17] + raw[18:])
    code, out, _ = run(capsys, "audit", "verify", str(log.directory))
    assert code == 1 and "  - entry after seq 16 is missing" in out


@pytest.mark.parametrize(("argv", "reason"), [
    (["audit", "verify", "nowhere"], "no audit log here"),
    (["audit", "verify", "d", "--checkpoint", "missing.json"], "no such checkpoint file"),
    (["audit", "verify", "d", "--trust", "missing.pub"], "no such identity file"),
    (["audit", "prove", "d", "--index", "99"], f"entry 99 is not in the log ({N} entries)"),
])
def test_cli_bad_input_exits_2_with_one_line(log, capsys, monkeypatch, argv, reason) -> None:
    monkeypatch.chdir(log.directory.parent)
    code, _, err = run(capsys, *argv)
    assert code == 2 and reason in err and err.count("\n") == 1


def test_cli_help_teaches_the_exit_codes(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["audit", "verify", "--help"])
    out = capsys.readouterr().out
    assert "1 tampering found" in out and "example:" in out
