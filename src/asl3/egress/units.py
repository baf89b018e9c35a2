"""Sizes, rates and durations as people write them, parsed without guessing.

The rules (the classic traps are Mbit vs MB and KiB vs kB):

- Case matters. `B` is a byte, `b` (or `bit`) is a bit: `100Mb/s` and `100Mbps` are megabits
  per second, `100MB/s` and `100MBps` megabytes per second (8x more).
- Decimal prefixes are powers of 1000 (`kB`/`KB` = 1000 B, `MB` = 10^6 B, `GB`, `TB`, `PB`);
  binary prefixes carry an `i` and are powers of 1024 (`KiB`, `MiB`, `GiB`, `TiB`). `KB` is
  taken as 1000 (SI), never 1024: write `KiB` for 1024.
- Refused as ambiguous, with a hint: all-lower-case `mb`, `gb`, `tb`, `mbps` (milli-bit? megabyte?),
  a bare prefix (`10M`, `1G`, tc's own shorthand), and a rate that is a bare number (tc reads
  `100` as bits per second, most people as bytes).
- A size may be a bare integer: bytes. A duration needs a unit: `ms`, `s`, `m` (minutes),
  `h`, `d`, `w`; `500ms`, `30s`, `5m`, `1.5h`, `24h`.
- A rate is a size (bytes or bits) per second: `100MB/s`, `800Mbit/s`, `1Gbps`, `10MiB/s`;
  the per-second part is `/s`, `/sec` or `ps`.
- A budget is SIZE/PERIOD: `10GB/24h`, `500MB/1h`, `50MB/m` (a period without a number is one).

Every function returns plain numbers (bytes, bytes per second, seconds) and raises
`EgressError` naming the text and what was wrong.
"""

from __future__ import annotations

import math
import re

from asl3.errors import EgressError

_BYTE_UNITS = {
    "B": 1, "byte": 1, "bytes": 1,
    "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4, "PB": 1000**5,
    "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4, "PiB": 1024**5,
}
_BIT_UNITS = {
    "b": 1, "bit": 1, "bits": 1,
    "kb": 1000, "Kb": 1000, "kbit": 1000, "Kbit": 1000, "kbits": 1000, "Kbits": 1000,
    "Mb": 1000**2, "Mbit": 1000**2, "Mbits": 1000**2,
    "Gb": 1000**3, "Gbit": 1000**3, "Gbits": 1000**3,
    "Tb": 1000**4, "Tbit": 1000**4, "Tbits": 1000**4,
    "Kibit": 1024, "Mibit": 1024**2, "Gibit": 1024**3,
}
_AMBIGUOUS = {
    "mb": "write MB (megabytes) or Mbit (megabits)",
    "gb": "write GB (gigabytes) or Gbit (gigabits)",
    "tb": "write TB (terabytes) or Tbit (terabits)",
    "kib": "write KiB (1024 bytes)", "mib": "write MiB", "gib": "write GiB",
    "k": "a bare prefix: write kB (1000 bytes), KiB (1024) or kbit",
    "K": "a bare prefix: write kB (1000 bytes), KiB (1024) or kbit",
    "m": "a bare prefix: write MB, MiB or Mbit", "M": "a bare prefix: write MB, MiB or Mbit",
    "g": "a bare prefix: write GB, GiB or Gbit", "G": "a bare prefix: write GB, GiB or Gbit",
    "t": "a bare prefix: write TB, TiB or Tbit", "T": "a bare prefix: write TB, TiB or Tbit",
}
_DURATION_UNITS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400,
                   "w": 7 * 86400}
_NUM = r"(\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_SPLIT = re.compile(rf"\s*({_NUM})\s*([A-Za-z]*)\s*")
UNLIMITED = ("unlimited", "none", "inf")


def _split(text: str, what: str) -> tuple[float, str]:
    if not isinstance(text, str):
        raise EgressError(f"{what} {text!r} is not text")
    m = _SPLIT.fullmatch(text)
    if not m:
        raise EgressError(f"{what} {text!r} is not a number with a unit, like {_example(what)}")
    value = float(m.group(1))
    if not math.isfinite(value):
        raise EgressError(f"{what} {text!r} is not a finite number")
    return value, m.group(3)


def _example(what: str) -> str:
    return {"size": "500MB, 2GiB or 1TB", "rate": "100MB/s, 800Mbit/s or 1Gbps",
            "duration": "30s, 5m, 1h or 24h"}.get(what.split()[-1], "100MB/s")


