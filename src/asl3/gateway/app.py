"""The ASGI app: OpenAI Chat Completions in, guarded Chat Completions out.

Request path, in order: API key -> principal (cached), body size and JSON checks, the input
check (in a worker thread: the classifier is CPU work and must not stall the event loop),
then the upstream call. Streamed output goes through a ``StreamRelay``: only text the output
monitor has released is sent, and a block ends the stream with ``content_filter`` and cancels
the upstream request. Every request ends in exactly one decision event, handed to the store's
background writer (never awaited on the request path).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
from anyio.to_thread import run_sync
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from asl3.errors import Asl3Error
from asl3.gateway.auth import MISS, KeyCache, bearer
from asl3.gateway.config import GatewayConfig
from asl3.gateway.errors import error_body, error_response
from asl3.gateway.metrics import Metrics
from asl3.gateway.relay import StreamRelay, judge_completion
from asl3.gateway.upstream import (
    EchoUpstream,
    HttpUpstream,
    Upstream,
    UpstreamError,
    UpstreamHTTPError,
)
from asl3.guard import Exemption, Guard, Principal, Verdict, floor_offset, messages_text

log = logging.getLogger("asl3.gateway")
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
INLINE_CHARS = 4000  # texts up to this long are judged on the event loop (about 1 ms)
DONE = b"data: [DONE]\n\n"


def sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def _generated_chars(resp: dict[str, Any]) -> int:
    n = 0
    for ch in resp.get("choices") or []:
        msg = ch.get("message") if isinstance(ch, dict) else None
        if isinstance(msg, dict):
            n += sum(len(v) for v in msg.values() if isinstance(v, str))
            n += len(json.dumps(msg.get("tool_calls") or ""))
    return n


class BadRequest(Exception):
    def __init__(self, status: int, message: str, code: str, type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.type = status, message, code, type_


@dataclass
class Decision:
    """What one request came to; becomes the store's Event."""

    request_id: str
    start: float
    principal: str | None = None
    model: str | None = None
    stream: bool = False
    stage: str = "none"
    action: str = "pass"
    status: int = 200
    category: str | None = None
    score: float | None = None
    input_score: float | None = None
    output_score: float | None = None
    threshold: float | None = None
    exempted: list[str] = field(default_factory=list)
    error: str | None = None
    input_text: str | None = None
    output_text: str | None = None
    recorded: bool = False

    def block(self, v: Verdict, status: int) -> None:
        self.stage, self.action, self.status = v.stage, "block", status
        self.category, self.score, self.threshold = v.category, v.score, v.threshold

    def fail(self, status: int, error: str) -> None:
        self.action, self.status, self.error = "error", status, error


