"""Egress units and budget maths: sizes, rates and durations are parsed without guessing, and the
exfiltration plan matches hand computations.

Specification: bytes (B) and bits (b, bit) are told apart by case; decimal prefixes are powers
of 1000, binary ones (KiB, MiB) of 1024; ambiguous units (bare 'mb', a bare prefix '10M', a rate
without a unit) are refused with a reason. `asl3 egress plan` prints the time to move the
weights, the share that leaves before detection, and the rate that keeps that share under a
target, also as JSON with exfil_time_s among the fields.
"""

from __future__ import annotations

import json
import math

import pytest

from asl3.cli import main
from asl3.egress.plan import plan
from asl3.egress.units import (
    format_rate,
    format_size,
    parse_budget,
    parse_duration,
    parse_rate,
    parse_size,
)
from asl3.errors import EgressError


@pytest.mark.parametrize("text, expected", [
    ("0", 0), ("1500", 1500), ("1B", 1), ("1kB", 1000), ("1KB", 1000), ("1KiB", 1024),
    ("1MB", 10**6), ("1MiB", 2**20), ("1.5GB", 1_500_000_000), ("2GiB", 2 * 2**30),
    ("1TB", 10**12), ("1TiB", 2**40), ("8bit", 1), ("8Mbit", 10**6), ("8Mb", 10**6),
    ("1Gbit", 125_000_000), (" 70 GB ", 70 * 10**9), ("1e3MB", 10**9),
])
def test_sizes_in_bytes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("100MB/s", 1e8), ("100MBps", 1e8), ("800Mbit/s", 1e8), ("800Mbps", 1e8),
    ("800Mb/s", 1e8), ("1Gbps", 1.25e8), ("1Gbit/s", 1.25e8), ("10MiB/s", 10 * 2**20),
    ("1kB/s", 1000), ("1KiB/sec", 1024), ("100Mbit/s", 12.5e6),
])
def test_rates_in_bytes_per_second(text, expected):
    assert parse_rate(text) == pytest.approx(expected)


def test_bits_and_bytes_differ_by_eight():
    assert parse_rate("100MB/s") == 8 * parse_rate("100Mbit/s")
    assert parse_size("1KiB") - parse_size("1kB") == 24


@pytest.mark.parametrize("text, hint", [
    ("10mb", "ambiguous"), ("10M", "bare prefix"), ("1gb", "ambiguous"), ("5K", "bare prefix"),
    ("10XB", "unknown unit"), ("ten MB", "not a number"), ("1.5", "whole"), ("", "not a number"),
])
def test_bad_sizes_are_refused_with_a_reason(text, hint):
    with pytest.raises(EgressError, match=hint):
        parse_size(text)


@pytest.mark.parametrize("text, hint", [
    ("100", "size per second"), ("100/s", "bytes or bits"), ("10mbps", "ambiguous"),
    ("0MB/s", "more than zero"), ("fast", "size per second"),
])
def test_bad_rates_are_refused_with_a_reason(text, hint):
    with pytest.raises(EgressError, match=hint):
        parse_rate(text)


def test_unlimited_rate_only_where_allowed():
    assert parse_rate("unlimited", allow_unlimited=True) == math.inf
    with pytest.raises(EgressError):
        parse_rate("unlimited")


@pytest.mark.parametrize("text, seconds", [
    ("500ms", 0.5), ("30s", 30), ("5m", 300), ("1.5h", 5400), ("24h", 86400), ("2d", 172800),
    ("1w", 604800),
])
def test_durations_in_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "5 months", "0s", "-1h"])
def test_bad_durations_are_refused(text):
    with pytest.raises(EgressError):
        parse_duration(text)


def test_budgets_are_size_per_period():
    assert parse_budget("10GB/24h") == (10**10, 86400)
    assert parse_budget("50MB/m") == (50 * 10**6, 60)
    for bad in ("10GB", "10GB/", "0MB/1h", "10GB/1x", "1/2/3"):
        with pytest.raises(EgressError):
            parse_budget(bad)


def test_formatting_names_both_bytes_and_bits():
    assert format_size(1.5e9) == "1.50 GB"
    assert format_size(2**30, binary=True) == "1.00 GiB"
    assert format_rate(12.5e6) == "12.50 MB/s (100.0 Mbit/s)"


