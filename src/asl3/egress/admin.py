"""The proxy's metrics and admin endpoint (`--metrics HOST:PORT`, loopback by default).

    GET  /metrics   Prometheus text format
    GET  /status    JSON: open tunnels, blocked clients and why, budget usage per client
    POST /unblock   {"request": {...}, "operator": PUBLIC IDENTITY, "sig": BASE64}

Lifting a block needs an approved change. The proxy runs with `--safeguards DIR`, the change
management directory (`asl3 change`), and lifts the block of CLIENT (`asl3 egress unblock CLIENT
--change ID --as KEY`) only when all of this holds, checked here, at the proxy:

1. `change` is, in `load_approved(DIR)` read at that moment (every proposal, approval and apply
   record verified again; `--trust` pins the roster's signer), an applied "unblock" change
   (`asl3 change propose --unblock CLIENT`, approved by K members other than its proposer) for
   exactly this client address;
2. its `until` has not passed;
3. it has not been used: each change lifts one block. The proxy writes every unblock, with its
   change id, to the alert file and the audit log before answering, and reads the used ids back
   from them when it starts, so a restart does not make a change usable again (the command line
   therefore wants `--alerts` or `--audit-dir` with `--safeguards`);
4. the client is blocked now (409 otherwise; the change stays unused), and the block began before
   the change was proposed (5 minutes of clock skew allowed), so an unblock cannot be approved
   in advance for a block that does not exist yet;
5. the request is signed by a member of the roster in force: `request` = {"action":
   "egress.unblock", "client", "change", "reason" (a note for the log), "time" (unix seconds),
   "nonce"}, `sig` = Ed25519 over its canonical JSON, time within 5 minutes, nonce never seen.

Why the signature stays although the change is what authorises: change ids are not secret (they
sit in the settings directory and the audit log) and this endpoint speaks plain HTTP, so without
it anyone who can reach the port, a compromised secure host included, could spend an approved
change at a moment of their choosing. The signature authenticates the call and names, in the
log, the member who used the change; the two-party decision is the change itself.

Without `--safeguards` every unblock is refused (blocks last until the proxy restarts): there is
no operator-only mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from typing import Any

from asl3.errors import EgressError

MAX_SKEW = 300.0
NO_CHANGE_MANAGEMENT = ("unblocking needs change management: this proxy was started without "
                        "--safeguards DIR, so its blocks last until it restarts (an unblock must "
                        "be an applied change: asl3 change propose DIR --unblock CLIENT)")


def signed_unblock(identity: Any, client: str, change: str, reason: str = "",
                   now: float | None = None) -> dict[str, Any]:
    """The body of `POST /unblock`: a request to spend unblock change `change` on `client`."""
    from asl3.security.encoding import b64, canonical

    req = {"action": "egress.unblock", "client": client, "change": change, "reason": reason,
           "time": time.time() if now is None else now, "nonce": secrets.token_hex(16)}
    return {"request": req, "operator": identity.public().to_dict(),
            "sig": b64(identity.sign(canonical(req)))}


def verify_unblock(body: Any, members: Any, seen: dict[str, float],
                   now: float | None = None) -> tuple[dict[str, Any], Any]:
    """(request, signer) of a fresh unblock request signed by one of `members`, else
    EgressError naming the problem."""
    from asl3.security.encoding import canonical, unb64
    from asl3.security.identity import PublicIdentity

    now = time.time() if now is None else now
    try:
        req, op, sig = body["request"], body["operator"], body["sig"]
        pub = PublicIdentity.from_dict(op, "operator")
        client, change, reason = req["client"], req["change"], req.get("reason", "")
        t, nonce = float(req["time"]), req["nonce"]
        if req.get("action") != "egress.unblock" or not all(
                isinstance(x, str) for x in (client, change, reason, nonce)):
            raise TypeError("fields")
        signature = unb64(sig, "sig")
    except Exception:
        raise EgressError("not a signed unblock request") from None
    if pub.fingerprint not in {m.fingerprint for m in members}:
        raise EgressError(f"{pub.name} ({pub.fingerprint[:16]}) is not a member of the change "
                          "roster: only members may use an unblock change")
    if not pub.verify(signature, canonical(req)):
        raise EgressError("the unblock request's signature does not verify")
    if abs(now - t) > MAX_SKEW:
        raise EgressError("the unblock request is stale (more than 5 minutes from now)")
    for n, at in list(seen.items()):
        if now - at > 2 * MAX_SKEW:
            del seen[n]
    if nonce in seen:
        raise EgressError("the unblock request was already used (replay)")
    seen[nonce] = now
    return req, pub


def _not_applied(directory: str, change: str) -> str:
    """Why `change` is not an applied unblock change in directory (for the error)."""
    from asl3.errors import ChangeError
    from asl3.security.change import ChangeControl

    where = f"in {directory}"
    try:
        p = ChangeControl(directory).proposal(change)
    except ChangeError as e:
        return f"change {change} is not an applied unblock change {where} ({e})"
    if p.kind != "unblock":
        return f"change {change} is a {p.kind} change, not an unblock"
    return (f"change {change} is proposed but not applied {where}: it needs its approvals, then "
            "'asl3 change apply'")


def check_change(approved: Any, directory: str, req: dict[str, Any], used: dict[str, float],
                 blocked_since: float | None, now: float | None = None) -> Any:
    """The ApprovedUnblock that lets `req` lift the block of its client, else EgressError.
    `blocked_since`: when the client's block began (None: it is not blocked)."""
    from datetime import datetime, timezone

    from asl3.errors import ChangeError
    from asl3.security.change import client_address

    now = time.time() if now is None else now
    change = req["change"]
    try:
        client = client_address(req["client"])
    except ChangeError as e:
        raise EgressError(str(e)) from None
    u = approved.unblock(change)
    if u is None:
        raise EgressError(_not_applied(directory, change))
    if u.client != client:
        raise EgressError(f"change {change} unblocks {u.client}, not {client}")
    if datetime.fromtimestamp(now, timezone.utc) >= u.until:
        raise EgressError(f"change {change} could be used until {u.until.isoformat()}; propose "
                          "a new one")
    if change in used:
        at = datetime.fromtimestamp(used[change], timezone.utc).isoformat(timespec="seconds")
        raise EgressError(f"change {change} was already used ({at}): each unblock change lifts "
                          "one block")
    if blocked_since is None:
        raise LookupError(f"{client} is not blocked")
    if u.proposed_at.timestamp() < blocked_since - MAX_SKEW:
        began = datetime.fromtimestamp(blocked_since, timezone.utc).isoformat(timespec="seconds")
        raise EgressError(f"change {change} was proposed ({u.proposed_at.isoformat()}) before "
                          f"this block began ({began}): propose an unblock for this block")
    return u


