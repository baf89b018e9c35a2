"""Binary allowlisting under change management: no one allowlists a binary alone.

Specification: the allowlist is the `allowlist` of the approved settings (change.json +
safeguards.json, asl3.security.change). `add`/`remove` only propose; a proposal alone allows
nothing; a member other than the proposer approves and a member applies, then `check` allows
it (the proposer's own approval does not count); removal goes the same way; a tampered history
or an untrusted roster makes `Allowlist.load` refuse; a directory without a roster allows
nothing and refuses `add` with a hint; `scan` finds unlisted executables without following
symlinks; the fapolicyd export has the trust.d and rules.d shapes and leaves out an entry whose
file no longer has the approved hash.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from asl3.cli import main
from asl3.errors import AllowlistError, ChangeError, SecurityError
from asl3.security import allowlist as al_mod
from asl3.security import identity
from asl3.security.allowlist import Allowlist, hash_file, propose_add, propose_remove
from asl3.security.audit import AuditLog
from asl3.security.change import ChangeControl
from asl3.security.identity import Identity


@pytest.fixture()
def people() -> dict[str, Identity]:
    """alice, bob and carol are members of the change roster; mallory is not."""
    return {n: identity.new(n) for n in ("alice", "bob", "carol", "mallory")}


@pytest.fixture()
def sdir(tmp_path: Path, people) -> Path:
    """A settings directory whose changes need one approval besides the proposer's."""
    d = tmp_path / "settings"
    ChangeControl.init(d, [people[n].public() for n in ("alice", "bob", "carol")], 1,
                       by=people["alice"])
    return d