# -- the plan -----------------------------------------------------------------------------------
def test_one_terabyte_at_100_mbit_takes_22_hours_and_compressed_1_4():
    p = plan(10**12, 12.5e6, 3600)
    assert p.exfil_time_s == pytest.approx(80_000)          # 1e12 B / 12.5e6 B/s
    assert p.exfil_time_s / 3600 == pytest.approx(22.22, abs=0.01)
    c = plan(10**12, 12.5e6, 3600, compression=16)
    assert c.exfil_time_s == pytest.approx(5000)            # 1.39 h
    assert c.exfil_time_uncompressed_s == pytest.approx(80_000)


def test_share_before_detection_and_required_rate_by_hand():
    # 1 TB, 16x -> 62.5 GB to move; 4 hosts x 12.5 MB/s = 50 MB/s; detect in 1 h -> 180 GB.
    p = plan(10**12, 12.5e6, 3600, compression=16, hosts=4, target_share=0.1)
    assert p.transfer_bytes == pytest.approx(62.5e9)
    assert p.aggregate_rate_bytes_per_s == pytest.approx(50e6)
    assert p.bytes_before_detection == pytest.approx(180e9)
    assert p.share_before_detection == 1.0 and not p.within_target
    # 10% of 62.5 GB in 3600 s = 1_736_111 B/s enclave-wide, 434_028 B/s per host
    assert p.required_rate_bytes_per_s == pytest.approx(6.25e9 / 3600)
    assert p.required_rate_per_host_bytes_per_s == pytest.approx(6.25e9 / 3600 / 4)
    ok = plan(10**12, 1e6, 600)                             # 600 MB of 1 TB = 0.06%
    assert ok.share_before_detection == pytest.approx(6e-4) and ok.within_target


@pytest.mark.parametrize("kw", [{"compression": 0.5}, {"hosts": 0}, {"target_share": 0}])
def test_plan_refuses_nonsense(kw):
    with pytest.raises(EgressError):
        plan(10**12, 1e6, 60, **kw)


def test_cli_plan_json(capsys):
    rc = main(["egress", "plan", "--weights", "1TB", "--rate", "100Mbit/s",
               "--detect-within", "1h", "--compression", "16", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["exfil_time_s"] == pytest.approx(5000)
    assert out["share_before_detection"] == 0.72  # 45 GB of 62.5 GB
    assert {"required_rate_bytes_per_s", "hosts", "target_share"} <= set(out)


def test_cli_plan_text(capsys):
    assert main(["egress", "plan", "--weights", "70GB", "--rate", "1MB/s",
                 "--detect-within", "24h", "--hosts", "2"]) == 0
    out = capsys.readouterr().out
    assert "time to exfiltrate: 9.7 h" in out and "enclave-wide" in out


def test_cli_plan_bad_unit_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["egress", "plan", "--weights", "70gb", "--rate", "1MB/s", "--detect-within", "1h"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "ambiguous" in err[-1]


# -- kernel rules -------------------------------------------------------------------------------
def test_cli_rules_write_rates_in_the_units_each_tool_expects(capsys):
    assert main(["egress", "rules", "--iface", "eth0", "--rate", "100Mbit/s", "--format", "tc"]) == 0
    tc = capsys.readouterr().out
    assert "htb rate 100000000bit ceil 100000000bit" in tc   # tc: bits (its 'bps' is bytes)
    assert main(["egress", "rules", "--iface", "eth0", "--rate", "100Mbit/s", "--quota", "1GB",
                 "--allow-to", "10.0.0.1:3128"]) == 0
    nft = capsys.readouterr().out
    assert "limit rate over 12500000 bytes/second" in nft   # nft: bytes
    assert "over 1000000000 bytes" in nft and "ip daddr 10.0.0.1/32 tcp dport 3128" in nft


@pytest.mark.parametrize("argv, reason", [
    (["--iface", "eth0;rm", "--rate", "1MB/s"], "not an interface name"),
    (["--iface", "eth0", "--rate", "1MB/s", "--format", "tc", "--quota", "1GB"], "need --format nft"),
    (["--iface", "eth0", "--rate", "1MB/s", "--allow-to", "proxy.local"], "not ADDR"),
])
def test_cli_rules_bad_input_exit_2(capsys, argv, reason):
    assert main(["egress", "rules", *argv]) == 2
    assert reason in capsys.readouterr().err