async def handle_unblock(proxy: Any, data: bytes) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON answer) of `POST /unblock`."""
    from asl3.errors import ChangeError
    from asl3.security.change import load_approved

    directory = proxy.cfg.safeguards
    if not directory:
        return 403, {"error": NO_CHANGE_MANAGEMENT}
    try:
        body = json.loads(data)
    except ValueError:
        return 400, {"error": "not a signed unblock request (not JSON)"}
    try:
        approved = await asyncio.to_thread(load_approved, directory,
                                           trusted=proxy.cfg.trusted or None)
    except ChangeError as e:
        return 503, {"error": f"the approved settings in {directory} do not load: {e}"}
    try:
        req, pub = verify_unblock(body, approved.members, proxy._nonces)
        u = check_change(approved, directory, req, proxy.used_changes,
                         proxy.blocked_since.get(_canonical(req["client"])))
    except LookupError as e:
        return 409, {"error": str(e)}
    except EgressError as e:
        return 403, {"error": str(e)}
    # from here to the mark, nothing awaits: two requests cannot both spend the change
    proxy.used_changes[u.change] = time.time()
    rec = proxy.unblock(u.client, pub.name, u.reason, {
        "change": u.change, "proposer": u.proposer, "approvers": list(u.approvers),
        "note": req.get("reason", ""), "operator_fingerprint": pub.fingerprint,
        "signed_request": req})
    await proxy.record_unblock(rec)
    return 200, {"unblocked": u.client, "by": pub.name, "change": u.change,
                 "approvers": list(u.approvers), "was": rec["was"]}


def _canonical(client: str) -> str:
    from asl3.errors import ChangeError
    from asl3.security.change import client_address

    try:
        return client_address(client)
    except ChangeError:
        return client


async def serve_admin(proxy: Any, host: str, port: int) -> asyncio.base_events.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status, ctype, body = 400, "text/plain", b"bad request\n"
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            lines = head.decode("ascii").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for h in lines[1:]:
                name, _, value = h.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if length > 65536:
                raise ValueError("body too large")
            data = await asyncio.wait_for(reader.readexactly(length), 5) if length else b""
            if method == "GET" and path == "/metrics":
                status, ctype, body = 200, "text/plain; version=0.0.4", proxy.metrics.render()
            elif method == "GET" and path == "/status":
                status, ctype = 200, "application/json"
                body = json.dumps(proxy.status(), default=str).encode()
            elif method == "POST" and path == "/unblock":
                ctype = "application/json"
                status, out = await handle_unblock(proxy, data)
                body = json.dumps(out).encode()
            else:
                status, body = 404, b"not found\n"
        except Exception:
            pass
        with contextlib.suppress(Exception):
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: "
                         f"{len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await asyncio.wait_for(writer.drain(), 5)
        writer.close()

    return await asyncio.start_server(handle, host, port)
