"""Classifier cost benchmark: prints one JSON object.

- check_input latency (p50/p99) on 1,000-character messages, one thread: ordinary messages
  (untransformed harmless dev rows, like most traffic), untransformed rows of both labels
  (most such messages hold a harmful request and are blocked), and an adversarial mix (dev rows with encodings and wrappers, which
  add decoded views to score); with a second stage, also the share of messages that reached it
  (stage 2 runs only above its gate, so the p50 of ordinary traffic is stage 1's);
- streaming cost per fed token (amortized over whole responses, word-sized tokens);
- time to score a 1 MB input (bounded-cost check).
Usage: python bench/classifier.py [--bundle DIR] [--n 500] [--stage2 auto|on|off]
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from asl3 import Guard  # noqa: E402
from asl3.classify import neural  # noqa: E402
from asl3.classify.stream import split_stream  # noqa: E402
from asl3.data.io import read_jsonl  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _messages(rows, n: int, size: int, rng: random.Random) -> list[str]:
    texts = [r.text for r in rows]
    out = []
    for _ in range(n):
        parts, total = [], 0
        while total < size:
            t = rng.choice(texts)
            parts.append(t)
            total += len(t) + 1
        out.append(" ".join(parts)[:size])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--stage2", choices=["auto", "on", "off"], default="auto",
                    help="the bundle's second stage: auto uses it when installed")
    a = ap.parse_args()
    rng = random.Random(0)
    guard = Guard.load(a.bundle, stage2={"auto": None, "on": True, "off": False}[a.stage2])
    rows = read_jsonl(ROOT / "data/dev/inputs.jsonl")
    outs = [r for r in read_jsonl(ROOT / "data/dev/outputs.jsonl")]
    plain = _messages([r for r in rows if not r.transform and r.label == "harmless"], a.n, 1000, rng)
    plain_mixed = _messages([r for r in rows if not r.transform], a.n, 1000, rng)
    mixed = _messages([r for r in rows if r.transform], a.n, 1000, rng)

    gate = neural.gate(guard.input_threshold) if guard.stage2 is not None else None

    def timed(msgs: list[str]) -> dict[str, float]:
        for m in msgs[:20]:
            guard.check_input(m)  # warm caches
        lat = []
        for m in msgs:
            t = time.perf_counter()
            guard.check_input(m)
            lat.append((time.perf_counter() - t) * 1e3)
        lat.sort()
        out = {"p50": round(statistics.median(lat), 4),
               "p99": round(lat[int(0.99 * (len(lat) - 1))], 4), "n": len(lat)}
        if gate is not None:
            out["share_to_stage2"] = round(
                sum(guard.scorer.input(m).score >= gate for m in msgs) / len(msgs), 3)
        return out

    tokens = 0
    t = time.perf_counter()
    for r in outs:
        mon = guard.monitor_output(r.prompt, threshold=float("inf"))
        for p in split_stream(r.text):
            mon.feed(p)
            tokens += 1
        mon.finish()
    stream_s = time.perf_counter() - t

    big = ("lorem ipsum dolor sit amet " * 40000)[:1_000_000]
    t = time.perf_counter()
    guard.check_input(big)
    big_s = time.perf_counter() - t

    print(json.dumps({
        "check_input_1000_chars_ms": timed(plain),
        "check_input_1000_chars_with_harmful_ms": timed(plain_mixed),
        "check_input_1000_chars_adversarial_ms": timed(mixed),
        "stream_us_per_token": round(stream_s * 1e6 / max(tokens, 1), 2),
        "stream_tokens": tokens,
        "check_input_1MB_s": round(big_s, 3),
        "threads": 1,
        "stages": guard.stages,
    }, indent=2))


if __name__ == "__main__":
    main()
