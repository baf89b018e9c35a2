"""Exfiltration budget maths: how long stolen weights take to leave at a rate limit.

Caps hold enclave-wide: per-host limits add up across compromised hosts (N hosts at R each move
N*R), and an attacker compresses (weights compress 16x or more once quantized and packed), so
the bytes to move are weights / compression. With detection within T seconds:

    transfer_bytes         = weights / compression
    aggregate_rate         = rate * hosts
    exfil_time_s           = transfer_bytes / aggregate_rate
    bytes_before_detection = aggregate_rate * T
    share_before_detection = min(1, bytes_before_detection / transfer_bytes)
    required_rate          = target_share * transfer_bytes / T    (aggregate; per host / hosts)

Example (REFERENCES): 1 TB at 100 Mbit/s is 1e12 / 12.5e6 = 80000 s = 22.2 h; compressed 16x,
5000 s = 1.4 h.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from asl3.egress.units import format_duration, format_rate, format_size
from asl3.errors import EgressError


@dataclass(frozen=True)
class Plan:
    weights_bytes: int
    compression: float
    transfer_bytes: float
    rate_bytes_per_s: float
    hosts: int
    aggregate_rate_bytes_per_s: float
    exfil_time_s: float
    exfil_time_uncompressed_s: float
    detect_within_s: float
    bytes_before_detection: float
    share_before_detection: float
    target_share: float
    required_rate_bytes_per_s: float
    required_rate_per_host_bytes_per_s: float
    within_target: bool

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)

    def text(self) -> str:
        lines = [
            f"weights {format_size(self.weights_bytes)} "
            f"({format_size(self.weights_bytes, binary=True)}), compressed {self.compression:g}x "
            f"-> {format_size(self.transfer_bytes)} to move",
            f"rate {format_rate(self.rate_bytes_per_s)} per host x {self.hosts} host(s) = "
            f"{format_rate(self.aggregate_rate_bytes_per_s)} enclave-wide",
            f"time to exfiltrate: {format_duration(self.exfil_time_s)} "
            f"({format_duration(self.exfil_time_uncompressed_s)} uncompressed)",
            f"before detection ({format_duration(self.detect_within_s)}): "
            f"{format_size(self.bytes_before_detection)} = "
            f"{self.share_before_detection:.2%} of the weights",
            f"to keep that under {self.target_share:.0%}: at most "
            f"{format_rate(self.required_rate_bytes_per_s)} enclave-wide"
            + (f", {format_rate(self.required_rate_per_host_bytes_per_s)} per host"
               if self.hosts > 1 else ""),
            "verdict: " + ("within target" if self.within_target else
                           "OVER target: lower the rate or detect sooner"),
        ]
        return "\n".join(lines)


def plan(weights_bytes: int, rate_bytes_per_s: float, detect_within_s: float, *,
         compression: float = 1.0, hosts: int = 1, target_share: float = 0.1) -> Plan:
    if weights_bytes <= 0:
        raise EgressError("--weights must be more than zero bytes")
    if not (rate_bytes_per_s > 0 and math.isfinite(rate_bytes_per_s)):
        raise EgressError("--rate must be a finite rate above zero")
    if not (detect_within_s > 0 and math.isfinite(detect_within_s)):
        raise EgressError("--detect-within must be a finite duration above zero")
    if not (compression >= 1 and math.isfinite(compression)):
        raise EgressError(f"--compression {compression:g} must be at least 1 (1 = none)")
    if hosts < 1:
        raise EgressError(f"--hosts {hosts} must be at least 1")
    if not 0 < target_share <= 1:
        raise EgressError(f"--target-share {target_share:g} must be in (0, 1]")
    transfer = weights_bytes / compression
    aggregate = rate_bytes_per_s * hosts
    before = aggregate * detect_within_s
    required = target_share * transfer / detect_within_s
    share = min(1.0, before / transfer)
    return Plan(weights_bytes=weights_bytes, compression=compression, transfer_bytes=transfer,
                rate_bytes_per_s=rate_bytes_per_s, hosts=hosts,
                aggregate_rate_bytes_per_s=aggregate, exfil_time_s=transfer / aggregate,
                exfil_time_uncompressed_s=weights_bytes / aggregate,
                detect_within_s=detect_within_s, bytes_before_detection=before,
                share_before_detection=share, target_share=target_share,
                required_rate_bytes_per_s=required,
                required_rate_per_host_bytes_per_s=required / hosts,
                within_target=share <= target_share)
