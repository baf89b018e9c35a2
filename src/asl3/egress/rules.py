"""Kernel-level egress rules below the proxy: an nftables ruleset or tc HTB commands.

nftables (`--format nft`), one table `inet asl3_egress` with output and forward chains on the
interface: a named counter of every outbound byte, an optional named quota (`--quota`, dropped
once over: a hard cap until the quota is reset, `nft reset quota inet asl3_egress egress_quota`),
an optional destination restriction (`--allow-to ADDR[:PORT]`: everything else leaving the
interface is dropped, so the proxy cannot be bypassed), and a byte-rate limit (`limit rate over
... drop`). The nft limit is *policing* (excess packets are dropped; TCP backs off), not
shaping; the proxy shapes, the kernel is the backstop, so set its rate at or a little above
the proxy's. Load with `nft -f FILE`; `nft -c -f FILE` checks it.

tc (`--format tc`): an HTB root qdisc whose default class is shaped to the rate (ceil = rate),
fq_codel beneath. Rates are written in bits (`...bit`): in tc, `bps` means *bytes* per second,
a classic trap. Shaping applies to packets leaving IF.
"""

from __future__ import annotations

import ipaddress
import math
import re

from asl3.errors import EgressError

_IFACE = re.compile(r"[A-Za-z0-9_.\-@]{1,15}")


def _check(iface: str, rate: float) -> None:
    if not _IFACE.fullmatch(iface):
        raise EgressError(f"--iface {iface!r} is not an interface name")
    if not (rate > 0 and math.isfinite(rate)):
        raise EgressError("--rate must be a finite rate above zero for kernel rules")


def _allow_to(items: list[str]) -> list[tuple[str, str, int | None]]:
    out = []
    for item in items:
        addr, port = item, None
        m = re.fullmatch(r"\[(.+)\]:(\d+)|([^:\[\]]+):(\d+)", item)
        if m:
            addr, port = m.group(1) or m.group(3), int(m.group(2) or m.group(4))
            if not 0 < port < 65536:
                raise EgressError(f"--allow-to {item!r}: port {port} is not 1-65535")
        try:
            net = ipaddress.ip_network(addr.strip("[]"), strict=False)
        except ValueError:
            raise EgressError(f"--allow-to {item!r} is not ADDR[/LEN][:PORT] (an IP address, "
                              "not a name)") from None
        out.append(("ip" if net.version == 4 else "ip6", str(net), port))
    return out


def nft_ruleset(iface: str, rate: float, *, burst: float | None = None,
                quota: int | None = None, allow_to: list[str] | None = None) -> str:
    _check(iface, rate)
    burst_b = int(burst if burst is not None else max(rate * 0.1, 64 * 1024))
    allowed = _allow_to(allow_to or [])
    q = f'"{iface}"'
    lines = [
        "# asl3 egress: kernel rules below the proxy (load: nft -f FILE; check: nft -c -f FILE)",
        "table inet asl3_egress",
        "delete table inet asl3_egress",
        "table inet asl3_egress {",
        "\tcounter egress_bytes {",
        "\t}",
    ]
    if quota:
        lines += ["\tquota egress_quota {", f"\t\tover {int(quota)} bytes", "\t}"]
    for hook in ("output", "forward"):
        lines += [f"\tchain {hook} {{",
                  f"\t\ttype filter hook {hook} priority filter; policy accept;",
                  f"\t\toifname {q} counter name \"egress_bytes\""]
        if quota:
            lines.append(f"\t\toifname {q} quota name \"egress_quota\" drop")
        if allowed:
            for fam, net, port in allowed:
                tail = f" tcp dport {port}" if port else ""
                lines.append(f"\t\toifname {q} {fam} daddr {net}{tail} jump limited")
            lines.append(f"\t\toifname {q} drop")
        else:
            lines.append(f"\t\toifname {q} jump limited")
        lines.append("\t}")
    lines += ["\tchain limited {",
              f"\t\tlimit rate over {int(rate)} bytes/second burst {burst_b} bytes drop",
              "\t\taccept", "\t}", "}"]
    return "\n".join(lines) + "\n"


def tc_commands(iface: str, rate: float, *, burst: float | None = None) -> str:
    _check(iface, rate)
    bits = int(round(rate * 8))
    burst_b = int(burst if burst is not None else max(rate * 0.01, 16 * 1024))
    return "\n".join([
        f"# asl3 egress: shape {iface} to {bits} bit/s ({int(rate)} bytes/s); in tc 'bps' "
        "means bytes/s, so rates are written in bit",
        f"tc qdisc replace dev {iface} root handle 1: htb default 10",
        f"tc class replace dev {iface} parent 1: classid 1:1 htb rate {bits}bit ceil {bits}bit "
        f"burst {burst_b}b cburst {burst_b}b",
        f"tc class replace dev {iface} parent 1:1 classid 1:10 htb rate {bits}bit ceil {bits}bit "
        f"burst {burst_b}b cburst {burst_b}b",
        f"tc qdisc replace dev {iface} parent 1:10 handle 10: fq_codel",
    ]) + "\n"
