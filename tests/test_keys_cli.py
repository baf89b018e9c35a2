"""`asl3 keys`: create, list and revoke the gateway's API keys from the command line.

Keys are printed once; exemptions are checked against the bundle's constitution (only
categories it marks exemptible, always with a future end date); bad input exits 2 with one line.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timedelta, timezone

import pytest

from asl3.cli import main
from asl3.security import identity
from asl3.security.audit import AuditLog
from asl3.store import Store


@pytest.fixture(autouse=True)
def _no_audit_dir_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("ASL3_AUDIT_DIR", raising=False)


@pytest.fixture()
def db(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'keys.db'}"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv: str):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def refused(capsys, *argv: str) -> str:
    """Run a command that must fail as bad input: exit 2 and one line on stderr."""
    try:
        code, _, err = run(capsys, *argv)
    except SystemExit as e:  # argparse's own usage errors
        code, err = e.code, capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in err.splitlines() if not ln.startswith("usage:")]
    assert len(lines) == 1, err
    return lines[0]


def test_add_prints_the_key_once_and_the_store_knows_it_by_hash(capsys, db):
    code, out, err = run(capsys, "keys", "add", "alice", "--db", db)
    key = out.strip()
    assert code == 0 and key.startswith("asl3_") and len(out.splitlines()) == 1
    assert "cannot be shown again" in err and key[:12] in err and key not in err
    with Store(db) as s:
        assert s.lookup_key(key).name == "alice"


def test_add_list_revoke_as_json(capsys, db):
    a = run_json(capsys, "keys", "add", "alice", "--db", db)
    b = run_json(capsys, "keys", "add", "bob", "--db", db)
    assert a["name"] == "alice" and a["prefix"] == a["key"][:12] and a["exemptions"] == []
    listed = run_json(capsys, "keys", "list", "--db", db)
    assert [(k["name"], k["prefix"], k["revoked"]) for k in listed] == [
        ("alice", a["prefix"], None), ("bob", b["prefix"], None)]
    assert a["key"] not in json.dumps(listed)
    assert run_json(capsys, "keys", "revoke", b["prefix"], "--db", db) == {
        "target": b["prefix"], "revoked": 1}
    listed = run_json(capsys, "keys", "list", "--db", db)
    assert listed[1]["revoked"] is not None and listed[0]["revoked"] is None
    with Store(db) as s:
        assert s.lookup_key(b["key"]) is None and s.lookup_key(a["key"]) is not None


def test_list_as_a_table_shows_prefixes_never_keys(capsys, db):
    key = run_json(capsys, "keys", "add", "alice", "--db", db)["key"]
    code, out, _ = run(capsys, "keys", "list", "--db", db)
    assert code == 0 and "alice" in out and key[:12] in out and key not in out


def test_revoke_by_name_revokes_all_of_a_principals_keys(capsys, db):
    keys = [run_json(capsys, "keys", "add", "alice", "--db", db)["key"] for _ in range(2)]
    code, out, _ = run(capsys, "keys", "revoke", "alice", "--db", db)
    assert code == 0 and "revoked 2 keys" in out
    with Store(db) as s:
        assert all(s.lookup_key(k) is None for k in keys)


def test_revoking_nothing_is_an_error(capsys, db):
    run(capsys, "keys", "add", "alice", "--db", db)
    assert "no active key matches 'nobody'" in refused(capsys, "keys", "revoke", "nobody", "--db", db)


def test_exemptions_for_exemptible_categories_until_a_date(capsys, db):
    got = run_json(capsys, "keys", "add", "lab-7", "--exempt", "bio.acquisition",
                   "--exempt", "chem.production", "--until", "2099-12-31", "--db", db)
    assert got["exemptions"] == [
        {"category": "bio.acquisition", "until": "2099-12-31T00:00:00+00:00"},
        {"category": "chem.production", "until": "2099-12-31T00:00:00+00:00"}]
    with Store(db) as s:
        info = s.lookup_key(got["key"])
    assert {e.category for e in info.exemptions} == {"bio.acquisition", "chem.production"}
    assert info.exemptions[0].until == datetime(2099, 12, 31, tzinfo=timezone.utc)


def test_until_may_be_a_datetime_in_any_zone(capsys, db):
    got = run_json(capsys, "keys", "add", "lab", "--exempt", "bio.acquisition",
                   "--until", "2099-06-01T12:00:00+02:00", "--db", db)
    assert got["exemptions"][0]["until"] == "2099-06-01T10:00:00+00:00"
    got = run_json(capsys, "keys", "add", "lab", "--exempt", "bio.acquisition",
                   "--until", "2099-06-01T12:00:00Z", "--db", db)
    assert got["exemptions"][0]["until"] == "2099-06-01T12:00:00+00:00"


def test_a_non_exemptible_category_is_refused_naming_the_exemptible_ones(capsys, db):
    line = refused(capsys, "keys", "add", "x", "--exempt", "bio.weaponization",
                   "--until", "2099-01-01", "--db", db)
    assert "'bio.weaponization' is not exemptible" in line and "bio.acquisition" in line
    line = refused(capsys, "keys", "add", "x", "--exempt", "bio.education",  # harmless class
                   "--until", "2099-01-01", "--db", db)
    assert "'bio.education' is not exemptible" in line
    with Store(db) as s:
        assert s.list_keys() == []  # nothing was created


def test_an_unknown_category_is_refused(capsys, db):
    line = refused(capsys, "keys", "add", "x", "--exempt", "bio.nonsense",
                   "--until", "2099-01-01", "--db", db)
    assert "unknown category 'bio.nonsense'" in line and "bio.acquisition" in line


def test_an_exemption_needs_a_future_end_date(capsys, db):
    assert "--exempt needs --until" in refused(
        capsys, "keys", "add", "x", "--exempt", "bio.acquisition", "--db", db)
    yesterday = (datetime.now(timezone.utc) - timedelta(days=1)).date().isoformat()
    assert "in the past" in refused(capsys, "keys", "add", "x", "--exempt", "bio.acquisition",
                                    "--until", yesterday, "--db", db)
    assert "not an ISO date" in refused(capsys, "keys", "add", "x", "--exempt",
                                        "bio.acquisition", "--until", "next week", "--db", db)
    assert "--until goes with --exempt" in refused(
        capsys, "keys", "add", "x", "--until", "2099-01-01", "--db", db)


def test_a_missing_bundle_is_one_line(capsys, db, tmp_path):
    refused(capsys, "keys", "add", "x", "--exempt", "bio.acquisition", "--until", "2099-01-01",
            "--bundle", str(tmp_path / "nope"), "--db", db)


def test_a_bad_db_is_one_line(capsys, tmp_path):
    line = refused(capsys, "keys", "list", "--db", f"sqlite:///{tmp_path}/no/such/dir/x.db")
    assert "cannot open the store" in line


def test_the_db_defaults_to_asl3_db(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ASL3_DB", f"sqlite:///{tmp_path / 'env.db'}")
    run_json(capsys, "keys", "add", "alice")
    assert [k["name"] for k in run_json(capsys, "keys", "list")] == ["alice"]


def test_keys_without_an_action_is_usage_error(capsys):
    assert "ACTION" in refused(capsys, "keys")


# -- the audit log: every key action signed and logged when an audit directory is given -------
@pytest.fixture()
def officer(tmp_path):
    me = identity.new("officer")
    identity.save(me, tmp_path / "officer.key")
    return me, str(tmp_path / "officer.key")


def _no_key_material(audit_dir, *keys: str) -> None:
    text = (audit_dir / "audit" / "log.jsonl").read_text()
    for k in keys:
        assert k not in text and hashlib.sha256(k.encode()).hexdigest() not in text


def test_add_and_revoke_with_audit_are_signed_entries_without_key_material(
        capsys, db, tmp_path, officer):
    me, keyfile = officer
    audit = tmp_path / "security"
    audit.mkdir()
    a = run_json(capsys, "keys", "add", "lab-7", "--exempt", "bio.acquisition", "--until",
                 "2099-12-31", "--db", db, "--audit", str(audit), "--as", keyfile)
    code, out, err = run(capsys, "keys", "add", "bob", "--db", db, "--audit", str(audit),
                         "--as", keyfile)
    bob = out.strip()
    assert code == 0 and bob.startswith("asl3_") and "cannot be shown again" in err
    assert run_json(capsys, "keys", "revoke", "lab-7", "--db", db, "--audit", str(audit),
                    "--as", keyfile) == {"target": "lab-7", "revoked": 1}
    log = AuditLog(audit)
    assert log.verify(trusted=[me.public()]).ok
    entries = list(log.entries())
    assert [(e.action, e.subject) for e in entries] == [
        ("keys.add", "lab-7"), ("keys.add", "bob"), ("keys.revoke", "lab-7")]
    assert all(e.actor.fingerprint == me.public().fingerprint for e in entries)
    assert entries[0].details == {
        "prefix": a["prefix"], "store": db,
        "exemptions": [{"category": "bio.acquisition", "until": "2099-12-31T00:00:00+00:00"}]}
    assert entries[1].details["prefix"] == bob[:12] and entries[1].details["exemptions"] == []
    assert entries[2].details == {"revoked": 1, "store": db}
    _no_key_material(audit, a["key"], bob)


def test_the_audit_dir_defaults_to_asl3_audit_dir(capsys, db, tmp_path, officer, monkeypatch):
    _, keyfile = officer
    audit = tmp_path / "env-audit"
    audit.mkdir()
    monkeypatch.setenv("ASL3_AUDIT_DIR", str(audit))
    key = run_json(capsys, "keys", "add", "alice", "--db", db, "--as", keyfile)["key"]
    code, _, _ = run(capsys, "keys", "revoke", key[:12], "--db", db, "--as", keyfile)
    assert code == 0
    log = AuditLog(audit)
    assert log.verify().ok
    assert [(e.action, e.subject) for e in log.entries()] == [
        ("keys.add", "alice"), ("keys.revoke", key[:12])]
    _no_key_material(audit, key)


def test_an_audit_dir_without_as_is_refused_before_anything_changes(capsys, db, tmp_path,
                                                                      monkeypatch):
    audit = tmp_path / "security"
    audit.mkdir()
    assert "--as KEYFILE" in refused(capsys, "keys", "add", "alice", "--db", db,
                                     "--audit", str(audit))
    monkeypatch.setenv("ASL3_AUDIT_DIR", str(audit))
    assert "ASL3_AUDIT_DIR" in refused(capsys, "keys", "add", "alice", "--db", db)
    assert "--as KEYFILE" in refused(capsys, "keys", "revoke", "alice", "--db", db)
    with Store(db) as s:
        assert s.list_keys() == []
    assert not (audit / "audit").exists()


def test_as_without_an_audit_dir_and_a_missing_audit_dir_are_refused(capsys, db, tmp_path,
                                                                     officer):
    _, keyfile = officer
    assert "--audit DIR" in refused(capsys, "keys", "add", "alice", "--db", db, "--as", keyfile)
    assert "no such directory" in refused(capsys, "keys", "add", "alice", "--db", db, "--as",
                                          keyfile, "--audit", str(tmp_path / "typo"))
    with Store(db) as s:
        assert s.list_keys() == []


def test_an_audit_log_that_cannot_be_written_still_prints_the_key(capsys, db, tmp_path,
                                                                  officer):
    """The key was created: it is printed, and exit 2 says in one line that it was not logged.
    The audit dir is read-only, and log.jsonl a directory so that it fails even as root."""
    _, keyfile = officer
    audit = tmp_path / "security"
    (audit / "audit" / "log.jsonl").mkdir(parents=True)
    (audit / "audit").chmod(0o500)
    audit.chmod(0o500)
    try:
        code, out, err = run(capsys, "keys", "add", "alice", "--db", db, "--audit", str(audit),
                             "--as", keyfile)
        assert code == 2 and len(err.splitlines()) == 1, err
        key = out.strip()
        assert key.startswith("asl3_") and "NOT logged" in err and key[:12] in err
        assert key not in err
        with Store(db) as s:
            assert s.lookup_key(key).name == "alice"
        code, out, err = run(capsys, "keys", "revoke", "alice", "--db", db, "--audit",
                             str(audit), "--as", keyfile)
        assert code == 2 and "revoked 1 key" in out and len(err.splitlines()) == 1, err
        assert "NOT logged" in err
        with Store(db) as s:
            assert s.lookup_key(key) is None
    finally:
        audit.chmod(0o700)
        (audit / "audit").chmod(0o700)
    assert os.listdir(audit / "audit" / "log.jsonl") == []
