"""`asl3 egress`: thin parsing and printing over asl3.egress."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from asl3.cli.common import action, add_as, group
from asl3.errors import EgressError


def _typed(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def f(text: str) -> Any:
        try:
            return parse(text)
        except EgressError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    f.__name__ = parse.__name__.replace("parse_", "")
    return f


def _size(t: str) -> int:
    from asl3.egress.units import parse_size
    return parse_size(t)


def _rate(t: str) -> float:
    from asl3.egress.units import parse_rate
    return parse_rate(t)


def _rate_or_unlimited(t: str) -> float:
    from asl3.egress.units import parse_rate
    return parse_rate(t, allow_unlimited=True)


def _duration(t: str) -> float:
    from asl3.egress.units import parse_duration
    return parse_duration(t)


def _budget(t: str) -> tuple[int, float]:
    from asl3.egress.units import parse_budget
    return parse_budget(t)


def _hostport(t: str) -> tuple[str, int]:
    host, sep, port = t.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise EgressError(f"{t!r} is not HOST:PORT, like 127.0.0.1:3128")
    return host.strip("[]"), int(port)


def _positive(t: str) -> int:
    if not t.strip().isdigit() or int(t) < 1:
        raise argparse.ArgumentTypeError(f"{t!r} is not a whole number of at least 1")
    return int(t)


SIZE, RATE, RATE_U, DURATION, BUDGET, HOSTPORT = (
    _typed(_size), _typed(_rate), _typed(_rate_or_unlimited), _typed(_duration), _typed(_budget),
    _typed(_hostport))

UNITS_HELP = ("units: B kB MB GB TB (x1000), KiB MiB GiB TiB (x1024); bits: bit kbit Mbit Gbit, "
              "Mb = megabit; rates SIZE/s or Mbps/MBps")


def cmd_plan(a: argparse.Namespace) -> int:
    from asl3.egress.plan import plan

    p = plan(a.weights, a.rate, a.detect_within, compression=a.compression, hosts=a.hosts,
             target_share=a.target_share)
    print(json.dumps(p.to_dict(), indent=2) if a.json else p.text())
    return 0


def cmd_proxy(a: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import logging
    import signal

    from asl3.egress.allow import Allowlist
    from asl3.egress.proxy import EgressProxy, ProxyConfig
    from asl3.egress.units import format_rate

    Allowlist(a.allow_dest)  # bad patterns: one line, exit 2, before anything listens
    audit_identity = None
    if a.audit_dir:
        if not a.key:
            raise EgressError("--audit-dir needs --as KEYFILE: the identity that signs the "
                              "proxy's audit entries")
        from asl3.cli.common import load_identity

        audit_identity = load_identity(a)
    trusted = []
    if a.trust and not a.safeguards:
        raise EgressError("--trust goes with --safeguards DIR")
    if a.safeguards:
        from asl3.security import identity
        from asl3.security.change import load_approved

        if not (a.alerts or a.audit_dir):
            raise EgressError("--safeguards needs --alerts FILE or --audit-dir DIR: the proxy "
                              "records there the unblock changes it has used, so that none is "
                              "used twice, across restarts too")
        trusted = [identity.load_public(p) for p in a.trust or []]
        load_approved(a.safeguards, trusted=trusted or None)  # refuse to start on bad settings
    if a.reset_state and not a.state:
        raise EgressError("--reset-state goes with --state PATH: it discards that file's budgets "
                          "and baselines")
    if a.store:
        from asl3.store.engine import resolve_url

        resolve_url(a.store)  # a malformed URL: one line, before anything listens
    host, port = a.listen
    cfg = ProxyConfig(
        host=host, port=port, rate=a.rate, burst=a.burst, client_rate=a.client_rate,
        client_burst=a.client_burst, budgets=list(a.budget or []), allow=list(a.allow_dest),
        idle_timeout=a.idle_timeout, header_timeout=a.header_timeout, n_sigma=a.n_sigma,
        floor_bps=a.floor, warmup=a.warmup, alerts_path=a.alerts, webhook=a.webhook,
        metrics_host=a.metrics[0] if a.metrics else None,
        metrics_port=a.metrics[1] if a.metrics else 0, safeguards=a.safeguards, trusted=trusted,
        audit_dir=a.audit_dir, audit_identity=audit_identity, splice=a.splice,
        store_url=a.store, state_path=a.state, reset_state=a.reset_state)
    logging.basicConfig(level=logging.WARNING if a.quiet else logging.INFO,
                        format="asl3: %(message)s", stream=sys.stderr)

    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):  # two sockets per tunnel
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def run() -> None:
        proxy = EgressProxy(cfg)
        await proxy.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        info = {"listen": f"{cfg.host}:{cfg.port}", "metrics": (
            f"{cfg.metrics_host}:{cfg.metrics_port}" if cfg.metrics_host else None),
            "rate": a.rate, "client_rate": a.client_rate}
        if a.json:
            print(json.dumps(info), flush=True)
        sys.stderr.write(
            f"asl3: egress proxy on {info['listen']}, rate {format_rate(a.rate)}, per client "
            f"{format_rate(a.client_rate) if a.client_rate else 'no limit'}, "
            f"{len(cfg.budgets)} budget(s), {len(cfg.allow)} allowed destination pattern(s)"
            + ("" if cfg.allow else " (every destination refused)")
            + (f", metrics on {info['metrics']}" if info["metrics"] else "")
            + (f", alerts also to store {proxy.alert_store.url}" if proxy.alert_store else "")
            + (f", state in {cfg.state_path}" if cfg.state_path else "") + "\n")
        sys.stderr.flush()
        await stop.wait()
        await proxy.stop()

    with contextlib.suppress(KeyboardInterrupt), _runner(a.event_loop) as runner:
        runner.run(run())
    return 0


def _runner(choice: str) -> Any:
    """An asyncio.Runner on uvloop ('auto': when it is installed) or on the stdlib loop."""
    import asyncio

    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise EgressError("--event-loop uvloop: uvloop is not installed (pip install "
                                  "uvloop)") from None
        else:
            return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    return asyncio.Runner()


def _admin(a: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    import httpx

    host, port = a.admin
    url = f"http://{host}:{port}{path}"
    try:
        r = httpx.request(method, url, json=body, timeout=10)
    except httpx.HTTPError as e:
        raise EgressError(f"cannot reach the proxy's admin endpoint {url}: {e}") from None
    try:
        out = r.json()
    except ValueError:
        raise EgressError(f"{url} answered {r.status_code} without JSON") from None
    if r.status_code != 200:
        raise EgressError(f"refused ({r.status_code}): {out.get('error', out)}")
    return out


def cmd_unblock(a: argparse.Namespace) -> int:
    from asl3.cli.common import load_identity
    from asl3.egress.admin import signed_unblock
    from asl3.security.change import client_address

    client = client_address(a.client, "CLIENT")
    if a.safeguards:  # a friendly early answer; the proxy checks all of it again itself
        from asl3.security.change import load_approved

        u = load_approved(a.safeguards).unblock(a.change)
        if u is None:
            raise EgressError(f"change {a.change} is not an applied unblock change in "
                              f"{a.safeguards} (asl3 change list {a.safeguards})")
        if u.client != client:
            raise EgressError(f"change {a.change} unblocks {u.client}, not {client}")
    out = _admin(a, "POST", "/unblock",
                 signed_unblock(load_identity(a), client, a.change, a.reason or ""))
    print(json.dumps(out) if a.json else
          f"unblocked {out['unblocked']} with change {out['change']} (approved by "
          f"{', '.join(out['approvers'])}; used by {out['by']})")
    return 0


def cmd_status(a: argparse.Namespace) -> int:
    out = _admin(a, "GET", "/status")
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"proxy {out['listen']}: {out['open_tunnels']} open tunnel(s), "
          f"{len(out['blocked'])} blocked client(s)")
    for c, al in out["blocked"].items():
        print(f"  blocked {c}: {al['reason']}")
    return 0


def _client_filter(text: str) -> str:
    """A client address in the form the proxy records it ('10.0.0.7', '2001:db8::1')."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(text.strip().strip("[]")))
    except ValueError:
        raise EgressError(f"--client {text!r} is not an IP address (an egress client is its "
                          "source address)") from None


