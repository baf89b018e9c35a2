"""`asl3 identity` and `asl3 vault`: thin parsing and printing over asl3.security."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from asl3.cli.common import (
    UsageError,
    action,
    add_as,
    big_progress,
    dir_actions,
    group,
    load_identity,
    parse_duration,
    passphrase,
)


def _print_public(pub: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(pub.to_dict(), indent=2))
    else:
        print(f"{pub.name}  fingerprint {pub.fingerprint}")


def cmd_identity_new(a: argparse.Namespace) -> int:
    from asl3.security import identity

    pub_path = Path(f"{a.out}.pub")
    if pub_path.exists():
        raise UsageError(f"{pub_path}: already exists; refusing to overwrite")
    ident = identity.new(a.name)
    identity.save(ident, a.out, passphrase(a))
    identity.save_public(ident.public(), pub_path)
    _print_public(ident.public(), a.json)
    sys.stderr.write(f"asl3: private key in {a.out} (mode 0600); give {pub_path} to the vault\n")
    return 0


def cmd_identity_show(a: argparse.Namespace) -> int:
    from asl3.security import identity

    _print_public(identity.load_public(a.file), a.json)
    return 0


def cmd_vault_init(a: argparse.Namespace) -> int:
    from asl3.security import identity
    from asl3.security.vault import Vault

    v = Vault.init(a.dir, [identity.load_public(c) for c in a.custodian], a.threshold,
                   actor=load_identity(a))
    out = {"vault": str(v.path), "vault_id": v.vault_id, "threshold": v.threshold,
           "custodians": [c.name for c in v.custodians.values()]}
    print(json.dumps(out) if a.json else
          f"vault {v.path}: {v.threshold} of {len(v.custodians)} custodians must approve")
    return 0


def cmd_vault_put(a: argparse.Namespace) -> int:
    from asl3.security.vault import Vault

    actor = load_identity(a)
    with big_progress(not a.quiet) as cb:
        res = Vault(a.dir).put(a.model, a.files, actor=actor, chunk_size=a.chunk_size,
                               progress=cb)
    print(json.dumps(res) if a.json else
          f"{a.model}: {len(res['files'])} file(s) encrypted, key {res['key_id']}")
    return 0


def cmd_vault_request(a: argparse.Namespace) -> int:
    from asl3.security.vault import Vault

    ttl = parse_duration(a.ttl)
    rid = Vault(a.dir).request(a.model, load_identity(a), a.reason, ttl)
    print(json.dumps({"request": rid}) if a.json else rid)
    return 0


def cmd_vault_approve(a: argparse.Namespace) -> int:
    from asl3.security.vault import Vault

    res = Vault(a.dir).approve(a.request, load_identity(a))
    if res["self_approval"]:
        sys.stderr.write("asl3: recorded, but your approval of your own request does not count "
                         "toward the quorum\n")
    print(json.dumps(res) if a.json else f"approved {a.request} as {res['custodian']}")
    return 0


def cmd_vault_open(a: argparse.Namespace) -> int:
    from asl3.security.vault import Vault

    with big_progress(not a.quiet) as cb:
        written = Vault(a.dir).open(a.request, load_identity(a), a.out, progress=cb)
    print(json.dumps({"request": a.request, "files": [str(p) for p in written]}) if a.json
          else "\n".join(str(p) for p in written))
    return 0


def cmd_vault_status(a: argparse.Namespace) -> int:
    from asl3.security.vault import Vault

    s = Vault(a.dir).status()
    if a.json:
        print(json.dumps(s, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    con = Console()
    con.print(f"vault {s['vault']}: {s['threshold']} of "
              f"{', '.join(c['name'] for c in s['custodians'])}")
    con.print(f"audit log: {s['audit']['entries']} entries, root {s['audit']['root']} "
              "(check with 'asl3 audit verify')")
    for m in s["models"]:
        con.print(f"model {m['model']}: {len(m['files'])} file(s), "
                  f"{sum(f['size'] for f in m['files'])} bytes")
    t = Table(title="requests")
    for c in ("id", "model", "requester", "state", "approvals", "reason"):
        t.add_column(c)
    for r in s["requests"]:
        t.add_row(r["id"], r.get("model", "?"), r.get("requester", "?"), r["state"],
                  f"{r.get('counted', 0)}/{r.get('threshold', '?')}", r.get("reason", ""))
    con.print(t)
    return 0


def cmd_vault_revoke(a: argparse.Namespace) -> int:
    from asl3.security.vault import Vault

    Vault(a.dir).revoke(a.request, load_identity(a))
    print(json.dumps({"request": a.request, "revoked": True}) if a.json
          else f"revoked {a.request}")
    return 0


def cmd_vault_serve(a: argparse.Namespace) -> int:
    import contextlib
    import signal

    from asl3.security import socket_serve

    def log(line: str) -> None:
        sys.stderr.write(f"asl3: {line}\n")
        sys.stderr.flush()

    def ready(srv: Any) -> None:
        # Both stop the server, SIGINT too: a process started in the background by a shell
        # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt, so
        # `kill -INT` (or Ctrl-C after `fg`) would not stop it.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: srv.stop())
        if a.json:
            print(json.dumps({"request": a.request, "socket": str(srv.path)}), flush=True)
        log(f"serving request {a.request} on {srv.path} (Ctrl-C to stop)")

    from asl3.security import identity

    trusted = [identity.load_public(p) for p in a.trust] if a.trust else None
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the server has cleaned up
        socket_serve.serve(a.dir, a.request, load_identity(a), a.socket, allowlist_dir=a.allowlist,
                           allowlist_trusted=trusted, max_clients=a.max_clients,
                           group_access=a.group_access, log=log, ready=ready)
    log("stopped; socket removed")
    return 0


def _add_identity_parsers(sub: Any) -> None:
    isub = group(sub, "identity", "create and show identities (signing + sealing keys)", (
        "An identity is an Ed25519 signing key and an X25519 key. The private file is created\n"
        "with mode 0600 (refused later if others can read it); FILE.pub holds the public part.\n\n"
        "examples:\n"
        "  asl3 identity new alice --out alice.key\n"
        "  ASL3_PASS=... asl3 identity new bob --out bob.key --passphrase-env ASL3_PASS\n"
        "  asl3 identity show alice.key.pub"))
    n = action(isub, "new", "create an identity: private key file FILE (0600) and FILE.pub",
                "asl3 identity new alice --out alice.key", cmd_identity_new,
                json_help="print the public part as JSON")
    n.add_argument("name", metavar="NAME")
    n.add_argument("--out", required=True, metavar="FILE", help="private key file to create")
    n.add_argument("--passphrase-env", metavar="VAR",
                   help="encrypt the private keys with the passphrase in this variable")
    sh = action(isub, "show", "print the name and fingerprint of an identity file",
                 "asl3 identity show alice.key.pub --json", cmd_identity_show,
                 json_help="print the public part as JSON")
    sh.add_argument("file", metavar="FILE", help="a public or private identity file")


def _add_vault_parsers(sub: Any) -> None:
    vsub = group(sub, "vault", "encrypted weights under two-party authorization", (
        "Model files encrypted in a vault directory; each model's key is split among the\n"
        "custodians (K of N must approve) and never stored whole. A requester asks, K custodians\n"
        "other than the requester approve, and only then can the requester decrypt.\n\n"
        "example:\n"
        "  asl3 vault init vault --custodian alice.key.pub bob.key.pub carol.key.pub --as ops.key\n"
        "  asl3 vault put vault llm-7b weights/*.safetensors --as alice.key   # a custodian\n"
        "  asl3 vault request vault llm-7b --as dave.key --reason 'eval run' --ttl 4h\n"
        "  asl3 vault approve vault REQUEST --as alice.key     # and again as bob\n"
        "  asl3 vault open vault REQUEST --as dave.key --out /secure/llm-7b\n"
        "  asl3 audit verify vault      # every action above is a signed entry in vault/audit/"))

    add = dir_actions(vsub, "the vault directory")

    i = add("init", "create a vault with its custodians",
            "asl3 vault init vault --custodian a.pub b.pub c.pub --threshold 2 --as ops.key",
            cmd_vault_init)
    i.add_argument("--custodian", nargs="+", required=True, metavar="PUBFILE",
                   help="custodians' public identity files")
    i.add_argument("--threshold", type=int, default=2, metavar="K",
                   help="approvals needed to open (default 2, at least 2)")
    add_as(i)
    p = add("put", "encrypt model files into the vault (a custodian, who signs the manifest)",
            "asl3 vault put vault llm-7b model.safetensors config.json --as alice.key",
            cmd_vault_put)
    p.add_argument("model", metavar="MODEL")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--chunk-size", type=int, default=4 * 1024 * 1024, metavar="BYTES",
                   help="encryption chunk size (default 4 MiB)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_as(p)
    r = add("request", "ask for access to a model (prints the request id)",
            "asl3 vault request vault llm-7b --as dave.key --reason 'eval' --ttl 4h",
            cmd_vault_request)
    r.add_argument("model", metavar="MODEL")
    r.add_argument("--reason", required=True, metavar="TEXT", help="why access is needed")
    r.add_argument("--ttl", required=True, metavar="DURATION",
                   help="how long the grant lasts once approved: 30m, 4h, 2d (at most 30d)")
    add_as(r)
    ap = add("approve", "approve a request as a custodian",
             "asl3 vault approve vault REQUEST --as alice.key", cmd_vault_approve)
    ap.add_argument("request", metavar="REQUEST")
    add_as(ap)
    o = add("open", "decrypt an approved request's model files",
            "asl3 vault open vault REQUEST --as dave.key --out /secure/llm-7b", cmd_vault_open)
    o.add_argument("request", metavar="REQUEST")
    o.add_argument("--out", required=True, metavar="PATH", help="directory for the files")
    o.add_argument("--quiet", action="store_true", help="no progress bars")
    add_as(o)
    add("status", "show custodians, models and requests", "asl3 vault status vault --json",
        cmd_vault_status, json_help="print the status as JSON")
    sv = add("serve", "stream an approved request's files over a Unix socket to allowlisted "
             "executables (decrypted in memory, never to disk)",
             "asl3 vault serve vault REQUEST --as dave.key --socket $XDG_RUNTIME_DIR/llm.sock",
             cmd_vault_serve, json_help="print {request, socket} as JSON once listening")
    sv.add_argument("request", metavar="REQUEST")
    sv.add_argument("--socket", required=True, metavar="PATH",
                    help="socket to create (mode 0600) in a directory only you can write to")
    sv.add_argument("--allowlist", metavar="DIR",
                    help="directory whose approved allowlist (change.json + safeguards.json, see "
                         "'asl3 allowlist --help') decides who may connect (default: DIR)")
    sv.add_argument("--trust", nargs="+", metavar="PUBFILE",
                    help="refuse the allowlist unless its change.json is signed by one of these")
    sv.add_argument("--max-clients", type=int, default=4, metavar="N",
                    help="connections served at once (default 4; more get 'ERR busy')")
    sv.add_argument("--group-access", action="store_true",
                    help="socket mode 0660 instead of 0600 (the allowlist still applies)")
    add_as(sv)
    sv.epilog = ("protocol: send 'LIST\\n' or 'GET NAME\\n'; the reply is 'OK SIZE\\n' and SIZE "
                 "bytes, or 'ERR REASON\\n'.\nfewer than SIZE bytes means the file failed "
                 "mid-stream: discard it. see asl3.security.socket_serve.")
    rv = add("revoke", "withdraw a request (its requester or a custodian)",
             "asl3 vault revoke vault REQUEST --as alice.key", cmd_vault_revoke)
    rv.add_argument("request", metavar="REQUEST")
    add_as(rv)


def add_parsers(sub: Any) -> None:
    """Register `asl3 identity ...` and `asl3 vault ...`."""
    _add_identity_parsers(sub)
    _add_vault_parsers(sub)
