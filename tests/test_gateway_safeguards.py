"""`asl3 serve --safeguards DIR`: the gateway runs only approved settings.

An unapproved bundle refuses to start; approved threshold overrides apply; an exemption a key
carries counts only while a change approves it (otherwise the key works as an ordinary key).
Uses the bread proxy constitution, as tests/test_gateway.py does for exemptions."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from asl3 import Guard
from asl3.cli import main
from asl3.data.io import read_jsonl
from asl3.errors import Asl3Error, ChangeError
from asl3.gateway import GatewayConfig, create_app
from asl3.security import identity
from asl3.security.change import ChangeControl
from asl3.store import ExemptionInfo
from servers import FakeUpstream, serve
from test_gateway import PROXY, events, key_for


@pytest.fixture(scope="module")
def pguard(proxy_bundle) -> Guard:
    return Guard.load(proxy_bundle)


@pytest.fixture(scope="module")
def people():
    return {n: identity.new(n) for n in ("alice", "bob")}


@pytest.fixture()
def settings(tmp_path, people, proxy_bundle) -> ChangeControl:
    """Settings whose approved bundle is the proxy bundle."""
    cc = ChangeControl.init(tmp_path / "settings", [p.public() for p in people.values()],
                            by=people["alice"])
    approve(cc, people, cc.propose_bundle(people["alice"], proxy_bundle, "proxy model"))
    return cc


def approve(cc: ChangeControl, people, cid: str) -> None:
    cc.approve(cid, people["bob"])
    cc.apply(cid, people["alice"])


def test_the_settings_directory_travels_to_worker_processes():
    cfg = GatewayConfig(safeguards="/etc/asl3/settings", safeguards_trust=("/etc/asl3/a.pub",))
    assert GatewayConfig.from_env(cfg.to_env()) == cfg


def test_a_roster_signed_by_someone_untrusted_refuses_to_start(settings, people, pguard,
                                                              tmp_path):
    """--safeguards-trust pins the roster's signer: a directory rewritten wholesale with a
    roster and history of someone else's does not start the gateway."""
    for name, who in people.items():
        identity.save_public(who.public(), tmp_path / f"{name}.pub")
    mallory = identity.new("mallory")
    identity.save_public(mallory.public(), tmp_path / "mallory.pub")
    ok = GatewayConfig(upstream="echo", safeguards=str(settings.path),
                       safeguards_trust=(str(tmp_path / "alice.pub"),))
    assert create_app(ok, guard=pguard, use_store=False).state.gateway.safeguards is not None
    pinned_elsewhere = GatewayConfig(upstream="echo", safeguards=str(settings.path),
                                     safeguards_trust=(str(tmp_path / "mallory.pub"),))
    with pytest.raises(ChangeError, match="not one of the trusted identities"):
        create_app(pinned_elsewhere, guard=pguard, use_store=False)
    with pytest.raises(Asl3Error, match="needs --safeguards"):
        GatewayConfig(upstream="echo", safeguards_trust=(str(tmp_path / "alice.pub"),))


def test_a_bundle_that_is_not_the_approved_one_refuses_to_start(settings, guard, pguard, capsys):
    cfg = GatewayConfig(upstream="echo", safeguards=str(settings.path))
    approved = settings.approved().bundle_sha256
    with pytest.raises(ChangeError, match=rf"is not the approved one \(approved sha256 {approved}"):
        create_app(cfg, guard=guard, use_store=False)  # the bundled model, not the proxy one
    assert create_app(cfg, guard=pguard, use_store=False).state.gateway.safeguards is not None
    assert main(["serve", "--upstream", "echo", "--stage2", "off", "--quiet",
                 "--safeguards", str(settings.path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not the approved one" in err and len(err.splitlines()) == 1


def test_approved_threshold_overrides_apply_to_the_gateways_guard_only(settings, people, pguard):
    before = dict(pguard.thresholds)
    approve(settings, people, settings.propose_thresholds(people["alice"], {"input": 0.999},
                                                          "fewer false positives"))
    gw = create_app(GatewayConfig(upstream="echo", safeguards=str(settings.path)), guard=pguard,
                    use_store=False).state.gateway
    assert gw.guard.thresholds == {**before, "input": 0.999}
    assert pguard.thresholds == before  # the shared guard is left as it was


def test_only_approved_exemptions_are_honoured(settings, people, pguard, tmp_path):
    cats = pguard.bundle.categories
    ex_cat = next(c for c, v in cats.items() if v["label"] == "harmful" and v["exemptible"])
    ex_text = next(r.text for r in read_jsonl(PROXY / "train.jsonl")
                   if r.kind == "input" and r.category == ex_cat
                   and pguard.check_input(r.text).blocked)
    now = datetime.now(timezone.utc)
    for who in ("vetted", "approved-only"):
        approve(settings, people, settings.propose_exemption(
            people["alice"], who, ex_cat, now + timedelta(days=2), "vetted lab"))
    db = f"sqlite:///{tmp_path / 'events.db'}"
    until = ExemptionInfo(ex_cat, now + timedelta(days=1))
    vetted = key_for(db, "vetted", until)
    unvetted = key_for(db, "unvetted", until)  # the store says exempt; no change approved it
    approved_only = key_for(db, "approved-only")  # approved, but the key carries no exemption
    fake = FakeUpstream()
    with serve(fake.app) as up:
        cfg = GatewayConfig(upstream=up, db=db, safeguards=str(settings.path))
        with serve(create_app(cfg, guard=pguard)) as url:
            def status(key: str) -> int:
                return httpx.post(f"{url}/chat/completions", timeout=30,
                                  headers={"authorization": f"Bearer {key}"},
                                  json={"model": "say", "messages": [
                                      {"role": "user", "content": ex_text}]}).status_code

            assert status(vetted) == 200
            assert status(unvetted) == 400
            assert status(approved_only) == 400
            health = httpx.get(url.replace("/v1", "/healthz")).json()
            assert health["safeguards"] == settings.approved().state_hash
    got = {e.principal: (e.action, e.exempted) for e in events(db)}
    assert got == {"vetted": ("pass", ex_cat), "unvetted": ("block", None),
                   "approved-only": ("block", None)}


def test_the_key_cache_ends_an_exemption_at_the_sooner_end(settings, people, pguard):
    from asl3.gateway.app import approved_exemptions
    from asl3.guard import Exemption

    ex_cat = next(c for c, v in pguard.bundle.categories.items() if v["exemptible"])
    now = datetime.now(timezone.utc)
    approve(settings, people, settings.propose_exemption(
        people["alice"], "lab", ex_cat, now + timedelta(hours=1), "short"))
    f = approved_exemptions(settings.approved())
    assert f("lab", Exemption(ex_cat, now + timedelta(days=9))).until == now + timedelta(hours=1)
    assert f("lab", Exemption(ex_cat, now + timedelta(minutes=5))).until == \
        now + timedelta(minutes=5)
    assert f("other", Exemption(ex_cat, now + timedelta(days=9))) is None


def test_a_tampered_settings_directory_refuses_to_start(settings, pguard):
    p = Path(settings.path) / "safeguards.json"
    doc = json.loads(p.read_text())
    (rec,) = doc["changes"]
    rec["proposal"]["proposal"]["payload"]["name"] = "renamed"
    p.write_text(json.dumps(doc))
    with pytest.raises(ChangeError, match=f"change {rec['id']}: the proposal was altered"):
        create_app(GatewayConfig(upstream="echo", safeguards=str(settings.path)), guard=pguard,
                   use_store=False)