class Gateway:
    def __init__(self, config: GatewayConfig, guard: Guard, upstream: Upstream,
                 store: Any = None, safeguards: Any = None) -> None:
        self.config = config
        self.safeguards = safeguards  # ApprovedSafeguards under --safeguards, else None
        self.guard = guard
        self.upstream = upstream
        self.store = store
        self.metrics = Metrics()
        self.writer: Any = None
        self.keys = KeyCache(store.lookup_key if store is not None else (lambda k: None),
                             ttl=config.key_cache_seconds,
                             approve=approved_exemptions(safeguards) if safeguards else None)
        m = guard.bundle.manifest
        self.bundle_id = f"{m.get('name', 'bundle')}@{guard.bundle.digest[:12]}"

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self.store is not None:
            from asl3.store import EventWriter

            self.writer = EventWriter(self.store, maxsize=self.config.queue_size,
                                      on_drop=lambda n: self.metrics.events_dropped.inc(n))
            self.writer.start()
            days = self.config.retention_days
            self.store.purge_texts(datetime.now(timezone.utc) - timedelta(days=days))

    async def stop(self) -> None:
        await self.upstream.aclose()
        if self.writer is not None:
            await run_sync(self.writer.close)
        if self.store is not None:
            self.store.close()

    # -- the decision record ---------------------------------------------------------------
    def record(self, d: Decision) -> None:
        """Count and store the request's decision; once per request, whatever path ends it."""
        if d.recorded:
            return
        d.recorded = True
        latency = time.perf_counter() - d.start
        self.metrics.requests.labels(str(d.stream).lower(), str(d.status)).inc()
        if d.action == "block":
            self.metrics.blocks.labels(d.stage, d.category or "").inc()
        if self.writer is None:
            return
        from asl3.store import Event

        keep = self.config.retain_text == "all" or (
            self.config.retain_text == "blocked" and d.action == "block")
        self.writer.submit(Event(
            request_id=d.request_id, time=datetime.now(timezone.utc), principal=d.principal,
            model=d.model, stream=d.stream, stage=d.stage, action=d.action, status=d.status,
            latency_ms=latency * 1e3, category=d.category, score=d.score,
            input_score=d.input_score, output_score=d.output_score, threshold=d.threshold,
            exempted=",".join(d.exempted) or None, error=d.error, bundle=self.bundle_id,
            input_text=d.input_text if keep else None,
            output_text=d.output_text if keep else None))
        self.metrics.events_pending.set(self.writer.pending)

    def _error(self, d: Decision, status: int, message: str, type_: str, code: str,
               **extra: Any) -> JSONResponse:
        if d.action != "block":
            d.fail(status, code)
        self.record(d)
        return error_response(status, message, type_, code,
                              headers={"x-request-id": d.request_id}, **extra)

    # -- request parts ---------------------------------------------------------------------
    async def principal(self, request: Request) -> Principal | None:
        key = bearer(request.headers.get("authorization"))
        if key is None:
            if self.config.allow_anonymous:
                return None
            self.metrics.auth_failures.labels("missing").inc()
            raise BadRequest(401, "Missing API key: send 'Authorization: Bearer <key>' (create "
                             "one with 'asl3 keys add NAME').", "missing_api_key")
        got = self.keys.cached(key)
        if got is MISS:
            got = await run_sync(self.keys.resolve, key)
        if got is None:
            self.metrics.auth_failures.labels("invalid").inc()
            raise BadRequest(401, "Invalid or revoked API key.", "invalid_api_key")
        return got  # type: ignore[return-value]

    async def body(self, request: Request) -> dict[str, Any]:
        limit = self.config.max_body_bytes
        too_big = BadRequest(413, f"Request body is over the gateway's limit of {limit} bytes.",
                             "request_too_large")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise too_big
        size, parts = 0, []
        async for piece in request.stream():
            size += len(piece)
            if size > limit:
                raise too_big
            parts.append(piece)
        try:
            body = json.loads(b"".join(parts))
        except (ValueError, UnicodeDecodeError) as err:
            raise BadRequest(400, f"The body is not valid JSON: {err}", "invalid_json") from err
        if not isinstance(body, dict):
            raise BadRequest(400, "The body must be a JSON object.", "invalid_body")
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
            raise BadRequest(400, "'messages' must be a non-empty list of message objects.",
                             "invalid_messages")
        if "stream" in body and not isinstance(body["stream"], bool):
            raise BadRequest(400, "'stream' must be true or false.", "invalid_stream")
        return body

    def _input_verdict(self, d: Decision, v: Verdict) -> None:
        d.input_score, d.threshold = v.score, v.threshold
        if v.exempted:
            d.exempted = list(v.exempted)
            for c in v.exempted:
                self.metrics.exempted.labels("input", c).inc()

    # -- endpoints -------------------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        d = Decision("req_" + uuid.uuid4().hex, time.perf_counter())
        try:
            principal = await self.principal(request)
            d.principal = principal.name if principal else None
            body = await self.body(request)
        except BadRequest as err:
            return self._error(d, err.status, err.message, err.type, err.code)
        d.model = body.get("model") if isinstance(body.get("model"), str) else None
        d.stream = bool(body.get("stream"))
        messages = body["messages"]
        try:
            prompt = messages_text(messages)
        except Asl3Error as err:
            return self._error(d, 400, str(err), "invalid_request_error", "invalid_messages")
        d.input_text = prompt
        t = time.perf_counter()
        # Short inputs that stage 1 decides alone (most traffic) are checked inline: a
        # thread hop costs more than they do. Long ones, and those that need stage 2's
        # encoder (which releases the GIL), go to a worker thread so the loop never stalls.
        v = self.guard.check_input_stage1(prompt, principal) if len(prompt) <= INLINE_CHARS else None
        if v is None:
            v = await run_sync(self.guard.check_input, prompt, principal)
        self.metrics.classify.labels("input").observe(time.perf_counter() - t)
        self._input_verdict(d, v)
        if v.blocked:
            d.block(v, 400)
            return self._error(
                d, 400, "This request was blocked by the content policy"
                f" (category: {v.category}).", "content_policy_violation", "input_blocked",
                category=v.category)
        if d.stream:
            return await self._stream(d, body, prompt, principal)
        return await self._complete(d, body, prompt, principal)

    def _upstream_error(self, d: Decision, err: UpstreamError) -> Response:
        self.metrics.upstream_errors.labels(err.code).inc()
        if isinstance(err, UpstreamHTTPError):
            d.fail(err.status, err.code)
            self.record(d)
            body = err.body if isinstance(err.body, dict) else error_body(
                str(err), "upstream_error", err.code)
            return JSONResponse(body, status_code=err.status,
                                headers={"x-request-id": d.request_id})
        return self._error(d, err.status, str(err), "upstream_error", err.code)

    def _judge(self, prompt: str, principal: Principal | None):
        def judge(text: str) -> tuple[Verdict, str]:
            return self.guard.check_output(text, prompt, principal)
        return judge

    async def _complete(self, d: Decision, body: dict[str, Any], prompt: str,
                        principal: Principal | None) -> Response:
        try:
            resp = await self.upstream.complete(body)
        except UpstreamError as err:
            return self._upstream_error(d, err)
        t = time.perf_counter()
        judge = self._judge(prompt, principal)
        if _generated_chars(resp) <= INLINE_CHARS:  # about 1 ms: cheaper than a thread hop
            verdict, top, text = judge_completion(resp, judge)
        else:
            verdict, top, text = await run_sync(judge_completion, resp, judge)
        self.metrics.classify.labels("output").observe(time.perf_counter() - t)
        d.output_score, d.output_text = top, text
        if verdict is not None:
            d.block(verdict, 200)
        self.metrics.latency.labels("false").observe(time.perf_counter() - d.start)
        self.record(d)
        return JSONResponse(resp, headers={"x-request-id": d.request_id})

    async def _stream(self, d: Decision, body: dict[str, Any], prompt: str,
                      principal: Principal | None) -> Response:
        cm = self.upstream.stream(body)
        try:
            chunks = await cm.__aenter__()
        except UpstreamError as err:
            return self._upstream_error(d, err)
        relay = StreamRelay(lambda: self.guard.monitor_output(prompt, principal),
                            self._judge(prompt, principal))
        self.metrics.latency.labels("true").observe(time.perf_counter() - d.start)
        def finalize() -> None:  # the relay never ran: the client left before the first byte
            if not d.recorded:
                d.fail(200, "client_disconnected")
                self.record(d)

        return GuardedStream(self._relay(d, relay, chunks), cm, d.request_id, finalize)

    async def _relay(self, d: Decision, relay: StreamRelay,
                     chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
        meta: dict[str, Any] = {}
        try:
            try:
                async for chunk in chunks:
                    if not meta:
                        meta = {k: chunk.get(k) for k in ("id", "object", "created", "model")}
                    for out in relay.feed(chunk):
                        yield sse(out)
                    if relay.done:
                        break  # every choice ended (or was blocked): stop reading upstream
                for out in relay.end(meta):
                    yield sse(out)
            except UpstreamError as err:
                self.metrics.upstream_errors.labels(err.code).inc()
                d.fail(200, err.code)
                yield sse(error_body(str(err), "upstream_error", err.code))
            yield DONE
        except BaseException:
            if d.error is None:
                d.fail(200, "client_disconnected")
            raise
        finally:
            v = relay.blocked
            d.output_score, d.output_text = relay.max_score, relay.generated_text()
            if v is not None:
                d.block(v, 200)
            self.record(d)

    async def models(self, request: Request) -> Response:
        d = Decision("req_" + uuid.uuid4().hex, time.perf_counter())
        try:
            await self.principal(request)
            return JSONResponse(await self.upstream.models())
        except BadRequest as err:
            return error_response(err.status, err.message, err.type, err.code)
        except UpstreamError as err:
            self.metrics.upstream_errors.labels(err.code).inc()
            if isinstance(err, UpstreamHTTPError) and isinstance(err.body, dict):
                return JSONResponse(err.body, status_code=err.status)
            return error_response(err.status, str(err), "upstream_error", err.code,
                                  headers={"x-request-id": d.request_id})

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "bundle": self.bundle_id, "stages": self.guard.stages,
                             "upstream": self.upstream.name,
                             "safeguards": self.safeguards.state_hash if self.safeguards else None,
                             "events_pending": self.writer.pending if self.writer else 0,
                             "events_dropped": self.writer.dropped if self.writer else 0})

    async def metrics_endpoint(self, request: Request) -> Response:
        if self.writer is not None:
            self.metrics.events_pending.set(self.writer.pending)
        data, ctype = self.metrics.render()
        return Response(data, media_type=ctype)


