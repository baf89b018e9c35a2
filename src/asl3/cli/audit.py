"""`asl3 audit`: verify, show, export tree heads and prove entries of a signed audit log."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from asl3.cli.common import big_progress, dir_actions, group, load_identity

EXIT_TAMPERED = 1


def _log(a: argparse.Namespace) -> Any:
    from asl3.errors import AuditError
    from asl3.security.audit import AuditLog

    log = AuditLog(a.dir)
    if not log.path.is_file():
        raise AuditError(f"{a.dir}: no audit log here (no {log.path})")
    return log


def cmd_audit_verify(a: argparse.Namespace) -> int:
    from asl3.security import identity
    from asl3.security.audit import load_checkpoint

    log = _log(a)
    trusted = [identity.load_public(p) for p in a.trust] if a.trust else None
    cp = load_checkpoint(a.checkpoint) if a.checkpoint else None
    with big_progress(not a.quiet and not a.json) as cb:
        report = log.verify(trusted=trusted, checkpoint=cp, progress=cb)
    if a.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif report.ok:
        extra = f", extends the checkpoint of size {cp.size}" if cp else ""
        who = f", all signers trusted ({len(trusted)} identities)" if trusted else ""
        print(f"ok: {report.entries} entries, hash chain and signatures verified{who}{extra}; "
              f"root {report.root}")
    else:
        print(f"FAILED: {len(report.problems)} problem(s) in {report.entries} entries:")
        for p in report.problems:
            print(f"  - {p}")
    return 0 if report.ok else EXIT_TAMPERED


def cmd_audit_show(a: argparse.Namespace) -> int:
    log = _log(a)
    entries = log.last(a.last) if a.last is not None else list(log.entries())
    if a.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2, ensure_ascii=False))
        return 0
    for e in entries:
        details = json.dumps(e.details, sort_keys=True, ensure_ascii=False)
        print(f"{e.seq:>6}  {e.time}  {e.actor.name} ({e.actor.fingerprint[:8]})  {e.action}  "
              f"{e.subject}  {details}")
    return 0


def cmd_audit_head(a: argparse.Namespace) -> int:
    log = _log(a)
    head = log.head(fresh=True)
    if a.key:
        head = head.signed(load_identity(a))
    text = json.dumps(head.to_dict(), indent=2)
    if a.out:
        Path(a.out).write_text(text + "\n", encoding="utf-8")
        sys.stderr.write(f"asl3: checkpoint of {head.size} entries written to {a.out}; keep it "
                         "where the log's owner cannot change it\n")
    if a.json or not a.out:
        print(text)
    return 0


def cmd_audit_prove(a: argparse.Namespace) -> int:
    from asl3.errors import AuditError
    from asl3.security import merkle
    from asl3.security.audit import load_checkpoint

    log = _log(a)
    leaves = log.leaf_hashes()
    n = len(leaves)
    if not 0 <= a.index < n:
        raise AuditError(f"entry {a.index} is not in the log ({n} entries)")
    root = merkle.root(leaves, hashed=True)
    path = merkle.inclusion_proof(leaves, a.index, hashed=True)
    included = merkle.verify_inclusion(leaves[a.index], a.index, n, path, root, hashed=True)
    out: dict[str, Any] = {"index": a.index, "tree_size": n, "root": root.hex(),
                           "leaf_hash": leaves[a.index].hex(),
                           "inclusion_proof": [p.hex() for p in path], "included": included}
    ok = included
    if a.checkpoint:
        cp = load_checkpoint(a.checkpoint)
        proof = (merkle.consistency_proof(leaves, cp.size, hashed=True) if cp.size <= n else [])
        consistent = cp.size <= n and merkle.verify_consistency(
            cp.size, n, bytes.fromhex(cp.root), root, proof)
        out.update({"checkpoint_size": cp.size, "checkpoint_root": cp.root,
                    "consistency_proof": [p.hex() for p in proof], "consistent": consistent})
        ok = ok and consistent
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"entry {a.index} of {n}: leaf {out['leaf_hash']}")
        print(f"root {out['root']}; inclusion proof ({len(path)} hashes) "
              f"{'verifies' if included else 'FAILS'}")
        for p in out["inclusion_proof"]:
            print(f"  {p}")
        if a.checkpoint:
            print(f"checkpoint of size {out['checkpoint_size']}: consistency proof "
                  f"({len(out['consistency_proof'])} hashes) "
                  f"{'verifies' if out['consistent'] else 'FAILS: log truncated or rewritten'}")
            for p in out["consistency_proof"]:
                print(f"  {p}")
    return 0 if ok else EXIT_TAMPERED


def add_parsers(sub: Any) -> None:
    """Register `asl3 audit ...`."""
    asub = group(sub, "audit", "verify and inspect a signed, hash-chained audit log", (
        "Every vault, key, change and allowlist action appends a signed entry to DIR/audit/\n"
        "log.jsonl; each entry holds the SHA-256 of the one before, and the log has RFC 6962\n"
        "Merkle tree heads. 'verify' checks every signature and link and names each modified,\n"
        "deleted, reordered or inserted entry. A truncated tail shows only against a checkpoint\n"
        "kept elsewhere ('head --out'), so export one regularly.\n\n"
        "exit codes: 0 the log verifies; 1 tampering found (each problem listed);\n"
        "            2 bad usage or unreadable input (one line on stderr)\n\n"
        "examples:\n"
        "  asl3 audit verify vault\n"
        "  asl3 audit verify vault --trust alice.key.pub bob.key.pub --checkpoint head-0601.json\n"
        "  asl3 audit show vault --last 20\n"
        "  asl3 audit head vault --out /offsite/head-0601.json --as auditor.key\n"
        "  asl3 audit prove vault --index 17 --checkpoint /offsite/head-0601.json"))

    add = dir_actions(asub, "the directory holding audit/ (e.g. a vault)")

    v = add("verify", "check every entry's signature, the hash chain, order and a checkpoint",
            "asl3 audit verify vault --trust alice.key.pub --checkpoint head.json", cmd_audit_verify,
            json_help="print {ok, entries, root, problems} as JSON")
    v.description += ("\n\nexit codes: 0 the log verifies; 1 tampering found (problems listed);"
                      "\n            2 bad usage or unreadable input")
    v.add_argument("--trust", nargs="+", metavar="PUBFILE",
                   help="identity files of the only people who may sign entries; any other "
                        "signer is reported")
    v.add_argument("--checkpoint", metavar="FILE",
                   help="a tree head saved earlier ('audit head --out'): the log must extend it")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    s = add("show", "print the log's entries, oldest first (not verified: use verify)",
            "asl3 audit show vault --last 20", cmd_audit_show,
            json_help="print the entries as a JSON array")
    s.add_argument("--last", type=int, metavar="N", help="only the last N entries")
    h = add("head", "print or save the tree head (size, Merkle root of the log's lines) as a "
                    "checkpoint; verify first, so that it vouches for a checked log",
            "asl3 audit head vault --out head.json --as auditor.key", cmd_audit_head,
            json_help="print the checkpoint even with --out")
    h.add_argument("--out", metavar="FILE", help="write the checkpoint to FILE")
    h.add_argument("--as", dest="key", metavar="KEYFILE",
                   help="sign the checkpoint with this private identity file")
    h.add_argument("--passphrase-env", metavar="VAR",
                   help="read the key file's passphrase from this environment variable")
    pr = add("prove", "print an inclusion proof for one entry (and consistency to a checkpoint)",
             "asl3 audit prove vault --index 17 --checkpoint head.json", cmd_audit_prove,
             json_help="print the proofs as JSON (hex hashes)")
    pr.add_argument("--index", type=int, required=True, metavar="I", help="the entry's index (seq)")
    pr.add_argument("--checkpoint", metavar="FILE", help="also prove the log extends this one")
