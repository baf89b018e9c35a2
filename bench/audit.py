"""Audit log benchmark: build a large real log, time `AuditLog.verify` on it; prints JSON.

Builds --entries entries in a temporary directory with real Ed25519 signatures from a few
identities and a real hash chain (a fast path that writes the lines directly with the same
`_make_line` that `append` uses, skipping the per-entry lock and fsync; the last entry goes
through `append` itself, which also rebuilds the tree-head cache). Then verifies the whole log
as `asl3 audit verify` does (every signature, the chain, the Merkle root) with --workers
processes, and reports seconds, entries/s, CPU seconds (parent + workers: on a shared machine
wall time depends on what else runs; CPU time / cores is the time on an idle one) and peak RSS
of the parent and of the workers.
`ed25519_verify_us` is one core's cost of a single Ed25519 verification here, by libsodium
(PyNaCl), which the verifier uses, and by OpenSSL (`cryptography`) for comparison: it bounds
what any number of workers can reach (entries x that / cores).

Usage: python bench/audit.py [--entries 1000000] [--workers N] [--dir /tmp] [--tamper]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ACTIONS = ["vault.request", "vault.approve", "vault.approve", "vault.open", "change.propose",
           "allowlist.add"]


def ed25519_verify_us(n: int = 3000) -> dict[str, float]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from nacl.signing import VerifyKey

    key = Ed25519PrivateKey.generate()
    msg = os.urandom(400)
    sig, pub = key.sign(msg), key.public_key()
    vk = VerifyKey(pub.public_bytes(Encoding.Raw, PublicFormat.Raw))
    out = {}
    for name, verify in (("libsodium", lambda: vk.verify(msg, sig)),
                         ("openssl", lambda: pub.verify(sig, msg))):
        t = time.process_time()
        for _ in range(n):
            verify()
        out[name] = round((time.process_time() - t) / n * 1e6, 1)
    return out


def cpu_seconds() -> float:
    """User + system CPU of this process and its reaped children (the verify workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def build(directory: Path, entries: int, actors: int) -> float:
    from asl3.security import identity
    from asl3.security.audit import GENESIS, AuditLog, _make_line

    people = [identity.new(f"person-{k}") for k in range(actors)]
    log = AuditLog(directory)
    log.dir.mkdir(parents=True)
    t0 = time.perf_counter()
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    prev = GENESIS
    with open(log.path, "wb", buffering=1 << 20) as f:
        for i in range(entries - 1):
            line = _make_line(people[i % actors], i, prev,
                              (start + timedelta(seconds=i)).isoformat(), ACTIONS[i % len(ACTIONS)],
                              f"{i // 4:024x}", {"model": "llm-7b", "reason": "evaluation run",
                                                 "n": i})
            f.write(line + b"\n")
            prev = hashlib.sha256(line).hexdigest()
    log.append(people[0], "vault.revoke", "last")  # the real path; rebuilds the head cache
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=None,
                    help="verification processes (default: the usable cores)")
    ap.add_argument("--actors", type=int, default=5, help="identities signing entries")
    ap.add_argument("--dir", default=None, help="where the temporary log goes (default: $TMPDIR)")
    ap.add_argument("--tamper", action="store_true",
                    help="also change one entry in the middle and time the verify that names it")
    a = ap.parse_args()
    from asl3.security.audit import AuditLog

    workers = a.workers or len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        build_s = build(Path(d), a.entries, a.actors)
        log = AuditLog(d)
        size = log.path.stat().st_size
        load_before = os.getloadavg()[0]
        cpu0 = cpu_seconds()
        t0 = time.perf_counter()
        report = log.verify(workers=workers)
        verify_s = time.perf_counter() - t0
        verify_cpu = cpu_seconds() - cpu0
        out = {
            "benchmark": "audit log verify (signatures, hash chain, Merkle root)",
            "entries": report.entries, "log_mb": round(size / 1e6, 1),
            "workers": workers, "cpus": os.cpu_count(),
            "build_seconds": round(build_s, 1), "verify_seconds": round(verify_s, 1),
            "verify_entries_per_s": round(report.entries / verify_s),
            "verify_cpu_seconds": round(verify_cpu, 1),
            "verify_cpu_us_per_entry": round(verify_cpu / max(report.entries, 1) * 1e6, 1),
            "load_average_before": round(load_before, 2),
            "verified_ok": report.ok, "problems": report.problems[:5],
            "target_seconds": 60, "meets_target": report.ok and verify_s < 60,
            "ed25519_verify_us": ed25519_verify_us(),
        }
        if a.tamper:
            mid = size // 2
            with open(log.path, "r+b") as f:
                f.seek(mid)
                f.seek(mid + f.read(4096).index(b'"n":') + 4)
                f.write(b"9")
            t0 = time.perf_counter()
            bad = log.verify(workers=workers)
            out["tampered_verify_seconds"] = round(time.perf_counter() - t0, 1)
            out["tampered_problems"] = bad.problems[:5]
        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        out["peak_rss_mb_worker"] = round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    print(json.dumps(out, indent=2))
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
