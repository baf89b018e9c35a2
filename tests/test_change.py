"""Change management: safeguard settings change only with a proposer and a distinct approver.

Specification, as the issue states it: the proposer cannot approve their own change; one
approval by a distinct member applies; apply without approval, an expired proposal, a stale
base and a non-member are refused; a tampered safeguards.json (edited payload, dropped or
reordered change, forged approval) is refused by `load_approved`, naming the change; a
threshold out of range is refused; the CLI does the whole round trip.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from asl3.cli import main
from asl3.errors import ChangeError
from asl3.security import identity
from asl3.security.audit import AuditLog
from asl3.security.change import (
    APPROVAL_FORMAT,
    ChangeControl,
    load_approved,
)
from asl3.security.encoding import b64, canonical
from asl3.security.identity import Identity

DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "src" / "asl3" / "models" / "default"
EXEMPTIBLE, NOT_EXEMPTIBLE = "bio.acquisition", "bio.weaponization"  # in the default bundle


@pytest.fixture()
def people() -> dict[str, Identity]:
    """alice, bob and carol are members; mallory is not."""
    return {n: identity.new(n) for n in ("alice", "bob", "carol", "mallory")}


@pytest.fixture()
def cc(tmp_path: Path, people, clock) -> ChangeControl:
    members = [people[n].public() for n in ("alice", "bob", "carol")]
    return ChangeControl.init(tmp_path / "settings", members, 1, by=people["alice"], clock=clock)


def applied(cc: ChangeControl, people, proposer: str, approver: str, kind: str = "thresholds",
            **kw) -> str:
    """Propose, approve by another member and apply one change; returns its id."""
    if kind == "thresholds":
        cid = cc.propose_thresholds(people[proposer], kw.get("values", {"input": 0.95}), "test")
    else:
        cid = cc.propose_exemption(people[proposer], kw.get("principal", "lab-7"), EXEMPTIBLE,
                                   "2027-01-01", "test")
    cc.approve(cid, people[approver])
    cc.apply(cid, people[proposer])
    return cid


def safeguards(cc: ChangeControl) -> dict:
    return json.loads((cc.path / "safeguards.json").read_text())


def rewrite(cc: ChangeControl, doc: dict) -> None:
    (cc.path / "safeguards.json").write_text(json.dumps(doc, indent=2))


# -- the two-party rule ------------------------------------------------------------------------
def test_the_proposer_cannot_approve_their_own_change(cc, people):
    cid = cc.propose_thresholds(people["alice"], {"input": 0.95}, "fewer false positives")
    assert cc.approve(cid, people["alice"])["self_approval"] is True
    with pytest.raises(ChangeError, match=r"0 of the 1 approval.*proposer's own approval does "
                                          r"not count"):
        cc.apply(cid, people["alice"])
    with pytest.raises(ChangeError, match="already approved"):
        cc.approve(cid, people["alice"])
    assert load_approved(cc.path).thresholds == {}


def test_one_approval_by_a_distinct_member_applies(cc, people):
    cid = cc.propose_thresholds(people["alice"], {"input": 0.95, "output": 0.9}, "tuning")
    assert [c["state"] for c in cc.changes()] == ["pending"]
    cc.approve(cid, people["bob"])
    assert [c["state"] for c in cc.changes()] == ["approved"]
    res = cc.apply(cid, people["carol"])  # any member may apply an approved change
    assert res["approvers"] == ["bob"]
    s = load_approved(cc.path)
    assert s.thresholds == {"input": 0.95, "output": 0.9}
    assert (s.change_count, s.change_ids, s.state_hash) == (1, (cid,), res["state"])
    assert (cc.path / "changes" / cid / "applied.json").is_file()
    (row,) = cc.changes()
    assert (row["state"], row["approvals"], row["counted"]) == ("applied", ["bob"], 1)
    with pytest.raises(ChangeError, match="already applied"):
        cc.apply(cid, people["alice"])


def test_apply_without_approval_is_refused(cc, people):
    cid = cc.propose_thresholds(people["alice"], {"input": 0.95}, "x")
    with pytest.raises(ChangeError, match=rf"change {cid} has 0 of the 1 approval"):
        cc.apply(cid, people["bob"])
    assert not (cc.path / "safeguards.json").exists()


def test_an_expired_proposal_cannot_be_approved_or_applied(cc, people, clock):
    late = cc.propose_thresholds(people["alice"], {"input": 0.95}, "x")
    clock.advance(hours=24)
    with pytest.raises(ChangeError, match=rf"change {late} expired at .* propose it again"):
        cc.approve(late, people["bob"])
    approved_in_time = cc.propose_thresholds(people["alice"], {"input": 0.96}, "y")
    cc.approve(approved_in_time, people["bob"])
    clock.advance(hours=25)
    with pytest.raises(ChangeError, match="expired"):
        cc.apply(approved_in_time, people["alice"])
    assert {c["state"] for c in cc.changes()} == {"expired"}


def test_a_stale_proposal_must_be_proposed_again(cc, people):
    """Two approved changes cannot clobber each other: the second was made against the old state."""
    first = cc.propose_thresholds(people["alice"], {"input": 0.95}, "x")
    second = cc.propose_thresholds(people["bob"], {"input": 0.5}, "y")
    cc.approve(first, people["bob"])
    cc.approve(second, people["alice"])
    cc.apply(first, people["alice"])
    with pytest.raises(ChangeError, match=rf"change {second} is stale.*propose it again"):
        cc.apply(second, people["bob"])
    assert {c["id"]: c["state"] for c in cc.changes()} == {first: "applied", second: "stale"}
    assert load_approved(cc.path).thresholds == {"input": 0.95}


def test_non_members_cannot_propose_approve_or_apply(cc, people):
    m = people["mallory"]
    with pytest.raises(ChangeError, match="mallory .* is not a member .* propose"):
        cc.propose_thresholds(m, {"input": 0.5}, "x")
    cid = cc.propose_thresholds(people["alice"], {"input": 0.5}, "x")
    with pytest.raises(ChangeError, match="not a member .* approve"):
        cc.approve(cid, m)
    cc.approve(cid, people["bob"])
    with pytest.raises(ChangeError, match="not a member .* apply"):
        cc.apply(cid, m)
    with pytest.raises(ChangeError, match="may not withdraw"):
        cc.withdraw(cid, m)


def test_a_withdrawn_change_cannot_be_approved_or_applied(cc, people):
    cid = cc.propose_thresholds(people["alice"], {"input": 0.95}, "x")
    cc.approve(cid, people["bob"])
    cc.withdraw(cid, people["carol"])
    with pytest.raises(ChangeError, match="withdrawn by carol"):
        cc.apply(cid, people["alice"])
    assert [c["state"] for c in cc.changes()] == ["withdrawn"]


# -- payloads ------------------------------------------------------------------------------------
@pytest.mark.parametrize("values, message", [
    ({"input": 1.5}, "strictly between 0 and 1"),
    ({"input": 0.0}, "strictly between 0 and 1"),
    ({"input": True}, "strictly between 0 and 1"),
    ({"nope": 0.5}, "no threshold nope in the bundle"),
    ({}, "at least one threshold"),
])
def test_a_threshold_out_of_range_or_unknown_is_refused(cc, people, values, message):
    with pytest.raises(ChangeError, match=message):
        cc.propose_thresholds(people["alice"], values, "x")
    assert not (cc.path / "changes").exists()


def test_exemptions_only_for_exemptible_categories_expire_and_can_be_removed(cc, people, clock):
    with pytest.raises(ChangeError, match="is not exemptible"):
        cc.propose_exemption(people["alice"], "lab-7", NOT_EXEMPTIBLE, "2027-01-01", "x")
    with pytest.raises(ChangeError, match="unknown category"):
        cc.propose_exemption(people["alice"], "lab-7", "bread.recipe", "2027-01-01", "x")
    with pytest.raises(ChangeError, match="in the past"):
        cc.propose_exemption(people["alice"], "lab-7", EXEMPTIBLE, "2026-01-01", "x")
    with pytest.raises(ChangeError, match="no approved exemption"):
        cc.propose_unexemption(people["alice"], "lab-7", EXEMPTIBLE, "x")
    applied(cc, people, "alice", "bob", "exemption")
    s = load_approved(cc.path)
    assert s.exemption_allowed("lab-7", EXEMPTIBLE, clock.now)
    assert not s.exemption_allowed("lab-7", EXEMPTIBLE, datetime(2027, 1, 1, tzinfo=timezone.utc))
    assert not s.exemption_allowed("lab-8", EXEMPTIBLE, clock.now)
    cid = cc.propose_unexemption(people["bob"], "lab-7", EXEMPTIBLE, "done")
    cc.approve(cid, people["carol"])
    cc.apply(cid, people["bob"])
    assert load_approved(cc.path).exemptions == ()


def test_bundles_are_pinned_by_manifest_hash_and_reset_thresholds(cc, people, tmp_path):
    applied(cc, people, "alice", "bob")
    other = tmp_path / "other"  # the default bundle with another manifest (files linked)
    other.mkdir()
    for f in DEFAULT_BUNDLE.iterdir():
        if f.name != "manifest.json":
            (other / f.name).symlink_to(f)
    m = json.loads((DEFAULT_BUNDLE / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**m, "name": "other"}))
    cid = cc.propose_bundle(people["alice"], DEFAULT_BUNDLE, "pin the default")
    cc.approve(cid, people["bob"])
    cc.apply(cid, people["alice"])
    s = load_approved(cc.path)
    assert (s.bundle_name, s.thresholds) == ("cbrn", {})
    assert s.check_bundle(DEFAULT_BUNDLE) == s.bundle_sha256
    with pytest.raises(ChangeError, match=r"bundle .*other is not the approved one \(approved "
                                          rf"sha256 {s.bundle_sha256}"):
        s.check_bundle(other)
    with pytest.raises(ChangeError, match="not the approved one"):
        cc.propose_thresholds(people["alice"], {"input": 0.9}, "x", against=other)
    (other / "input.npz").unlink()
    with pytest.raises(ChangeError, match="does not verify"):
        cc.propose_bundle(people["alice"], other, "broken")


def test_a_roster_change_is_approved_by_the_old_roster_and_governs_what_follows(cc, people):
    dave = identity.new("dave")
    members = [people[n].public() for n in ("alice", "bob", "carol")] + [dave.public()]
    cid = cc.propose_roster(people["alice"], members, 2, "two approvals from now on")
    with pytest.raises(ChangeError, match="not a member"):
        cc.approve(cid, dave)
    cc.approve(cid, people["bob"])
    cc.apply(cid, people["alice"])
    nxt = cc.propose_thresholds(dave, {"input": 0.95}, "x")
    cc.approve(nxt, people["alice"])
    with pytest.raises(ChangeError, match="1 of the 2 approval"):
        cc.apply(nxt, dave)
    cc.approve(nxt, people["carol"])
    cc.apply(nxt, dave)
    assert load_approved(cc.path).approvals == 2
    with pytest.raises(ChangeError, match="at least 1"):
        cc.propose_roster(dave, members, 0, "x")
    with pytest.raises(ChangeError, match="need at least 5 members"):
        cc.propose_roster(dave, members, 4, "x")


# -- load_approved: tampering ------------------------------------------------------------------
def test_an_edited_payload_is_refused_naming_the_change(cc, people):
    cid = applied(cc, people, "alice", "bob")
    doc = safeguards(cc)
    doc["changes"][0]["proposal"]["proposal"]["payload"]["set"]["input"] = 0.5
    rewrite(cc, doc)
    with pytest.raises(ChangeError, match=f"change {cid}: the proposal was altered"):
        load_approved(cc.path)


@pytest.mark.parametrize("how", ["drop", "reorder", "duplicate"])
def test_a_dropped_reordered_or_repeated_change_is_refused_naming_it(cc, people, how):
    first = applied(cc, people, "alice", "bob")
    second = applied(cc, people, "bob", "carol", "exemption")
    doc = safeguards(cc)
    ch = doc["changes"]
    doc["changes"] = {"drop": [ch[1]], "reorder": [ch[1], ch[0]], "duplicate": [ch[0], ch[0]]}[how]
    rewrite(cc, doc)
    named = {"drop": second, "reorder": second, "duplicate": first}[how]
    with pytest.raises(ChangeError, match=f"change {named} .*(state|applied twice)"):
        load_approved(cc.path)


def test_rolling_back_to_an_older_state_is_seen_while_applied_json_remains(cc, people):
    applied(cc, people, "alice", "bob")
    older = safeguards(cc)
    second = applied(cc, people, "bob", "carol", "exemption")
    rewrite(cc, older)
    with pytest.raises(ChangeError, match=f"change {second} was applied .* rolled back"):
        load_approved(cc.path)


def test_a_forged_approval_is_refused_by_apply_and_by_load_approved(cc, people, clock):
    cid = cc.propose_thresholds(people["alice"], {"input": 0.95}, "x")
    bob = people["bob"].public()
    forged = {"format": APPROVAL_FORMAT, "settings": json.loads(
        (cc.path / "change.json").read_text())["roster"]["settings"], "change": cid,
        "proposal_hash": cc.proposal(cid).hash, "approver": bob.fingerprint,
        "approved_at": clock.now.isoformat()}
    doc = {"approval": forged, "signature": b64(people["mallory"].sign(canonical(forged)))}
    path = cc.path / "changes" / cid / "approvals" / f"{bob.fingerprint}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))
    with pytest.raises(ChangeError, match="bob's approval signature does not verify"):
        cc.apply(cid, people["alice"])
    path.unlink()
    cc.approve(cid, people["carol"])
    cc.apply(cid, people["alice"])
    state = safeguards(cc)
    state["changes"][0]["approvals"] = [doc]  # carol's approval swapped for the forgery
    rewrite(cc, state)
    with pytest.raises(ChangeError, match=f"change {cid} .*bob's approval signature does not "
                                          "verify"):
        load_approved(cc.path)


def test_an_approval_for_another_change_cannot_be_reused(cc, people):
    one = cc.propose_thresholds(people["alice"], {"input": 0.95}, "x")
    two = cc.propose_thresholds(people["alice"], {"input": 0.5}, "y")
    cc.approve(one, people["bob"])
    bob = people["bob"].fingerprint
    src = cc.path / "changes" / one / "approvals" / f"{bob}.json"
    dst = cc.path / "changes" / two / "approvals" / f"{bob}.json"
    dst.parent.mkdir(parents=True)
    dst.write_bytes(src.read_bytes())
    with pytest.raises(ChangeError, match="signed for another change"):
        cc.apply(two, people["alice"])


def test_a_history_with_only_the_proposers_own_approval_is_refused(cc, people, clock):
    cid = applied(cc, people, "alice", "bob")
    state = safeguards(cc)
    own = {"format": APPROVAL_FORMAT, "settings": state["settings"], "change": cid,
           "proposal_hash": cc.proposal(cid).hash, "approver": people["alice"].fingerprint,
           "approved_at": clock.now.isoformat()}
    state["changes"][0]["approvals"] = [
        {"approval": own, "signature": b64(people["alice"].sign(canonical(own)))}]
    rewrite(cc, state)
    with pytest.raises(ChangeError, match=f"change {cid} .*0 of the 1 approval.*proposer's own"):
        load_approved(cc.path)


def test_trusted_pins_who_signed_the_roster(cc, people):
    assert load_approved(cc.path, trusted=[people["alice"].public()]).change_count == 0
    with pytest.raises(ChangeError, match="signed by alice .* not one of the trusted"):
        load_approved(cc.path, trusted=[people["bob"].public()])


def test_tampered_change_json_is_refused(cc, people):
    p = cc.path / "change.json"
    doc = json.loads(p.read_text())
    doc["roster"]["members"].append(people["mallory"].public().to_dict())
    p.write_text(json.dumps(doc))
    with pytest.raises(ChangeError, match="change.json: the signature of alice does not verify"):
        load_approved(cc.path)


def test_the_audit_log_records_each_step(cc, people):
    cid = cc.propose_thresholds(people["alice"], {"input": 0.95}, "x")
    cc.approve(cid, people["bob"])
    cc.apply(cid, people["carol"])
    other = cc.propose_thresholds(people["alice"], {"input": 0.9}, "y")
    cc.withdraw(other, people["bob"])
    got = [(e.action, e.subject, e.actor.name) for e in AuditLog(cc.path).entries()]
    assert got[1:] == [("change.propose", cid, "alice"), ("change.approve", cid, "bob"),
                       ("change.apply", cid, "carol"), ("change.propose", other, "alice"),
                       ("change.withdraw", other, "bob")]
    assert got[0][0] == "change.init"


# -- the command line ------------------------------------------------------------------------
def _ids(tmp: Path, *names: str) -> dict[str, str]:
    out = {}
    for n in names:
        assert main(["identity", "new", n, "--out", str(tmp / f"{n}.key")]) == 0
        out[n] = str(tmp / f"{n}.key")
    return out


def test_cli_round_trip(tmp_path, capsys):
    k = _ids(tmp_path, "alice", "bob")
    d = str(tmp_path / "settings")
    assert main(["change", "init", d, "--member", f"{k['alice']}.pub", f"{k['bob']}.pub",
                 "--as", k["alice"]]) == 0
    capsys.readouterr()
    assert main(["change", "propose", d, "--as", k["alice"], "--reason", "lab-7 vetted",
                 "--exempt", f"lab-7:{EXEMPTIBLE}", "--until", "2099-01-01"]) == 0
    cid = capsys.readouterr().out.strip()
    assert main(["change", "approve", d, cid, "--as", k["alice"]]) == 0
    assert "does not count" in capsys.readouterr().err
    assert main(["change", "apply", d, cid, "--as", k["alice"]]) == 2
    assert "0 of the 1 approval" in capsys.readouterr().err
    assert main(["change", "approve", d, cid, "--as", k["bob"]]) == 0
    assert main(["change", "apply", d, cid, "--as", k["bob"]]) == 0
    capsys.readouterr()
    assert main(["change", "list", d, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["id"], row["state"]) == (cid, "applied")
    assert main(["change", "show", d, "--json", "--trust", f"{k['alice']}.pub"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["exemptions"] == [{"principal": "lab-7", "category": EXEMPTIBLE,
                                    "until": "2099-01-01T00:00:00+00:00"}]
    assert main(["change", "show", d]) == 0
    assert "lab-7 from bio.acquisition" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--threshold", "input=1.5"], "strictly between 0 and 1"),
    (["--threshold", "input"], "is not NAME=VALUE"),
    (["--threshold", "input=0.9", "--allow", "ab" * 32], "exactly one change"),
    (["--exempt", f"lab-7:{EXEMPTIBLE}"], "needs --until"),
    (["--exempt", "lab-7", "--until", "2099-01-01"], "PRINCIPAL:CATEGORY"),
    (["--disallow", "xyz"], "not a SHA-256"),
    (["--threshold", "input=0.9", "--pending", "soon"], "--pending 'soon'"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    k = _ids(tmp_path, "alice", "bob")
    d = str(tmp_path / "settings")
    assert main(["change", "init", d, "--member", f"{k['alice']}.pub", f"{k['bob']}.pub",
                 "--as", k["alice"]]) == 0
    capsys.readouterr()
    assert main(["change", "propose", d, "--as", k["alice"], "--reason", "r", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_init_in_a_vault_defaults_to_its_custodians(tmp_path, capsys):
    k = _ids(tmp_path, "alice", "bob")
    v = str(tmp_path / "vault")
    assert main(["vault", "init", v, "--custodian", f"{k['alice']}.pub", f"{k['bob']}.pub",
                 "--as", k["alice"]]) == 0
    assert main(["change", "init", v, "--as", k["alice"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["members"] == ["alice", "bob"]
    with pytest.raises(SystemExit) as e:
        main(["change", "--help"])
    assert e.value.code == 0
    assert "asl3 change approve settings CHANGE" in capsys.readouterr().out
