"""Vault throughput benchmark: chunked AES-256-GCM encrypt and decrypt on one core; prints JSON.

For each --sizes-mb size a fresh child process, pinned to one CPU, writes a plaintext file of
that size into a temporary directory, encrypts it with `asl3.security.chunks` (what
`vault put` does per file) and decrypts it again (what `vault open` does), checks the bytes
match, and reports MB/s each way, file reads and writes included (median and best of
--repeat runs), and its own peak RSS. Peak RSS that stays flat as the size grows shows that
files are streamed, never held in memory. It also times the same chunk code on in-memory
buffers (`cipher_*_mb_s`): on a small VM the file numbers are bounded, and made noisy, by the
kernel allocating page-cache pages for the new files, not by AES-GCM.

Usage: python bench/vault.py [--sizes-mb 256 1024] [--chunk-mb 4] [--repeat 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cipher_only(size: int, chunk: int) -> tuple[float, float]:
    """MB/s of chunks.py's per-chunk encrypt and decrypt on in-memory buffers (no file I/O)."""
    from asl3.security.chunks import TAG, _Cipher

    c = _Cipher(os.urandom(32), b"header", os.urandom(16), "bench", "weights.bin")
    plain = memoryview(bytearray(os.urandom(chunk)))
    sealed, back = memoryview(bytearray(chunk + TAG)), memoryview(bytearray(chunk))
    n = max(1, size // chunk)
    t0 = time.perf_counter()
    for i in range(n):
        c.seal_into(i, i == n - 1, plain, sealed)
    t1 = time.perf_counter()
    for _ in range(n):  # `sealed` holds the last chunk: open it n times
        c.open_into(n - 1, True, sealed, back)
    t2 = time.perf_counter()
    assert bytes(back) == bytes(plain)
    return n * chunk / 1e6 / (t1 - t0), n * chunk / 1e6 / (t2 - t1)


def one(size_mb: int, chunk_mb: int, repeat: int, where: str | None) -> dict:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from asl3.security.chunks import decrypt_file, encrypt_file

    key = os.urandom(32)
    enc_s, dec_s, same = [], [], True
    with tempfile.TemporaryDirectory(dir=where) as d:
        src, enc, out = Path(d, "weights.bin"), Path(d, "weights.enc"), Path(d, "weights.out")
        block = os.urandom(1 << 20)
        with open(src, "wb") as f:
            for _ in range(size_mb):
                f.write(block)
        size = src.stat().st_size
        for _ in range(repeat):
            enc.unlink(missing_ok=True)
            out.unlink(missing_ok=True)
            t0 = time.perf_counter()
            encrypt_file(src, enc, key, model="bench", name="weights.bin",
                         chunk_size=chunk_mb << 20)
            t1 = time.perf_counter()
            decrypt_file(enc, out, key, model="bench", name="weights.bin")
            t2 = time.perf_counter()
            enc_s.append(t1 - t0)
            dec_s.append(t2 - t1)
            same = same and filecmp.cmp(src, out, shallow=False)
    c_enc, c_dec = cipher_only(size, chunk_mb << 20)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def mbs(t: float) -> float:
        return round(size / 1e6 / t, 1)

    return {"size_mb": size_mb,
            "encrypt_mb_s": mbs(statistics.median(enc_s)), "decrypt_mb_s": mbs(statistics.median(dec_s)),
            "encrypt_best_mb_s": mbs(min(enc_s)), "decrypt_best_mb_s": mbs(min(dec_s)),
            "cipher_encrypt_mb_s": round(c_enc, 1), "cipher_decrypt_mb_s": round(c_dec, 1),
            "bytes_match": same, "peak_rss_mb": round(peak_kb / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-mb", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--chunk-mb", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3, help="file runs per size (median reported)")
    ap.add_argument("--dir", default=None, help="where the temporary files go (default: $TMPDIR)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one is not None:
        print(json.dumps(one(a.one, a.chunk_mb, a.repeat, a.dir)))
        return
    runs = []
    for mb in a.sizes_mb:
        cmd = [sys.executable, __file__, "--one", str(mb), "--chunk-mb", str(a.chunk_mb),
               "--repeat", str(a.repeat)]
        if a.dir:
            cmd += ["--dir", a.dir]
        runs.append(json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                              text=True).stdout))
    largest = max(runs, key=lambda r: r["size_mb"])
    print(json.dumps({
        "benchmark": "vault chunked AES-256-GCM, one core",
        "chunk_mb": a.chunk_mb,
        "cpu": os.uname().machine,
        "runs": runs,
        "encrypt_mb_s": largest["encrypt_mb_s"], "decrypt_mb_s": largest["decrypt_mb_s"],
        "cipher_encrypt_mb_s": largest["cipher_encrypt_mb_s"],
        "cipher_decrypt_mb_s": largest["cipher_decrypt_mb_s"],
        "target_mb_s": 500,
        "meets_target_with_file_io": largest["encrypt_mb_s"] >= 500 and largest["decrypt_mb_s"] >= 500,
        "meets_target_cipher": min(largest["cipher_encrypt_mb_s"], largest["cipher_decrypt_mb_s"]) >= 500,
        "peak_rss_mb_by_size": {str(r["size_mb"]): r["peak_rss_mb"] for r in runs},
    }, indent=2))


if __name__ == "__main__":
    main()