def _alert_what(r: Any) -> str:
    """'budget: 1.20 MB of 1.00 MB per 1 h' / 'rate: 80 MB/s over 50 MB/s' for the table."""
    from asl3.egress.units import format_duration, format_rate, format_size

    if r.kind is None:
        return "-"
    where = f" to {r.dest}" if r.dest and r.scope == "destination" else ""
    if r.observed is None or r.limit is None:
        return f"{r.kind}{where}"
    if r.kind == "budget":
        per = f" per {format_duration(r.window_s)}" if r.window_s else ""
        return f"budget: {format_size(r.observed)} of {format_size(r.limit)}{per}"
    return f"{r.scope or ''} rate{where}: {format_rate(r.observed)} over {format_rate(r.limit)}"


def cmd_alerts(a: argparse.Namespace) -> int:
    from datetime import datetime, timedelta, timezone

    from asl3.egress.units import format_duration
    from asl3.store import Store

    client = _client_filter(a.client) if a.client else None
    since = datetime.now(timezone.utc) - timedelta(seconds=a.since) if a.since else None
    with Store(a.store) as store:
        rows = store.egress_alerts(a.limit, client=client, since=since)
    if a.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2, default=str))
        return 0
    if not rows:
        print(f"no egress blocks or unblocks in {store.url}"
              + (f" for {client}" if client else "")
              + (f" in the last {format_duration(a.since)}" if a.since else ""))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"asl3 egress alerts ({store.url}), newest first")
    for c in ("time (UTC)", "event", "client", "alert", "reason", "by / change"):
        t.add_column(c)
    for r in rows:
        who = f"{r.by or '?'}, change {r.change}" if r.event == "unblock" else "-"
        what = _alert_what(r)
        if r.event == "unblock" and what != "-":
            what = f"lifted: {what}"
        t.add_row(f"{r.time:%Y-%m-%d %H:%M:%S}", r.event, r.client, what,
                  r.reason or "-", who)
    # piped into a file or grep, a row stays on one line rather than wrapping at 80 columns
    Console(width=None if sys.stdout.isatty() else 200).print(t)
    return 0


