"""Egress unblocks as approved changes (issue 5: "`asl3 egress unblock CLIENT` requires an approved
change once the vault issue's change management exists").

Specification: an "unblock" change names one client address (validated, canonical) and a time
until which it may be used; it is proposed, approved by a member other than the proposer and
applied like any change, and `load_approved` lists it. The proxy (`--safeguards DIR`) lifts a
block only with such a change, checked at the proxy: no change, a proposed but unapproved one,
or one for another client is refused; the right one is accepted once, and a replay (the same
request, or the same change again, after a restart too) is refused. A change proposed before the
block began, or past its `until`, is refused; without `--safeguards` every unblock is refused,
saying that change management is required.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from pathlib import Path

import pytest

from asl3.cli import main
from asl3.egress.admin import NO_CHANGE_MANAGEMENT, check_change, signed_unblock
from asl3.egress.proxy import EgressProxy, ProxyConfig
from asl3.errors import ChangeError, EgressError
from asl3.security import identity
from asl3.security.change import ChangeControl, check_payload, load_approved
from asl3.security.identity import Identity

A, B = "127.0.0.2", "127.0.0.3"  # two secure hosts (Linux routes all of 127/8 to loopback)
PROXY_ID = identity.new("proxy")  # signs the proxy's audit entries


@pytest.fixture()
def people() -> dict[str, Identity]:
    """alice, bob and carol are members; mallory is not."""
    return {n: identity.new(n) for n in ("alice", "bob", "carol", "mallory")}


@pytest.fixture()
def cc(tmp_path: Path, people) -> ChangeControl:  # the real clock: the proxy compares with it
    members = [people[n].public() for n in ("alice", "bob", "carol")]
    return ChangeControl.init(tmp_path / "settings", members, 1, by=people["alice"])


def applied_unblock(cc: ChangeControl, people, client: str, proposer: str = "alice",
                    approver: str = "bob") -> str:
    cid = cc.propose_unblock(people[proposer], client, "false positive: nightly backup")
    cc.approve(cid, people[approver])
    cc.apply(cid, people[proposer])
    return cid


# -- the change kind ---------------------------------------------------------------------------
def test_an_applied_unblock_is_listed_by_load_approved(cc, people):
    cid = cc.propose_unblock(people["alice"], " 2001:DB8::7 ", "backup")
    assert load_approved(cc.path).unblocks == ()          # proposed is not approved
    cc.approve(cid, people["alice"])
    with pytest.raises(ChangeError, match="proposer's own approval does not count"):
        cc.apply(cid, people["alice"])
    cc.approve(cid, people["carol"])
    res = cc.apply(cid, people["bob"])
    assert res["summary"].startswith("unblock egress client 2001:db8::7 (usable once")
    (u,) = load_approved(cc.path).unblocks
    assert (u.change, u.client, u.reason, u.proposer, u.approvers) == (
        cid, "2001:db8::7", "backup", "alice", ("carol",))
    assert timedelta(hours=47) < u.until - u.proposed_at <= timedelta(hours=48)
    assert load_approved(cc.path).unblock(cid) == u
    assert load_approved(cc.path).to_dict()["unblocks"][0]["client"] == "2001:db8::7"


@pytest.mark.parametrize("client, until, message", [
    ("10.0.0.300", None, "is not an IP address"),
    ("host.example", None, "is not an IP address"),
    ("10.0.0.7", "2020-01-01", "in the past"),
    ("10.0.0.7", "2099-01-01", "more than 7 days ahead"),
])
def test_a_bad_unblock_is_refused_when_proposed(cc, people, client, until, message):
    with pytest.raises(ChangeError, match=message):
        cc.propose_unblock(people["alice"], client, "x", until=until)
    assert not (cc.path / "changes").exists()


@pytest.mark.parametrize("payload, message", [
    ({"client": "10.0.0.7"}, "exactly the fields client, until"),
    ({"client": "010.0.0.7", "until": "2026-01-01T00:00:00+00:00"}, "not an IP address"),
    ({"client": "2001:DB8::1", "until": "2026-01-01T00:00:00+00:00"}, "canonical form"),
    ({"client": "10.0.0.7", "until": "soon"}, "not an ISO time"),
])
def test_unblock_payloads_are_checked_structurally(payload, message):
    with pytest.raises(ChangeError, match=message):
        check_payload("unblock", payload)


def test_an_edited_unblock_in_safeguards_json_is_refused(cc, people):
    cid = applied_unblock(cc, people, A)
    doc = json.loads((cc.path / "safeguards.json").read_text())
    doc["changes"][0]["proposal"]["proposal"]["payload"]["client"] = B
    (cc.path / "safeguards.json").write_text(json.dumps(doc))
    with pytest.raises(ChangeError, match=f"change {cid}: the proposal was altered"):
        load_approved(cc.path)


def test_check_change_refuses_an_expired_change_and_one_older_than_the_block(cc, people):
    cid = applied_unblock(cc, people, A)
    approved = load_approved(cc.path)
    u = approved.unblock(cid)
    req = {"client": A, "change": cid}
    now = time.time()
    assert check_change(approved, str(cc.path), req, {}, now - 10, now) == u
    with pytest.raises(EgressError, match="could be used until"):
        check_change(approved, str(cc.path), req, {}, now, u.until.timestamp() + 1)
    with pytest.raises(EgressError, match="before this block began"):  # pre-approved
        check_change(approved, str(cc.path), req, {}, now + 3600, now + 3600)
    with pytest.raises(LookupError, match="is not blocked"):
        check_change(approved, str(cc.path), req, {}, None, now)
    with pytest.raises(EgressError, match="already used"):
        check_change(approved, str(cc.path), req, {cid: now}, now - 10, now)


def test_cli_proposes_and_shows_an_unblock(tmp_path, capsys):
    keys = {}
    for n in ("alice", "bob"):
        assert main(["identity", "new", n, "--out", str(tmp_path / f"{n}.key")]) == 0
        keys[n] = str(tmp_path / f"{n}.key")
    d = str(tmp_path / "settings")
    assert main(["change", "init", d, "--member", f"{keys['alice']}.pub", f"{keys['bob']}.pub",
                 "--as", keys["alice"]]) == 0
    capsys.readouterr()
    assert main(["change", "propose", d, "--as", keys["alice"], "--reason", "r",
                 "--threshold", "input=0.9", "--until", "2099-01-01"]) == 2
    assert "--until goes only with --exempt or --unblock" in capsys.readouterr().err
    assert main(["change", "propose", d, "--as", keys["alice"], "--reason", "backup",
                 "--unblock", "10.0.0.7"]) == 0
    cid = capsys.readouterr().out.strip()
    assert main(["change", "approve", d, cid, "--as", keys["bob"]]) == 0
    assert main(["change", "apply", d, cid, "--as", keys["bob"]]) == 0
    capsys.readouterr()
    assert main(["change", "show", d]) == 0
    assert f"egress unblock {cid}: 10.0.0.7 until" in capsys.readouterr().out


# -- the proxy ---------------------------------------------------------------------------------
async def _sink(reader, writer):
    with suppress(ConnectionError):
        while await reader.read(65536):
            pass
    writer.close()


@asynccontextmanager
async def proxy_on(tmp_path, safeguards, record="alerts"):
    """A proxy with a 100 kB budget; it records unblocks in an alert file or an audit log."""
    srv = await asyncio.start_server(_sink, "127.0.0.1", 0)
    logs = ({"alerts_path": str(tmp_path / "alerts.jsonl")} if record == "alerts" else
            {"audit_dir": str(tmp_path), "audit_identity": PROXY_ID})
    cfg = ProxyConfig(host="127.0.0.1", port=0, allow=["127.0.0.1"],
                      budgets=[(100_000, 60.0)], metrics_host="127.0.0.1",
                      safeguards=str(safeguards) if safeguards else None, **logs)
    proxy = EgressProxy(cfg)
    await proxy.start()
    proxy.sink_port = srv.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        await proxy.stop()
        srv.close()


async def tunnel(proxy, src):
    r, w = await asyncio.open_connection("127.0.0.1", proxy.cfg.port, local_addr=(src, 0))
    w.write(f"CONNECT 127.0.0.1:{proxy.sink_port} HTTP/1.1\r\n\r\n".encode())
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    return r, w, head.decode()


async def block(proxy, src):
    """Send over src's budget until the proxy blocks it."""
    r, w, head = await tunnel(proxy, src)
    assert head.startswith("HTTP/1.1 200")
    with suppress(ConnectionError, asyncio.IncompleteReadError):
        for _ in range(100):
            w.write(b"\0" * 65536)
            await w.drain()
        await asyncio.wait_for(r.readexactly(1), 5)
    w.close()
    assert src in proxy.blocked


