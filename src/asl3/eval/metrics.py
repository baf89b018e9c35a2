"""Quality metrics of DESIGN.md section 6, shared by `asl3 eval`, training and benchmarks.

Inputs: block rate on harmful rows (1 - attack success rate) and false-positive rate on
harmless rows, broken down by category, transform, transform family and source. Outputs:
share of harmful responses halted while streaming, characters released before the halt, and
false halts on harmless responses. Latency is per call to the guard.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asl3.classify.stream import split_stream
from asl3.data.io import Row
from asl3.guard import Guard

Progress = Callable[[str, int, int], None]


def transform_family(name: str | None) -> str:
    if not name:
        return "none"
    try:
        from asl3.data.augment import TRANSFORMS

        t = TRANSFORMS.get(name)
        if t is not None:
            return t.family
    except ImportError:  # pragma: no cover - augment ships with the package
        pass
    return "translation" if name.startswith("translat") else "other"


@dataclass
class Outcome:
    row: Row
    blocked: bool
    score: float
    category: str | None
    latency_ms: float
    released: int = 0  # outputs: characters released to the client
    tokens: int = 0


@dataclass
class EvalResult:
    outcomes: list[Outcome] = field(default_factory=list)

    @staticmethod
    def _rate(xs: Sequence[Outcome]) -> dict[str, Any]:
        n = len(xs)
        b = sum(o.blocked for o in xs)
        return {"n": n, "blocked": b, "rate": round(b / n, 4) if n else None}

    def _group(self, kind: str, label: str, key: Callable[[Outcome], str]) -> dict[str, Any]:
        groups: dict[str, list[Outcome]] = defaultdict(list)
        for o in self.outcomes:
            if o.row.kind == kind and o.row.label == label:
                groups[key(o)].append(o)
        return {k: self._rate(v) for k, v in sorted(groups.items())}

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in ("input", "output"):
            rows = [o for o in self.outcomes if o.row.kind == kind]
            if not rows:
                continue
            harmful = [o for o in rows if o.row.label == "harmful"]
            harmless = [o for o in rows if o.row.label == "harmless"]
            lat = np.array([o.latency_ms for o in rows])
            k: dict[str, Any] = {
                "harmful": {**self._rate(harmful), "name": "block rate"},
                "harmless": {**self._rate(harmless), "name": "false-positive rate"},
                "harmful_by_category": self._group(kind, "harmful", lambda o: o.row.category),
                "harmless_by_category": self._group(kind, "harmless", lambda o: o.row.category),
                "harmful_by_transform": self._group(kind, "harmful", lambda o: o.row.transform or "none"),
                "harmless_by_transform": self._group(kind, "harmless", lambda o: o.row.transform or "none"),
                "harmful_by_family": self._group(kind, "harmful", lambda o: transform_family(o.row.transform)),
                "harmless_by_family": self._group(kind, "harmless", lambda o: transform_family(o.row.transform)),
                "harmless_by_source": self._group(kind, "harmless", lambda o: o.row.source or "none"),
                "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 4),
                               "p99": round(float(np.percentile(lat, 99)), 4)},
            }
            if kind == "output":
                halted = [o for o in harmful if o.blocked]
                rel = np.array([o.released for o in halted]) if halted else np.array([0])
                toks = sum(o.tokens for o in rows)
                k["released_before_halt_chars"] = {
                    "median": float(np.median(rel)), "p90": float(np.percentile(rel, 90)),
                    "max": int(rel.max())}
                k["us_per_token"] = round(1000 * float(lat.sum()) / max(toks, 1), 3)
            out[kind] = k
        return out


def evaluate(guard: Guard, rows: Sequence[Row], progress: Progress | None = None) -> EvalResult:
    res = EvalResult()
    for i, r in enumerate(rows):
        if r.kind == "input":
            t = time.perf_counter()
            v = guard.check_input(r.text)
            ms = (time.perf_counter() - t) * 1000
            res.outcomes.append(Outcome(r, v.blocked, v.score, v.category, ms))
        else:
            pieces = list(split_stream(r.text))
            t = time.perf_counter()
            mon = guard.monitor_output(r.prompt)
            for p in pieces:
                if mon.blocked:
                    break
                mon.feed(p)
            v = mon.finish()
            ms = (time.perf_counter() - t) * 1000
            res.outcomes.append(Outcome(r, v.blocked, v.score, v.category, ms,
                                        mon.released_chars, len(pieces)))
        if progress:
            progress("evaluate", i + 1, len(rows))
    return res