def cmd_rules(a: argparse.Namespace) -> int:
    from asl3.egress.rules import nft_ruleset, tc_commands

    if a.format == "nft":
        text = nft_ruleset(a.iface, a.rate, burst=a.burst, quota=a.quota, allow_to=a.allow_to)
    else:
        if a.quota or a.allow_to:
            raise EgressError("--quota and --allow-to need --format nft (tc only shapes)")
        text = tc_commands(a.iface, a.rate, burst=a.burst)
    print(json.dumps({"format": a.format, "rules": text}) if a.json else text, end="")
    return 0


def add_parsers(sub: Any) -> None:
    esub = group(sub, "egress", "egress bandwidth controls: proxy, detection, rules, budget maths", (
        "Restrict and watch the outbound traffic of the environment that holds model weights, so\n"
        "that moving the weights out takes far longer than noticing it.\n\n"
        "examples:\n"
        "  asl3 egress plan --weights 1TB --rate 100Mbit/s --detect-within 1h --compression 16\n"
        "  asl3 egress proxy --listen 10.0.0.1:3128 --rate 10MB/s --client-rate 2MB/s \\\n"
        "      --budget 100MB/1m --budget 2GB/1h --budget 10GB/24h \\\n"
        "      --allow-dest '*.pypi.org:443' --allow-dest 'github.com:443' \\\n"
        "      --metrics 127.0.0.1:9110 --alerts alerts.jsonl --safeguards settings \\\n"
        "      --store sqlite:///asl3.db --state egress-state.json\n"
        "  asl3 egress alerts --store sqlite:///asl3.db --since 24h\n"
        "  asl3 change propose settings --unblock 10.0.0.7 --reason 'backup' --as alice.key  # ID\n"
        "  asl3 change approve settings ID --as bob.key && asl3 change apply settings ID --as bob.key\n"
        "  asl3 egress unblock 10.0.0.7 --admin 127.0.0.1:9110 --change ID --as alice.key\n"
        "  asl3 egress rules --iface eth0 --rate 100Mbit/s --format nft > egress.nft\n\n"
        + UNITS_HELP))

    p = action(esub, "plan", "how long exfiltrating the weights takes at a rate limit",
               "asl3 egress plan --weights 1TB --rate 100Mbit/s --detect-within 1h "
               "--compression 16 --hosts 4 --json", cmd_plan,
               json_help="print every figure as JSON (exfil_time_s, share_before_detection, "
                         "required_rate_bytes_per_s, ...)")
    p.add_argument("--weights", required=True, type=SIZE, metavar="SIZE",
                   help="size of the weights: 140GB, 1TB, 300GiB")
    p.add_argument("--rate", required=True, type=RATE, metavar="RATE",
                   help="egress limit per host: 100Mbit/s, 10MB/s, 1Gbps")
    p.add_argument("--detect-within", required=True, type=DURATION, metavar="DURATION",
                   help="how soon an exfiltration is noticed: 10m, 1h, 24h")
    p.add_argument("--compression", type=float, default=1.0, metavar="X",
                   help="compression the attacker achieves (default 1; assume 16 or more for "
                        "quantized, packed weights)")
    p.add_argument("--hosts", type=int, default=1, metavar="N",
                   help="compromised hosts, each at --rate (limits add up; default 1)")
    p.add_argument("--target-share", type=float, default=0.1, metavar="X",
                   help="largest share of the weights allowed out before detection (default 0.1)")

    x = action(esub, "proxy", "run the enforcing egress proxy (HTTP and HTTPS CONNECT)",
               "asl3 egress proxy --listen 10.0.0.1:3128 --rate 10MB/s --client-rate 2MB/s "
               "--budget 100MB/1m --budget 10GB/24h --allow-dest '*.pypi.org:443' "
               "--metrics 127.0.0.1:9110 --alerts alerts.jsonl --safeguards settings "
               "--store sqlite:///asl3.db --state /var/lib/asl3/egress-state.json", cmd_proxy,
               json_help="print {listen, metrics} as JSON once listening")
    x.add_argument("--listen", required=True, type=HOSTPORT, metavar="HOST:PORT",
                   help="address for the secure hosts (port 0: any free port)")
    x.add_argument("--rate", required=True, type=RATE_U, metavar="RATE",
                   help="enclave-wide outbound rate: 10MB/s, 100Mbit/s, or 'unlimited'")
    x.add_argument("--burst", type=SIZE, metavar="SIZE",
                   help="bytes that may pass at once (default: 10 ms of --rate, >= 256KiB)")
    x.add_argument("--client-rate", type=RATE, metavar="RATE",
                   help="outbound rate per client (source address), on top of --rate")
    x.add_argument("--client-burst", type=SIZE, metavar="SIZE")
    x.add_argument("--budget", type=BUDGET, action="append", metavar="SIZE/PERIOD",
                   help="hard per-client byte budget over a rolling window, repeatable: "
                        "100MB/1m, 2GB/1h, 10GB/24h. Crossing it blocks the client")
    x.add_argument("--allow-dest", action="append", default=[], metavar="PATTERN",
                   help="allowed destination HOST_GLOB[:PORT], repeatable: '*.pypi.org:443', "
                        "'10.1.2.3', '[::1]:8080'. None: every destination is refused")
    x.add_argument("--metrics", type=HOSTPORT, metavar="HOST:PORT",
                   help="serve /metrics, /status and /unblock here (keep it on loopback or a "
                        "management network)")
    x.add_argument("--alerts", metavar="FILE", help="append blocks and unblocks here (JSONL)")
    x.add_argument("--webhook", metavar="URL", help="POST each block as JSON here (2 s timeout)")
    x.add_argument("--safeguards", metavar="DIR",
                   help="change-management directory (asl3 change): a block is lifted only by "
                        "an applied unblock change from it, used once. Without it blocks last "
                        "until the proxy restarts. Needs --alerts or --audit-dir")
    x.add_argument("--trust", action="append", metavar="PUBFILE",
                   help="with --safeguards: DIR/change.json must be signed by this identity "
                        "(repeatable)")
    x.add_argument("--audit-dir", metavar="DIR",
                   help="also write blocks and unblocks to the audit log in DIR (needs --as)")
    x.add_argument("--as", dest="key", metavar="KEYFILE",
                   help="the proxy's identity, which signs its audit entries")
    x.add_argument("--passphrase-env", metavar="VAR",
                   help="read the key file's passphrase from this environment variable")
    x.add_argument("--idle-timeout", type=_typed(_duration), default=300.0, metavar="DURATION",
                   help="close a tunnel idle (or not read) this long (default 300s)")
    x.add_argument("--header-timeout", type=_typed(_duration), default=10.0, metavar="DURATION",
                   help="time allowed for a request head (default 10s)")
    x.add_argument("--n-sigma", type=float, default=6.0, metavar="N",
                   help="rate anomaly: above the EWMA mean + N std (default 6)")
    x.add_argument("--floor", type=RATE, default=50e6, metavar="RATE",
                   help="rate anomaly: and above this rate (default 50MB/s)")
    x.add_argument("--warmup", type=int, default=60, metavar="N",
                   help="intervals (1 s) of a client's baseline before it can alert (default 60)")
    x.add_argument("--event-loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                   help="auto: uvloop when installed, else the stdlib loop")
    x.add_argument("--splice", action="store_true",
                   help="Linux: relay bulk unshaped transfers with splice(2), no copy through "
                        "the proxy (less proxy CPU; on loopback not faster)")
    x.add_argument("--store", metavar="URL",
                   help="also write every block and unblock to this event store, table "
                        "egress_alerts (sqlite:///FILE, a file path, or postgresql://USER@HOST/DB: "
                        "the URL forms of 'asl3 serve --db'). Written by a background thread: a "
                        "database that is down delays no block (the --alerts file stays the "
                        "first record; failures are logged and counted in "
                        "asl3_egress_store_failures_total). Read it with 'asl3 egress alerts'")
    x.add_argument("--state", metavar="PATH",
                   help="keep the budgets' byte counts and the rate baselines in this JSON file, "
                        "saved atomically every tick (1 s) and at shutdown, loaded at start: "
                        "without it a restart hands every client a fresh 24h budget and a new "
                        "alert-free warm-up. Missing: start empty. Unreadable or invalid: the "
                        "proxy refuses to start (see --reset-state)")
    x.add_argument("--reset-state", action="store_true",
                   help="with --state: discard the state file (moved aside as PATH.reset-TIME, "
                        "logged, and recorded in the audit log with --audit-dir) and start with "
                        "empty budgets and baselines. Use it once, deliberately, when the file "
                        "is damaged")
    x.add_argument("--quiet", action="store_true", help="log warnings only")

    u = action(esub, "unblock", "lift a client's block with an applied unblock change",
               "asl3 egress unblock 10.0.0.7 --admin 127.0.0.1:9110 --change ID --as alice.key "
               "--safeguards settings", cmd_unblock)
    u.description += (
        "\n\nThe change comes first: asl3 change propose DIR --unblock CLIENT --reason ...,\n"
        "approved by K other members, applied. The proxy (started with --safeguards DIR) checks\n"
        "that the change is applied, for this client, not expired, not used before, and newer\n"
        "than the block, and that you (--as) are a member of the roster; each change is used\n"
        "once.")
    u.add_argument("client", metavar="CLIENT", help="the blocked client's address")
    u.add_argument("--admin", required=True, type=HOSTPORT, metavar="HOST:PORT",
                   help="the proxy's --metrics address")
    u.add_argument("--change", required=True, metavar="ID",
                   help="the applied unblock change (asl3 change propose --unblock CLIENT)")
    u.add_argument("--safeguards", metavar="DIR",
                   help="check the change here first (the proxy checks it again, in the "
                        "directory it was started with)")
    u.add_argument("--reason", metavar="TEXT",
                   help="a note for the log (the change carries the approved reason)")
    add_as(u)

    st = action(esub, "status", "show a running proxy's tunnels, blocks and budget usage",
                "asl3 egress status --admin 127.0.0.1:9110 --json", cmd_status)
    st.add_argument("--admin", required=True, type=HOSTPORT, metavar="HOST:PORT",
                    help="the proxy's --metrics address")

    al = action(esub, "alerts", "list the proxy's blocks and unblocks from the event store",
                "asl3 egress alerts --store sqlite:///asl3.db --client 10.0.0.7 --since 24h",
                cmd_alerts, json_help="print the rows as JSON (every field, the proxy's full "
                                      "record under 'details')")
    al.description += (
        "\n\nThe proxy writes them there when started with --store URL (one row per client a\n"
        "block names; an unblock names who used which change). Newest first.")
    al.add_argument("--store", metavar="URL",
                    help="the proxy's --store: sqlite:///FILE, a file path or "
                         "postgresql://USER@HOST/DB (default: $ASL3_DB, else sqlite:///asl3.db)")
    al.add_argument("--client", metavar="ADDR", help="only this client's blocks and unblocks")
    al.add_argument("--since", type=DURATION, metavar="DURATION",
                    help="only the last DURATION: 30m, 24h, 7d")
    al.add_argument("--limit", type=_positive, default=100, metavar="N",
                    help="at most N rows (default 100)")

    r = action(esub, "rules", "print kernel rules (nftables or tc HTB) that enforce a rate",
               "asl3 egress rules --iface eth0 --rate 100Mbit/s --quota 50GB "
               "--allow-to 10.0.0.1:3128 --format nft > egress.nft && nft -f egress.nft",
               cmd_rules, json_help="print {format, rules} as JSON")
    r.add_argument("--iface", required=True, metavar="IF", help="the outbound interface")
    r.add_argument("--rate", required=True, type=RATE, metavar="RATE",
                   help="rate: 100Mbit/s, 12.5MB/s")
    r.add_argument("--format", choices=["nft", "tc"], default="nft",
                   help="nft: nftables ruleset (counter, quota, allow-to, rate limit: "
                        "policing); tc: HTB shaping commands (default nft)")
    r.add_argument("--burst", type=SIZE, metavar="SIZE", help="burst size")
    r.add_argument("--quota", type=SIZE, metavar="SIZE",
                   help="nft: drop everything once this many bytes have left (until reset)")
    r.add_argument("--allow-to", action="append", metavar="ADDR[:PORT]",
                   help="nft: drop traffic out of IF to anything else (e.g. the proxy)")