async def post(proxy, body):
    r, w = await asyncio.open_connection("127.0.0.1", proxy.cfg.metrics_port)
    data = json.dumps(body).encode()
    w.write(b"POST /unblock HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(data), data))
    out = (await r.read()).decode()
    w.close()
    return int(out.split()[1]), json.loads(out.split("\r\n\r\n", 1)[1])


def test_the_proxy_lifts_a_block_only_with_an_applied_unblock_change_once(tmp_path, cc, people):
    alice, mallory = people["alice"], people["mallory"]
    pending = cc.propose_unblock(alice, A, "proposed, never approved")
    approved_only = cc.propose_unblock(people["bob"], A, "approved, not applied")
    cc.approve(approved_only, people["carol"])
    for_b = applied_unblock(cc, people, B)

    async def main_():
        async with proxy_on(tmp_path, cc.path) as proxy:
            await block(proxy, A)
            # no change at all, an unknown id, a change that is not an unblock
            status, out = await post(proxy, signed_unblock(alice, A, "0" * 24))
            assert status == 403 and "not an applied unblock change" in out["error"]
            # proposed but not approved; approved but not applied (and now stale)
            for cid in (pending, approved_only):
                status, out = await post(proxy, signed_unblock(alice, A, cid))
                assert status == 403 and "proposed but not applied" in out["error"], out
            # applied, for another client
            status, out = await post(proxy, signed_unblock(alice, A, for_b))
            assert status == 403 and f"unblocks {B}, not {A}" in out["error"]
            assert A in proxy.blocked
            right = applied_unblock(cc, people, A, "carol", "bob")
            # the right change, used by someone outside the roster
            status, out = await post(proxy, signed_unblock(mallory, A, right))
            assert status == 403 and "not a member of the change roster" in out["error"]
            # a request altered after signing
            forged = signed_unblock(alice, B, right)
            forged["request"]["client"] = A
            assert (await post(proxy, forged))[0] == 403
            # the right one: accepted once
            good = signed_unblock(alice, A, right, "ticket 7")
            status, out = await post(proxy, good)
            assert status == 200, out
            assert (out["unblocked"], out["by"], out["change"], out["approvers"]) == (
                A, "alice", right, ["bob"])
            assert A not in proxy.blocked
            _, w, head = await tunnel(proxy, A)
            assert head.startswith("HTTP/1.1 200")
            w.close()
            # replays: the same request, and the same change in a new request
            status, out = await post(proxy, good)
            assert status == 403 and "replay" in out["error"]
            await block(proxy, A)  # blocked again: the used change does not lift it
            status, out = await post(proxy, signed_unblock(people["bob"], A, right))
            assert status == 403 and "already used" in out["error"]
            assert A in proxy.blocked
        # a restarted proxy still knows the change was used, and that A is still blocked
        # (both read back from the alert file)
        async with proxy_on(tmp_path, cc.path) as proxy:
            assert right in proxy.used_changes
            assert A in proxy.blocked
            status, out = await post(proxy, signed_unblock(alice, A, right))
            assert status == 403 and "already used" in out["error"]
            # not blocked: 409, and the change stays unused
            spare = applied_unblock(cc, people, B, "alice", "carol")
            status, out = await post(proxy, signed_unblock(alice, B, spare))
            assert status == 409 and spare not in proxy.used_changes
        return right

    right = asyncio.run(main_())
    events = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    unblocks = [e for e in events if e["event"] == "unblock"]
    assert len(unblocks) == 1
    assert (unblocks[0]["change"], unblocks[0]["client"], unblocks[0]["by"],
            unblocks[0]["approvers"], unblocks[0]["note"]) == (right, A, "alice", ["bob"],
                                                              "ticket 7")


def test_a_change_used_is_remembered_through_the_audit_log_across_a_restart(tmp_path, cc,
                                                                            people):
    async def main_():
        async with proxy_on(tmp_path, cc.path, "audit") as proxy:
            await block(proxy, A)
            cid = applied_unblock(cc, people, A)
            assert (await post(proxy, signed_unblock(people["alice"], A, cid)))[0] == 200
        async with proxy_on(tmp_path, cc.path, "audit") as proxy:
            assert cid in proxy.used_changes
            await block(proxy, A)
            status, out = await post(proxy, signed_unblock(people["alice"], A, cid))
            assert status == 403 and "already used" in out["error"]
        return cid

    cid = asyncio.run(main_())
    from asl3.security.audit import AuditLog

    entries = [e for e in AuditLog(tmp_path).entries() if e.action == "egress.unblock"]
    assert [(e.subject, e.details["change"]) for e in entries] == [(A, cid)]


def test_without_change_management_every_unblock_is_refused(tmp_path, cc, people):
    cid = applied_unblock(cc, people, A)

    async def main_():
        async with proxy_on(tmp_path, None) as proxy:
            await block(proxy, A)
            status, out = await post(proxy, signed_unblock(people["alice"], A, cid))
            assert status == 403 and out["error"] == NO_CHANGE_MANAGEMENT
            assert "change management" in out["error"] and "--safeguards" in out["error"]
            assert A in proxy.blocked

    asyncio.run(main_())


def test_cli_unblock_checks_locally_then_the_proxy_decides(tmp_path, cc, people, capsys):
    key = tmp_path / "alice.key"
    identity.save(people["alice"], key)
    for_b = applied_unblock(cc, people, B)

    async def main_():
        async with proxy_on(tmp_path, cc.path) as proxy:
            await block(proxy, A)
            right = applied_unblock(cc, people, A, "carol", "bob")  # approved after the block
            base = ["egress", "unblock", A, "--admin", f"127.0.0.1:{proxy.cfg.metrics_port}",
                    "--as", str(key)]
            assert await asyncio.to_thread(main, [*base, "--change", for_b, "--safeguards",
                                                  str(cc.path)]) == 2
            assert f"unblocks {B}, not {A}" in capsys.readouterr().err
            assert await asyncio.to_thread(main, [*base, "--change", for_b]) == 2  # proxy says
            assert f"refused (403): change {for_b} unblocks {B}" in capsys.readouterr().err
            assert await asyncio.to_thread(main, [*base, "--change", right, "--safeguards",
                                                  str(cc.path)]) == 0
            assert f"unblocked {A} with change {right}" in capsys.readouterr().out
            assert A not in proxy.blocked

    asyncio.run(main_())


def test_cli_proxy_with_safeguards_wants_a_record_of_used_changes(tmp_path, cc, capsys):
    args = ["egress", "proxy", "--listen", "127.0.0.1:0", "--rate", "unlimited",
            "--safeguards", str(cc.path)]
    assert main(args) == 2
    assert "--safeguards needs --alerts FILE or --audit-dir DIR" in capsys.readouterr().err
    (cc.path / "change.json").write_text("{}")
    assert main([*args, "--alerts", str(tmp_path / "a.jsonl")]) == 2
    assert "change.json" in capsys.readouterr().err  # bad settings: refused before listening
