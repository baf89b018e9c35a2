"""`asl3 change`: thin parsing and printing over asl3.security.change."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from asl3.cli.common import (
    UsageError,
    add_as,
    dir_actions,
    group,
    load_identity,
    parse_duration,
)


def _control(a: argparse.Namespace) -> Any:
    from asl3.security.change import ChangeControl

    return ChangeControl(a.dir)


def cmd_change_init(a: argparse.Namespace) -> int:
    from asl3.security import identity
    from asl3.security.change import ChangeControl

    members = [identity.load_public(m) for m in a.member or []]
    if not members:
        if not (Path(a.dir) / "vault.json").is_file():
            raise UsageError("give the members: --member PUBFILE ... (in a vault directory the "
                             "custodians are the default)")
        from asl3.security.vault import Vault

        members = list(Vault(a.dir).custodians.values())
    cc = ChangeControl.init(a.dir, members, a.approvals, by=load_identity(a))
    out = {"dir": str(cc.path), "members": [m.name for m in members], "approvals": a.approvals}
    print(json.dumps(out) if a.json else
          f"{cc.path}: changes need {a.approvals} approval(s) from members other than the "
          f"proposer ({', '.join(out['members'])})")
    return 0


def _pair(text: str, flag: str) -> tuple[str, str]:
    principal, sep, category = text.rpartition(":")
    if not sep or not principal.strip() or not category.strip():
        raise UsageError(f"{flag} {text!r} is not PRINCIPAL:CATEGORY")
    return principal.strip(), category.strip()


def _threshold(text: str) -> tuple[str, float]:
    name, eq, value = text.partition("=")
    try:
        if not eq:
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise UsageError(f"--threshold {text!r} is not NAME=VALUE (e.g. input=0.92)") from None


def cmd_change_propose(a: argparse.Namespace) -> int:
    from asl3.security import identity

    kinds = [k for k in ("bundle", "threshold", "exempt", "unexempt", "allow", "disallow",
                         "member", "unblock") if getattr(a, k)]
    if len(kinds) != 1:
        raise UsageError("give exactly one change: --bundle, --threshold, --exempt, --unexempt, "
                         "--allow, --disallow, --member or --unblock")
    kind = kinds[0]
    if kind == "exempt" and a.until is None:
        raise UsageError("--exempt needs --until DATE (exemptions always expire)")
    if a.until is not None and kind not in ("exempt", "unblock"):
        raise UsageError("--until goes only with --exempt or --unblock")
    if a.approvals is not None and kind != "member":
        raise UsageError("--approvals goes with --member (a roster change)")
    try:
        pending = parse_duration(a.pending)
    except UsageError:
        raise UsageError(f"--pending {a.pending!r} is not a duration like 4h or 2d") from None
    cc, me = _control(a), load_identity(a)
    kw: dict[str, Any] = {"pending": pending}
    if a.against and kind not in ("threshold", "exempt"):
        raise UsageError("--against goes with --threshold or --exempt")
    if kind in ("threshold", "exempt"):
        kw["against"] = a.against
    if kind == "bundle":
        cid = cc.propose_bundle(me, a.bundle, a.reason, **kw)
    elif kind == "threshold":
        values = dict(_threshold(t) for t in a.threshold)
        cid = cc.propose_thresholds(me, values, a.reason, **kw)
    elif kind == "exempt":
        principal, category = _pair(a.exempt, "--exempt")
        cid = cc.propose_exemption(me, principal, category, a.until, a.reason, **kw)
    elif kind == "unexempt":
        principal, category = _pair(a.unexempt, "--unexempt")
        cid = cc.propose_unexemption(me, principal, category, a.reason, **kw)
    elif kind == "allow":
        sha, _, note = a.allow.partition(":")
        cid = cc.propose_allow(me, sha, note, a.reason, **kw)
    elif kind == "disallow":
        cid = cc.propose_disallow(me, a.disallow, a.reason, **kw)
    elif kind == "unblock":
        cid = cc.propose_unblock(me, a.unblock, a.reason, until=a.until, **kw)
    else:
        members = [identity.load_public(m) for m in a.member]
        k = a.approvals if a.approvals is not None else cc.approved().approvals
        cid = cc.propose_roster(me, members, k, a.reason, **kw)
    print(json.dumps({"change": cid}) if a.json else cid)
    return 0


def cmd_change_approve(a: argparse.Namespace) -> int:
    res = _control(a).approve(a.change, load_identity(a))
    if res["self_approval"]:
        sys.stderr.write("asl3: recorded, but approving your own change does not count: "
                         "another member must approve it\n")
    print(json.dumps(res) if a.json else f"approved {a.change} as {res['approver']}")
    return 0


def cmd_change_apply(a: argparse.Namespace) -> int:
    res = _control(a).apply(a.change, load_identity(a))
    print(json.dumps(res) if a.json else
          f"applied {a.change}: {res['summary']} (approved by {', '.join(res['approvers'])}); "
          f"state {res['state'][:16]}...")
    return 0


def cmd_change_withdraw(a: argparse.Namespace) -> int:
    _control(a).withdraw(a.change, load_identity(a))
    print(json.dumps({"change": a.change, "withdrawn": True}) if a.json
          else f"withdrew {a.change}")
    return 0


def cmd_change_list(a: argparse.Namespace) -> int:
    rows = _control(a).changes()
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"changes in {a.dir}")
    for c in ("id", "state", "approvals", "proposer", "change", "reason"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["id"], r["state"], f"{r.get('counted', '-')}/{r.get('needed', '-')}",
                  r.get("proposer", "?"), r.get("summary", r.get("detail", "")),
                  r.get("reason", ""))
    Console().print(t)
    return 0


def cmd_change_show(a: argparse.Namespace) -> int:
    from asl3.security import identity
    from asl3.security.change import load_approved

    trusted = [identity.load_public(p) for p in a.trust] if a.trust else None
    s = load_approved(a.dir, trusted=trusted).to_dict()
    if a.json:
        print(json.dumps(s, indent=2))
        return 0
    b = s["bundle"]
    lines = [f"{a.dir}: {s['changes']} applied change(s), state {s['state']}",
             f"roster: {', '.join(m['name'] for m in s['members'])}; {s['approvals']} "
             "approval(s) besides the proposer",
             f"bundle: {b['name']} sha256 {b['sha256']}" if b else "bundle: none approved (any "
             "verified bundle)",
             "thresholds: " + (", ".join(f"{k}={v}" for k, v in sorted(s["thresholds"].items()))
                               or "the bundle's own")]
    lines += [f"exemption: {e['principal']} from {e['category']} until {e['until']}"
              for e in s["exemptions"]] or ["exemptions: none approved"]
    lines += [f"allowed: {e['sha256']}  {e['path']}" for e in s["allowlist"]] \
        or ["allowlist: empty"]
    lines += [f"egress unblock {u['change']}: {u['client']} until {u['until']} ({u['reason']})"
              for u in s["unblocks"]]
    print("\n".join(lines))
    return 0


def add_parsers(sub: Any) -> None:
    """Register `asl3 change ...`."""
    csub = group(sub, "change", "propose, approve and apply changes to safeguard settings", (
        "Safeguard settings (the classifier bundle, threshold overrides, exemptions, the\n"
        "allowlist, the roster itself, egress unblocks) change only through a signed proposal\n"
        "that K members other than the proposer approve; `apply` refuses anything else, and\n"
        "`asl3 serve --safeguards DIR` (and `asl3 egress proxy --safeguards DIR`) load only\n"
        "what was applied, checking every signature again.\n"
        "Proposals expire (24 h by default) and apply only to the state they were made against.\n\n"
        "example:\n"
        "  asl3 change init settings --member alice.key.pub bob.key.pub --as alice.key\n"
        "  asl3 change propose settings --as alice.key --reason 'retrained' --bundle new-bundle\n"
        "  asl3 change approve settings CHANGE --as bob.key\n"
        "  asl3 change apply settings CHANGE --as alice.key\n"
        "  asl3 serve --upstream echo --bundle new-bundle --safeguards settings"))

    add = dir_actions(csub, "the settings directory (may be a vault)")

    i = add("init", "create the change roster of a settings directory",
            "asl3 change init settings --member a.pub b.pub c.pub --approvals 1 --as a.key",
            cmd_change_init)
    i.add_argument("--member", nargs="+", metavar="PUBFILE",
                   help="members' public identity files (default in a vault: its custodians)")
    i.add_argument("--approvals", type=int, default=1, metavar="K",
                   help="approvals needed from members other than the proposer (default 1)")
    add_as(i)
    p = add("propose", "propose one change (prints its id)",
            "asl3 change propose settings --as a.key --reason 'vetted' "
            "--exempt lab-7:bio.acquisition --until 2026-12-31", cmd_change_propose)
    p.description += (
        "\n  asl3 change propose settings --as a.key --reason 'fewer FPs' --threshold input=0.93"
        "\n  asl3 change propose settings --as a.key --reason 'done' --unexempt lab-7:bio.acquisition"
        "\n  asl3 change propose settings --as a.key --reason 'reader' --allow SHA256:/opt/reader"
        "\n  asl3 change propose settings --as a.key --reason 'new hire' --member a.pub b.pub c.pub"
        "\n  asl3 change propose settings --as a.key --reason 'backup, ticket 7' --unblock 10.0.0.7")
    p.add_argument("--reason", required=True, metavar="TEXT", help="why (kept with the change)")
    p.add_argument("--bundle", metavar="BUNDLE_DIR",
                   help="approve this classifier bundle (it must verify; pinned by the SHA-256 of "
                        "its manifest; clears threshold overrides)")
    p.add_argument("--threshold", nargs="+", metavar="NAME=VALUE",
                   help="override bundle thresholds (names the bundle has, values in (0, 1))")
    p.add_argument("--exempt", metavar="PRINCIPAL:CATEGORY",
                   help="approve an exemption of an API key principal from an exemptible category")
    p.add_argument("--until", metavar="DATE",
                   help="when the exemption ends, or until when the unblock may be used (ISO "
                        "date or datetime; unblock default: 48 h from now, at most 7 days)")
    p.add_argument("--unexempt", metavar="PRINCIPAL:CATEGORY", help="remove an approved exemption")
    p.add_argument("--allow", metavar="SHA256[:PATH]", help="add a binary to the allowlist")
    p.add_argument("--disallow", metavar="SHA256", help="remove a binary from the allowlist")
    p.add_argument("--member", nargs="+", metavar="PUBFILE",
                   help="replace the roster with these members' public identities")
    p.add_argument("--unblock", metavar="CLIENT",
                   help="approve lifting the egress proxy's block of this client address "
                        "(then 'asl3 egress unblock CLIENT --change ID'; usable once)")
    p.add_argument("--approvals", type=int, metavar="K",
                   help="with --member: approvals needed (default: unchanged)")
    p.add_argument("--against", metavar="BUNDLE_DIR",
                   help="check thresholds and categories against this bundle (default: the "
                        "approved bundle, else the bundled model)")
    p.add_argument("--pending", default="24h", metavar="DURATION",
                   help="how long the proposal waits for approval (default 24h, at most 7d)")
    add_as(p)
    for name, helptext, func in (
            ("approve", "approve a change as a member other than its proposer", cmd_change_approve),
            ("apply", "apply an approved change to the settings", cmd_change_apply),
            ("withdraw", "withdraw a change (its proposer or a member)", cmd_change_withdraw)):
        x = add(name, helptext, f"asl3 change {name} settings CHANGE --as bob.key", func)
        x.add_argument("change", metavar="CHANGE", help="the change id from 'propose'")
        add_as(x)
    add("list", "list changes: pending, approved, applied, stale, expired, withdrawn",
        "asl3 change list settings --json", cmd_change_list, json_help="print the list as JSON")
    s = add("show", "show the approved settings, every signature checked",
            "asl3 change show settings --trust alice.key.pub", cmd_change_show,
            json_help="print the settings as JSON")
    s.add_argument("--trust", nargs="+", metavar="PUBFILE",
                   help="refuse unless change.json is signed by one of these identities")