class GuardedStream(Response):
    """An SSE response that owns its upstream request.

    It listens for the client's disconnect for the whole stream (whatever the server's ASGI
    version), so a client that goes away cancels the relay at once, and it always closes the
    upstream request, shielded from cancellation, so the model stops generating."""

    media_type = "text/event-stream"

    def __init__(self, body: AsyncIterator[bytes], upstream_cm: Any, request_id: str,
                 finalize: Any) -> None:
        self.body_iterator = body
        self.upstream_cm = upstream_cm
        self.finalize = finalize
        self.status_code = 200
        self.background = None
        self.init_headers({**SSE_HEADERS, "x-request-id": request_id})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stream() -> None:
            await send({"type": "http.response.start", "status": 200,
                        "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            tg.cancel_scope.cancel()

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(stream)
                tg.start_soon(listen)
        except OSError:
            pass  # the client went away while we were sending
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
                await self.upstream_cm.__aexit__(None, None, None)
            self.finalize()


def build_upstream(config: GatewayConfig) -> Upstream:
    if config.upstream == "echo":
        return EchoUpstream(delay=config.echo_delay)
    key = os.environ.get(config.upstream_key_env) if config.upstream_key_env else None
    if config.upstream_key_env and key is None:
        raise Asl3Error(f"environment variable {config.upstream_key_env} is not set")
    return HttpUpstream(config.upstream, key, config.connect_timeout, config.read_timeout)


def apply_safeguards(guard: Guard, directory: str,
                     trust: Sequence[str] = ()) -> tuple[Guard, Any]:
    """``--safeguards DIR``: load the approved settings (every signature checked), refuse a
    bundle that is not the approved one, and return a guard with the approved threshold
    overrides (a copy: the guard given is left as it was) together with the settings.

    ``trust`` (public identity files, ``--safeguards-trust``) pins who signed the roster:
    without it, someone able to rewrite the whole directory could start a roster and a
    history of their own."""
    from asl3.security.change import load_approved
    from asl3.security.identity import load_public

    trusted = [load_public(f) for f in trust] or None
    approved = load_approved(directory, trusted=trusted)
    name = str(guard.bundle.path or guard.bundle.manifest.get("name", "bundle"))
    approved.check_digest(guard.bundle.digest, name)
    if approved.thresholds:
        unknown = sorted(set(approved.thresholds) - set(guard.thresholds))
        if unknown:
            raise Asl3Error(f"{directory}: approved threshold(s) {', '.join(unknown)} are not "
                            f"thresholds of bundle {name}")
        guard = copy.copy(guard)
        guard.thresholds = {**guard.thresholds, **approved.thresholds}
        guard.scorer = copy.copy(guard.scorer)
        guard.scorer.floor_offset = floor_offset(guard.thresholds)
    log.info("safeguards %s: state %s, %d approved change(s)", directory,
             approved.state_hash[:16], approved.change_count)
    return guard, approved


def approved_exemptions(approved: Any) -> Any:
    """The key cache's filter: a key's exemption counts only while a change approves it, and
    ends at the sooner of the key's and the approval's ends."""
    def approve(principal: str, e: Exemption) -> Exemption | None:
        until = approved.exemption_until(principal, e.category)
        if until is None:
            return None
        mine = e.until if e.until.tzinfo else e.until.replace(tzinfo=timezone.utc)
        return Exemption(e.category, min(mine, until))
    return approve


def create_app(config: GatewayConfig | None = None, guard: Guard | None = None,
               upstream: Upstream | None = None, store: Any = None,
               use_store: bool = True) -> Starlette:
    """Build the gateway. Anything not given is made from ``config`` (the bundled classifier,
    the configured upstream, the SQLite or PostgreSQL store). With ``config.safeguards`` only
    approved settings run (``apply_safeguards``); a bundle that is not approved fails here."""
    config = config or GatewayConfig()
    guard = guard or Guard.load(config.bundle, stage2=config.stage2)
    safeguards = None
    if config.safeguards:
        guard, safeguards = apply_safeguards(guard, config.safeguards, config.safeguards_trust)
    upstream = upstream or build_upstream(config)
    if store is None and use_store:
        from asl3.store import Store

        store = Store(config.db)
    gw = Gateway(config, guard, upstream, store, safeguards)
    if guard.stage2 is not None:
        guard.stage2.load()  # load the encoder now, not on the first suspicious request

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gw.start()
        try:
            yield
        finally:
            await gw.stop()

    app = Starlette(routes=[
        Route("/v1/chat/completions", gw.chat, methods=["POST"]),
        Route("/v1/models", gw.models, methods=["GET"]),
        Route("/healthz", gw.healthz, methods=["GET"]),
        Route("/metrics", gw.metrics_endpoint, methods=["GET"]),
    ], lifespan=lifespan)
    app.state.gateway = gw
    return app


def create_app_from_env() -> Starlette:
    """uvicorn's factory for worker processes: settings come from the environment."""
    return create_app(GatewayConfig.from_env())