def _unit_factor(unit: str, text: str, what: str) -> tuple[float, bool]:
    """(multiplier to bytes, is_bits) for a size unit."""
    if unit in _BYTE_UNITS:
        return float(_BYTE_UNITS[unit]), False
    if unit in _BIT_UNITS:
        return _BIT_UNITS[unit] / 8.0, True
    hint = _AMBIGUOUS.get(unit) or _AMBIGUOUS.get(unit.lower())
    if hint:
        raise EgressError(f"{what} {text!r}: unit {unit!r} is ambiguous; {hint}")
    raise EgressError(f"{what} {text!r}: unknown unit {unit!r} (bytes: B kB MB GB TB KiB MiB "
                      "GiB TiB; bits: bit kbit Mbit Gbit, or kb Mb Gb)")


def parse_size(text: str, what: str = "size") -> int:
    """Bytes in a size: '500MB' -> 500_000_000, '2GiB' -> 2147483648, '8Mbit' -> 1_000_000.

    A bare integer is bytes; a fractional result is rounded to the nearest byte."""
    value, unit = _split(text, what)
    if not unit:
        if value != int(value):
            raise EgressError(f"{what} {text!r}: a bare number is bytes and must be whole")
        return int(value)
    factor, _ = _unit_factor(unit, text, what)
    return int(round(value * factor))


def parse_rate(text: str, what: str = "rate", *, allow_unlimited: bool = False) -> float:
    """Bytes per second: '100MB/s' -> 1e8, '800Mbit/s' -> 1e8, '1Gbps' -> 1.25e8.

    `allow_unlimited`: 'unlimited' (or 'none', 'inf') gives math.inf."""
    if not isinstance(text, str):
        raise EgressError(f"{what} {text!r} is not text")
    t = text.strip()
    if allow_unlimited and t.lower() in UNLIMITED:
        return math.inf
    m = re.fullmatch(r"(.*?)\s*(?:/\s*(?:s|sec|second)|ps)", t)
    if not m:
        raise EgressError(f"{what} {text!r} is not a size per second, like 100MB/s, 800Mbit/s "
                          "or 1Gbps (a bare number is refused: bits or bytes?)")
    value, unit = _split(m.group(1), what)
    if not unit:
        raise EgressError(f"{what} {text!r}: say whether the number is bytes or bits, like "
                          "100MB/s or 800Mbit/s")
    factor, _ = _unit_factor(unit, text, what)
    rate = value * factor
    if rate <= 0:
        raise EgressError(f"{what} {text!r} must be more than zero"
                          + (" (write 'unlimited' for no limit)" if allow_unlimited else ""))
    return rate


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds: '30s' -> 30, '5m' -> 300, '1.5h' -> 5400, '500ms' -> 0.5. Must be > 0."""
    value, unit = _split(text, what)
    if not unit:
        raise EgressError(f"{what} {text!r} needs a unit: ms, s, m, h, d or w (as in 30s, 5m, 1h)")
    if unit not in _DURATION_UNITS:
        raise EgressError(f"{what} {text!r}: unknown unit {unit!r} (ms, s, m = minutes, h, d, w)")
    seconds = value * _DURATION_UNITS[unit]
    if seconds <= 0:
        raise EgressError(f"{what} {text!r} must be more than zero")
    return seconds


def parse_budget(text: str, what: str = "budget") -> tuple[int, float]:
    """(bytes, window seconds) from SIZE/PERIOD: '10GB/24h' -> (10**10, 86400.0)."""
    if not isinstance(text, str) or text.count("/") != 1:
        raise EgressError(f"{what} {text!r} is not SIZE/PERIOD, like 100MB/1m or 10GB/24h")
    size, period = text.split("/")
    period = period.strip()
    if period in _DURATION_UNITS:
        period = "1" + period
    limit = parse_size(size, f"{what} size")
    if limit <= 0:
        raise EgressError(f"{what} {text!r}: the size must be more than zero")
    return limit, parse_duration(period, f"{what} period")


def format_size(n: float, *, binary: bool = False) -> str:
    """'1.50 GB' (powers of 1000) or, with binary, '1.40 GiB'."""
    if n is None or math.isinf(n):
        return "unlimited"
    base, units = (1024.0, ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]) if binary else \
        (1000.0, ["B", "kB", "MB", "GB", "TB", "PB"])
    v = float(n)
    for u in units:
        if abs(v) < base or u == units[-1]:
            return f"{v:.0f} {u}" if u == "B" else f"{v:.2f} {u}"
        v /= base
    raise AssertionError("unreachable")


def format_rate(bps: float) -> str:
    """'12.50 MB/s (100.0 Mbit/s)': bytes and bits, so neither is mistaken for the other."""
    if bps is None or math.isinf(bps):
        return "unlimited"
    return f"{format_size(bps)}/s ({bps * 8 / 1e6:.1f} Mbit/s)"


def format_duration(s: float) -> str:
    """'22.2 h', '83.3 min', '45.0 s', '3.5 d'."""
    if math.isinf(s):
        return "forever"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 3 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"
