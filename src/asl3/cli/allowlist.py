"""`asl3 allowlist`: thin parsing and printing over asl3.security.allowlist."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from asl3.cli.common import UsageError, add_as, dir_actions, group, load_identity

EXIT_NOT_ALLOWED = 1


def _load(a: argparse.Namespace) -> Any:
    from asl3.security import identity
    from asl3.security.allowlist import Allowlist

    trusted = [identity.load_public(p) for p in a.trust] if a.trust else None
    return Allowlist.load(a.dir, trusted)


def _entry_line(e: Any) -> str:
    note = f"  # {e.note}" if e.note else ""
    return f"{e.sha256}  {e.path or '-'}{note}"


def _next_steps(d: str, proposed: list[dict[str, str]]) -> None:
    ids = list(dict.fromkeys(p["change"] for p in proposed))  # one change for all the files
    lines = ["asl3: proposed only; nothing changes until a member other than you approves and a "
             "member applies:"]
    for cid in ids:
        lines += [f"  asl3 change approve {d} {cid} --as OTHER_MEMBER.key",
                  f"  asl3 change apply {d} {cid} --as MEMBER.key"]
    sys.stderr.write("\n".join(lines) + "\n")


def cmd_add(a: argparse.Namespace) -> int:
    from asl3.security.allowlist import propose_add

    proposed = propose_add(a.dir, a.paths, load_identity(a), note=a.note or "",
                           reason=a.reason or "")
    if a.json:
        print(json.dumps({"proposed": proposed}))
    else:
        print("\n".join(f"{p['change']}  allow {p['sha256']}  {p['path']}" for p in proposed))
    _next_steps(a.dir, proposed)
    return 0


def cmd_remove(a: argparse.Namespace) -> int:
    from asl3.security.allowlist import propose_remove

    proposed = propose_remove(a.dir, a.target, load_identity(a), reason=a.reason or "")
    if a.json:
        print(json.dumps({"proposed": proposed}))
    else:
        print("\n".join(f"{p['change']}  disallow {p['sha256']}  {p['path'] or '-'}"
                        for p in proposed))
    _next_steps(a.dir, proposed)
    return 0


def cmd_list(a: argparse.Namespace) -> int:
    al = _load(a)
    if a.json:
        print(json.dumps(al.to_dict(), indent=2))
        return 0
    if not al.has_roster:
        print(f"{a.dir}: no change roster (change.json): the allowlist is empty, nothing is "
              f"allowed (start one with 'asl3 change init {a.dir} --member ...')")
        return 0
    s = al.approved
    where = (f"{a.dir}: approved state {s.state_hash[:16]}..., {s.change_count} change(s) "
             "applied")
    if not al.entries:
        print(f"{where}: the allowlist is empty (nothing is allowed)")
        return 0
    n = len(al.entries)
    print(f"{where}: {n} entr{'y' if n == 1 else 'ies'} (who proposed and approved each: "
          f"asl3 change list {a.dir})")
    for e in al.entries:
        print(_entry_line(e))
    return 0


def cmd_check(a: argparse.Namespace) -> int:
    allowed, sha, entry = _load(a).check(a.path)
    if a.json:
        print(json.dumps({"path": a.path, "sha256": sha, "allowed": allowed,
                          "entry": entry.to_dict() if entry else None}))
    else:
        print(f"{'allowed' if allowed else 'NOT allowed'}: {a.path} sha256 {sha}")
    return 0 if allowed else EXIT_NOT_ALLOWED


def cmd_scan(a: argparse.Namespace) -> int:
    rep = _load(a).scan(a.root, max_files=a.max_files)
    if a.json:
        print(json.dumps(rep.to_dict(), indent=2))
        return 0
    for h in rep.unlisted:
        print(f"{h['sha256']}  {h['path']}")
    for s in rep.skipped:
        sys.stderr.write(f"asl3: skipped {s['path']}: {s['reason']}\n")
    more = f" (stopped after {a.max_files} files)" if rep.truncated else ""
    sys.stderr.write(f"asl3: {rep.scanned} files, {rep.executables} executables, "
                     f"{len(rep.unlisted)} not allowlisted{more}\n")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    al = _load(a)
    if a.part == "rules" and not a.weights_path:
        raise UsageError("--part rules needs --weights-path")
    if a.json:
        out: dict[str, Any] = {"format": "fapolicyd", "trust": al.fapolicyd_trust()}
        if a.weights_path:
            out["rules"] = al.fapolicyd_rules(a.weights_path)
        print(json.dumps(out, indent=2))
    elif a.part == "trust":
        sys.stdout.write(al.fapolicyd_trust())
    elif a.part == "rules":
        sys.stdout.write(al.fapolicyd_rules(a.weights_path))
    else:
        sys.stdout.write(al.export_fapolicyd(a.weights_path))
    return 0


def add_parsers(sub: Any) -> None:
    """Register `asl3 allowlist ...`."""
    asub = group(sub, "allowlist", "SHA-256 allowlist of executables that may read weights", (
        "The allowlist is a safeguard setting under change management ('asl3 change --help'):\n"
        "it is what the approved, applied changes in DIR (change.json + safeguards.json) say,\n"
        "every signature checked. `add` and `remove` only propose a change (one per file); a\n"
        "member of the roster other than the proposer must approve it and a member applies it.\n"
        "No one can allowlist a binary alone. A DIR without change.json allows nothing.\n"
        "`asl3 vault serve` gives decrypted weights only to allowlisted processes;\n"
        "`export --format fapolicyd` turns the list into kernel-enforced fapolicyd rules.\n"
        "Matching is by hash: an allowlisted interpreter (python, sh) runs any script.\n\n"
        "example:\n"
        "  asl3 change init vault --member alice.key.pub bob.key.pub --as alice.key\n"
        "  asl3 allowlist add vault /opt/infer/bin/server --as alice.key --note 'inference'\n"
        "      (prints CHANGE)\n"
        "  asl3 change approve vault CHANGE --as bob.key\n"
        "  asl3 change apply vault CHANGE --as alice.key\n"
        "  asl3 allowlist check vault /opt/infer/bin/server && echo allowed\n"
        "  asl3 allowlist list vault --trust alice.key.pub\n"
        "  asl3 allowlist scan vault /opt/infer --json\n"
        "  asl3 allowlist remove vault /opt/infer/bin/server --as bob.key   (approve + apply too)\n"
        "  asl3 allowlist export vault --format fapolicyd --weights-path /secure/llm-7b"))

    add_dir = dir_actions(asub, "the settings or vault directory (with change.json)")

    def add(name: str, helptext: str, example: str, func: Any, *, reads: bool = False,
            **kw: str) -> argparse.ArgumentParser:
        p = add_dir(name, helptext, example, func, **kw)
        if reads:
            p.add_argument("--trust", nargs="+", metavar="PUBFILE",
                           help="refuse unless change.json is signed by one of these identities")
        return p

    p = add("add", "propose allowlisting executables by their SHA-256 (one change for all the "
            "files; symlinks resolved)",
            "asl3 allowlist add vault /usr/local/bin/infer --as alice.key --note 'serving'\n"
            "  asl3 change approve vault CHANGE --as bob.key\n"
            "  asl3 change apply vault CHANGE --as alice.key", cmd_add)
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--note", metavar="TEXT", help="what the executable is (kept with its path)")
    p.add_argument("--reason", metavar="TEXT",
                   help="why (kept with the change; default: 'allow PATH: NOTE')")
    add_as(p)
    p = add("remove", "propose removing an entry by SHA-256, or every entry for a path",
            "asl3 allowlist remove vault /usr/local/bin/infer --as alice.key\n"
            "  asl3 change approve vault CHANGE --as bob.key\n"
            "  asl3 change apply vault CHANGE --as alice.key", cmd_remove)
    p.add_argument("target", metavar="SHA256|PATH")
    p.add_argument("--reason", metavar="TEXT",
                   help="why (kept with the change; default: 'disallow PATH')")
    add_as(p)
    add("list", "show the approved allowlist, every change verified",
        "asl3 allowlist list vault --json", cmd_list, reads=True)
    p = add("check", "is this file allowlisted? exit 0 if allowed, 1 if not, 2 on bad input",
            "asl3 allowlist check vault /usr/local/bin/infer", cmd_check, reads=True)
    p.add_argument("path", metavar="PATH")
    p = add("scan", "list executables under ROOT that are not allowlisted",
            "asl3 allowlist scan vault /opt --json", cmd_scan, reads=True)
    p.add_argument("root", metavar="ROOT")
    p.add_argument("--max-files", type=int, default=100_000, metavar="N",
                   help="examine at most N files (default 100000)")
    p = add("export", "print fapolicyd trust and rules files for kernel-level enforcement",
            "asl3 allowlist export vault --format fapolicyd --weights-path /secure/llm",
            cmd_export, reads=True, json_help="print {trust, rules} as JSON")
    p.add_argument("--format", required=True, choices=["fapolicyd"])
    p.add_argument("--weights-path", metavar="DIR",
                   help="directory of decrypted weights that only allowlisted executables may "
                        "open (needed for the rules part)")
    p.add_argument("--part", choices=["both", "trust", "rules"], default="both",
                   help="print only the trust.d file or only the rules.d snippet")