def make_exe(path: Path, body: bytes = b"#!/bin/sh\necho hi\n", mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    path.chmod(mode)
    return path


@pytest.fixture()
def bins(tmp_path: Path) -> dict[str, Path]:
    return {"infer": make_exe(tmp_path / "bin" / "infer", b"#!/bin/sh\necho infer\n"),
            "other": make_exe(tmp_path / "bin" / "other", b"#!/bin/sh\necho other\n")}


def approve_and_apply(d: Path, people, proposed: list[dict], approver: str = "bob",
                      applier: str = "alice") -> None:
    cc = ChangeControl(d)
    for p in proposed:
        cc.approve(p["change"], people[approver])
        cc.apply(p["change"], people[applier])


def allow(d: Path, people, path: Path, note: str = "", proposer: str = "alice",
          approver: str = "bob") -> str:
    """Allowlist one file the only way there is: propose, approve by another member, apply."""
    (p,) = propose_add(d, [path], people[proposer], note=note)
    approve_and_apply(d, people, [p], approver, proposer)
    return p["change"]


def allowed(d: Path, path: Path) -> bool:
    return Allowlist.load(d).check(path)[0]


# -- the two-person rule ----------------------------------------------------------------------
def test_one_members_proposal_alone_does_not_allow_the_binary(sdir, people, bins) -> None:
    proposed = propose_add(sdir, [bins["infer"]], people["alice"], note="inference server")
    sha = hash_file(bins["infer"])[0]
    assert [(p["sha256"], p["path"]) for p in proposed] == [(sha, str(bins["infer"].resolve()))]
    assert not allowed(sdir, bins["infer"]) and Allowlist.load(sdir).entries == []
    cc = ChangeControl(sdir)
    assert [(c["id"], c["state"]) for c in cc.changes()] == [(proposed[0]["change"], "pending")]
    cc.approve(proposed[0]["change"], people["bob"])
    assert not allowed(sdir, bins["infer"])  # approved but not applied: still nothing


def test_after_a_distinct_members_approval_and_apply_the_binary_is_allowed(sdir, people,
                                                                          bins) -> None:
    allow(sdir, people, bins["infer"], note="inference server")
    al = Allowlist.load(sdir)
    ok, sha, entry = al.check(bins["infer"])
    assert ok and sha == hash_file(bins["infer"])[0] and entry is not None
    assert (entry.path, entry.note) == (str(bins["infer"].resolve()), "inference server")
    assert al.check(bins["other"])[0] is False
    with bins["infer"].open("rb") as f:
        assert al.check_stream(f)[0] is True
    # matching is by hash: the same bytes elsewhere are allowed, changed bytes are not
    copy = make_exe(bins["infer"].parent / "copy", bins["infer"].read_bytes())
    assert allowed(sdir, copy)
    bins["infer"].write_bytes(b"#!/bin/sh\necho evil\n")
    assert not allowed(sdir, bins["infer"])


def test_several_files_added_together_are_one_change_approved_and_applied_together(
        sdir, people, bins) -> None:
    proposed = propose_add(sdir, [bins["infer"], bins["other"]], people["alice"])
    assert len({p["change"] for p in proposed}) == 1 and len(proposed) == 2
    approve_and_apply(sdir, people, proposed[:1])
    assert allowed(sdir, bins["infer"]) and allowed(sdir, bins["other"])
    (gone,) = {p["change"] for p in propose_remove(sdir, str(bins["other"]), people["bob"])}
    approve_and_apply(sdir, people, [{"change": gone}], approver="carol", applier="bob")
    assert allowed(sdir, bins["infer"]) and not allowed(sdir, bins["other"])


def test_the_proposers_own_approval_does_not_count(sdir, people, bins) -> None:
    (p,) = propose_add(sdir, [bins["infer"]], people["alice"])
    cc = ChangeControl(sdir)
    assert cc.approve(p["change"], people["alice"])["self_approval"] is True
    with pytest.raises(ChangeError, match="proposer's own approval does not count"):
        cc.apply(p["change"], people["alice"])
    assert not allowed(sdir, bins["infer"])


def test_a_non_member_cannot_propose(sdir, people, bins) -> None:
    with pytest.raises(ChangeError, match="mallory .* not a member"):
        propose_add(sdir, [bins["infer"]], people["mallory"])
    assert not (sdir / "changes").exists()


def test_removal_needs_approval_too(sdir, people, bins) -> None:
    allow(sdir, people, bins["infer"])
    allow(sdir, people, bins["other"], proposer="carol", approver="alice")
    (p,) = propose_remove(sdir, str(bins["infer"]), people["bob"])  # by path
    assert allowed(sdir, bins["infer"])  # proposed only
    cc = ChangeControl(sdir)
    cc.approve(p["change"], people["bob"])
    with pytest.raises(ChangeError, match="own approval does not count"):
        cc.apply(p["change"], people["bob"])
    assert allowed(sdir, bins["infer"])
    approve_and_apply(sdir, people, [p], approver="carol", applier="bob")
    assert not allowed(sdir, bins["infer"]) and allowed(sdir, bins["other"])
    sha = hash_file(bins["other"])[0]
    assert [x["sha256"] for x in propose_remove(sdir, sha.upper(), people["alice"])] == [sha]
    with pytest.raises(AllowlistError, match="not on the approved allowlist"):
        propose_remove(sdir, str(bins["infer"]), people["alice"])


def test_add_refuses_an_unreadable_file_or_an_unchanged_entry(sdir, people, bins) -> None:
    allow(sdir, people, bins["infer"], note="n")
    with pytest.raises(AllowlistError, match="already allowlisted"):
        propose_add(sdir, [bins["infer"]], people["alice"], note="n")
    with pytest.raises(AllowlistError, match="no such file"):
        propose_add(sdir, [bins["other"], bins["infer"].parent / "missing"], people["alice"])
    assert len(ChangeControl(sdir).changes()) == 1  # nothing filed for the bad call


def test_symlinks_are_resolved(sdir, people, bins, tmp_path) -> None:
    link = tmp_path / "link-to-infer"
    link.symlink_to(bins["infer"])
    allow(sdir, people, link)
    assert Allowlist.load(sdir).entries[0].path == str(bins["infer"].resolve())
    assert allowed(sdir, link)
    (p,) = propose_remove(sdir, str(link), people["alice"])  # removing the link removes the target
    assert p["path"] == str(bins["infer"].resolve())


# -- what a reader trusts ---------------------------------------------------------------------
def test_a_tampered_safeguards_json_is_refused(sdir, people, bins) -> None:
    cid = allow(sdir, people, bins["infer"])
    path = sdir / "safeguards.json"
    doc = json.loads(path.read_text())
    doc["changes"][0]["proposal"]["proposal"]["payload"]["sha256"] = hash_file(bins["other"])[0]
    path.write_text(json.dumps(doc))
    with pytest.raises(AllowlistError, match=f"do not verify.*change {cid}.*altered") as e:
        Allowlist.load(sdir)
    assert isinstance(e.value, SecurityError)


def test_trusted_pins_who_signed_the_roster(sdir, people, bins) -> None:
    allow(sdir, people, bins["infer"])
    assert Allowlist.load(sdir, [people["alice"].public()]).check(bins["infer"])[0]
    with pytest.raises(AllowlistError, match="not one of the trusted identities"):
        Allowlist.load(sdir, [people["mallory"].public()])


def test_a_directory_without_a_roster_allows_nothing_and_refuses_add(tmp_path, people,
                                                                     bins) -> None:
    (tmp_path / "allowlist.json").write_text("{}")  # an old single-signer file is not read
    al = Allowlist.load(tmp_path)
    assert not al.has_roster and al.entries == [] and not al.check(bins["infer"])[0]
    with pytest.raises(AllowlistError, match=r"no change roster.*asl3 change init .* --member"):
        propose_add(tmp_path, [bins["infer"]], people["alice"])
    with pytest.raises(AllowlistError, match="not a directory"):
        Allowlist.load(tmp_path / "nowhere")


def test_the_change_log_is_the_audit_record(sdir, people, bins) -> None:
    cid = allow(sdir, people, bins["infer"])
    log = list(AuditLog(sdir).entries())
    assert not [e for e in log if e.action.startswith("allowlist.")]
    assert [(e.actor.name, e.action) for e in log if e.subject == cid] == [
        ("alice", "change.propose"), ("bob", "change.approve"), ("alice", "change.apply")]


# -- scan -------------------------------------------------------------------------------------
def test_scan_finds_unlisted_executables_without_following_symlinks(sdir, people, tmp_path,
                                                                   monkeypatch) -> None:
    root = tmp_path / "tree"
    listed = make_exe(root / "bin" / "listed", b"#!/bin/sh\nlisted\n")
    unlisted = make_exe(root / "bin" / "unlisted", b"#!/bin/sh\nunlisted\n")
    elf = make_exe(root / "lib" / "libx.so", b"\x7fELF\x02\x01\x01" + b"\0" * 64, mode=0o644)
    make_exe(root / "data" / "notes.txt", b"just text\n", mode=0o644)
    (root / "data" / "loop").symlink_to(root)  # a symlink loop
    (root / "data" / "exe-link").symlink_to(unlisted)
    secret = make_exe(root / "secret" / "tool", b"#!/bin/sh\nsecret\n")
    allow(sdir, people, listed)

    real = al_mod._open_regular

    def unreadable(path):
        if str(path) == str(secret):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(al_mod, "_open_regular", unreadable)
    al = Allowlist.load(sdir)
    rep = al.scan(root)
    assert sorted(h["path"] for h in rep.unlisted) == [str(unlisted.resolve()), str(elf.resolve())]
    assert rep.skipped == [{"path": str(secret.resolve()), "reason": "Permission denied"}]
    assert rep.scanned == 5 and rep.executables == 3 and not rep.truncated
    assert all(re.fullmatch("[0-9a-f]{64}", h["sha256"]) for h in rep.unlisted)
    small = al.scan(root, max_files=2)
    assert small.truncated and small.scanned == 2
    with pytest.raises(AllowlistError, match="not a directory"):
        al.scan(listed)


# -- fapolicyd --------------------------------------------------------------------------------
def test_fapolicyd_export_has_the_trust_and_rules_shapes(sdir, people, bins, tmp_path) -> None:
    spaced = make_exe(tmp_path / "has space" / "tool", b"#!/bin/sh\nspace\n")
    changed = make_exe(tmp_path / "bin" / "changed", b"#!/bin/sh\nchanged\n")
    for b in (bins["infer"], bins["other"], spaced, changed):
        allow(sdir, people, b)
    changed.write_bytes(b"#!/bin/sh\nreplaced since approval\n")
    noted = ChangeControl(sdir).propose_allow(people["carol"], "ab" * 32, "vendor tool", "r")
    approve_and_apply(sdir, people, [{"change": noted}], "alice", "carol")
    al = Allowlist.load(sdir)
    trust_text = al.fapolicyd_trust()
    trust = [x for x in trust_text.splitlines() if not x.startswith("#")]
    assert len(trust) == 2
    for line, b in zip(trust, sorted([bins["infer"], bins["other"]]), strict=True):
        path, size, sha = line.split(" ")
        assert path == str(b.resolve()) and int(size) == b.stat().st_size
        assert sha == hash_file(b)[0]
    comments = [x for x in trust_text.splitlines() if x.startswith("# left out")]
    assert len(comments) == 3
    assert any(str(changed) in c and "no longer has the approved hash" in c for c in comments)
    assert any("spaces" in c for c in comments) and any("no path" in c for c in comments)
    rules = [x for x in al.fapolicyd_rules("/srv/weights//llm").splitlines()
             if not x.startswith("#")]
    assert rules == [f"allow perm=open exe={bins['infer'].resolve()} trust=1 : dir=/srv/weights/llm/",
                     f"allow perm=open exe={bins['other'].resolve()} trust=1 : dir=/srv/weights/llm/",
                     "deny_audit perm=open all : dir=/srv/weights/llm/"]
    for bad in ("relative/dir", "/", "/has space"):
        with pytest.raises(AllowlistError, match="weights-path"):
            al.fapolicyd_rules(bad)
    both = al.export_fapolicyd("/srv/weights/llm")
    assert "#### /etc/fapolicyd/trust.d/" in both and "#### /etc/fapolicyd/rules.d/" in both
    assert "rules.d" not in al.export_fapolicyd()


# -- the command line -------------------------------------------------------------------------
def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_round_trip(tmp_path, capsys, monkeypatch, people, bins) -> None:
    monkeypatch.chdir(tmp_path)
    for n in ("alice", "bob", "mallory"):
        identity.save(people[n], f"{n}.key")
        identity.save_public(people[n].public(), f"{n}.key.pub")
    (tmp_path / "settings").mkdir()
    code, out, err = run(capsys, "allowlist", "add", "settings", str(bins["infer"]), "--as",
                         "alice.key")
    assert code == 2 and "asl3 change init settings --member" in err and err.count("\n") == 1
    code, out, _ = run(capsys, "allowlist", "list", "settings")
    assert code == 0 and "no change roster" in out and "nothing is allowed" in out
    assert run(capsys, "change", "init", "settings", "--member", "alice.key.pub", "bob.key.pub",
               "--as", "alice.key")[0] == 0
    infer = str(bins["infer"])
    code, out, err = run(capsys, "allowlist", "add", "settings", infer, "--as", "alice.key",
                         "--note", "server", "--reason", "serving", "--json")
    (p,) = json.loads(out)["proposed"]
    cid = p["change"]
    assert code == 0 and p["note"] == "server" and p["path"] == infer
    assert f"asl3 change approve settings {cid} --as OTHER_MEMBER" in err
    assert f"asl3 change apply settings {cid} --as MEMBER" in err
    assert run(capsys, "allowlist", "check", "settings", infer)[0] == 1  # proposed only
    assert run(capsys, "change", "approve", "settings", cid, "--as", "bob.key")[0] == 0
    assert run(capsys, "change", "apply", "settings", cid, "--as", "alice.key")[0] == 0
    assert run(capsys, "allowlist", "check", "settings", infer)[0] == 0
    code, out, _ = run(capsys, "allowlist", "check", "settings", str(bins["other"]), "--json")
    assert code == 1 and json.loads(out)["allowed"] is False
    code, out, _ = run(capsys, "allowlist", "list", "settings")
    assert code == 0 and "1 entry" in out and f"{infer}  # server" in out
    code, out, _ = run(capsys, "allowlist", "list", "settings", "--json", "--trust",
                       "alice.key.pub")
    assert json.loads(out)["entries"][0]["note"] == "server"
    code, _, err = run(capsys, "allowlist", "list", "settings", "--trust", "mallory.key.pub")
    assert code == 2 and "not one of the trusted identities" in err
    code, out, err = run(capsys, "allowlist", "scan", "settings", str(bins["infer"].parent),
                         "--json")
    assert code == 0 and [h["path"] for h in json.loads(out)["unlisted"]] == [str(bins["other"])]
    code, out, err = run(capsys, "allowlist", "scan", "settings", str(bins["infer"].parent))
    assert code == 0 and str(bins["other"]) in out and "1 not allowlisted" in err
    code, out, _ = run(capsys, "allowlist", "export", "settings", "--format", "fapolicyd",
                       "--weights-path", "/srv/w", "--part", "rules")
    assert code == 0 and out.strip().endswith("deny_audit perm=open all : dir=/srv/w/")
    assert f"exe={infer} trust=1" in out
    code, out, _ = run(capsys, "allowlist", "export", "settings", "--format", "fapolicyd",
                       "--json")
    assert code == 0 and set(json.loads(out)) == {"format", "trust"}
    code, _, err = run(capsys, "allowlist", "remove", "settings", infer, "--as", "mallory.key")
    assert code == 2 and "not a member" in err and err.count("\n") == 1
    code, out, err = run(capsys, "allowlist", "remove", "settings", infer, "--as", "bob.key")
    rid = out.split()[0]
    assert code == 0 and "disallow" in out and f"change approve settings {rid}" in err
    assert run(capsys, "allowlist", "check", "settings", infer)[0] == 0  # until approved
    assert run(capsys, "change", "approve", "settings", rid, "--as", "alice.key")[0] == 0
    assert run(capsys, "change", "apply", "settings", rid, "--as", "bob.key")[0] == 0
    assert run(capsys, "allowlist", "check", "settings", infer)[0] == 1


@pytest.mark.parametrize(("argv", "reason"), [
    (["allowlist", "list", "settings"], "do not verify"),
    (["allowlist", "check", "settings", "missing"], "no such file"),
    (["allowlist", "list", "nowhere"], "not a directory"),
    (["allowlist", "export", "settings", "--format", "fapolicyd", "--part", "rules"],
     "needs --weights-path"),
    (["allowlist", "export", "settings", "--format", "fapolicyd", "--weights-path", "rel"],
     "must be an absolute"),
])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, monkeypatch, people, sdir, bins,
                                             argv, reason) -> None:
    monkeypatch.chdir(tmp_path)
    allow(sdir, people, bins["infer"])
    if reason == "do not verify":
        p = sdir / "safeguards.json"
        p.write_text(p.read_text().replace(str(bins["infer"]), str(bins["other"])))
    code, _, err = run(capsys, *argv)
    assert code == 2 and reason in err and err.count("\n") == 1


def test_help_teaches_the_flow(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["allowlist", "--help"])
    out = capsys.readouterr().out
    assert "asl3 allowlist add vault" in out and "asl3 change approve vault CHANGE" in out
    assert "asl3 change apply vault CHANGE" in out
