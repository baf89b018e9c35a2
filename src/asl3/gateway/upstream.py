"""Upstream models: an OpenAI-compatible HTTP server through one pooled client, or the demo echo.

The gateway only needs three things from a model: its model list, a whole completion, and a
stream of completion chunks (parsed SSE ``data:`` objects). Transport failures are mapped to
two exceptions the gateway turns into 502 and 504; an upstream's own HTTP error is handed
back with its status and body, so clients see what the model server said.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import aiohttp
import aiohttp.http_exceptions


class UpstreamError(Exception):
    """The upstream could not be used. ``status`` is what the client gets."""

    status = 502
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    status = 502
    code = "upstream_unreachable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamHTTPError(UpstreamError):
    """The upstream answered with an HTTP error; its status and body are passed on."""

    code = "upstream_http_error"

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"upstream answered HTTP {status}")
        self.status = status
        self.body = body


class Upstream(Protocol):
    name: str

    async def models(self) -> dict[str, Any]: ...

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def stream(self, body: dict[str, Any]) -> Any:
        """An async context manager yielding an async iterator of chunk objects; leaving the
        context closes the upstream request (that is how a halted stream cancels it)."""
        ...

    async def aclose(self) -> None: ...


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        text = raw[:500].decode("utf-8", "replace")
        return {"error": {"message": text, "type": "upstream_error"}}


# An idle pooled connection is dropped before the model server would close it: uvicorn (vLLM
# and most Python servers) closes after 5 s, and a POST sent on a connection the server is
# closing fails (502) and is not retried (it is not idempotent). With aiohttp's default of
# 15 s, one request in 12,000 of the bench's 128-stream soak failed that way.
KEEPALIVE_S = 4.0
READ_BUFSIZE = 1 << 20  # aiohttp's read buffer; an SSE line may be up to twice this


class HttpUpstream:
    """An OpenAI-compatible server at ``base_url`` (ending in /v1), through one pooled client.

    The client is aiohttp's (a ``ClientSession`` over one ``TCPConnector`` pool, made on the
    event loop at first use). Why not httpx: at one client the gateway's added latency budget
    is 2 ms, and the upstream call is its largest part. A sequential completion against the
    bench's fake upstream took 0.91 ms through a pooled ``httpx.AsyncClient``, 0.67 ms through
    httpx over an aiohttp transport and 0.39 ms through aiohttp alone (uvloop, loopback,
    ``python bench/upstream_client.py``: median of 6 rounds of 400 calls).
    """

    def __init__(self, base_url: str, api_key: str | None = None, connect_timeout: float = 5.0,
                 read_timeout: float = 120.0, max_connections: int = 512) -> None:
        self.name = base_url
        self._base = base_url.rstrip("/") + "/"
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        # connect covers waiting for a pooled connection too (httpx's "pool" timeout); a read
        # timeout is per read, so a slow stream is fine while a silent one is not
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout,
                                              sock_connect=connect_timeout,
                                              sock_read=read_timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0,
                                             keepalive_timeout=KEEPALIVE_S)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, timeout=self._timeout,
                read_bufsize=READ_BUFSIZE, json_serialize=lambda o: json.dumps(o, ensure_ascii=False))
        return self._session

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        try:
            yield
        except (TimeoutError, aiohttp.ServerTimeoutError) as err:
            raise UpstreamTimeout(f"upstream too slow: {type(err).__name__}") from err
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as err:
            raise UpstreamUnavailable(f"upstream unreachable: {err or type(err).__name__}") from err
        except aiohttp.ClientError as err:
            raise UpstreamError(f"upstream failed: {err or type(err).__name__}") from err

    async def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        async with self._errors(), self._client().request(method, self._base + path,
                                                           json=body) as r:
            raw = await r.read()
        if r.status >= 400:
            raise UpstreamHTTPError(r.status, _decode(raw))
        return _decode(raw)

    async def models(self) -> dict[str, Any]:
        return await self._call("GET", "models", None)

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", "chat/completions", body)

    @asynccontextmanager
    async def stream(self, body: dict[str, Any]) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        async with self._errors():
            r = await self._client().post(self._base + "chat/completions", json=body)
        try:
            if r.status >= 400:
                async with self._errors():
                    raw = await r.read()
                raise UpstreamHTTPError(r.status, _decode(raw))
            yield self._chunks(r)
        finally:
            # an unfinished response's connection is closed, not pooled: the upstream sees
            # the cancel (a finished one goes back to the pool)
            if r.content.at_eof():
                r.release()
            else:
                r.close()

    async def _chunks(self, r: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
        async with self._errors():
            while True:
                try:
                    raw = await r.content.readline()
                except (ValueError, aiohttp.http_exceptions.LineTooLong) as err:
                    # aiohttp's line limit (twice READ_BUFSIZE; older versions: ValueError)
                    raise UpstreamError("upstream sent an SSE line over "
                                        f"{2 * READ_BUFSIZE} bytes") from err
                if not raw:
                    return  # the upstream closed the stream without [DONE]
                line = raw.decode("utf-8", "replace")
                if not line.startswith("data:"):
                    continue  # comments, event names, blank separators
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    obj = json.loads(data)
                except ValueError as err:
                    raise UpstreamError(f"upstream sent a malformed SSE chunk: {data[:80]!r}") from err
                if isinstance(obj, dict) and "error" in obj and "choices" not in obj:
                    raise UpstreamHTTPError(502, obj)
                yield obj

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def last_user_text(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            if isinstance(c, list):
                return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
    return ""


class EchoUpstream:
    """The built-in demo model: it answers with the last user message, streamed word by word,
    so the gateway runs end to end with no model at all."""

    name = "echo"
    model = "asl3-echo"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    async def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0,
                                            "owned_by": "asl3"}]}

    def _meta(self, body: dict[str, Any], obj: str) -> dict[str, Any]:
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": obj,
                "created": int(time.time()), "model": body.get("model") or self.model}

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        text = last_user_text(body)
        words = len(text.split())
        return {**self._meta(body, "chat.completion"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": words, "completion_tokens": words,
                          "total_tokens": 2 * words}}

    @asynccontextmanager
    async def stream(self, body: dict[str, Any]) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        yield self._chunks(body)

    async def _chunks(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        import re

        meta = self._meta(body, "chat.completion.chunk")
        yield {**meta, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}]}
        for piece in re.findall(r"\s*\S+|\s+", last_user_text(body)):
            if self.delay:
                await asyncio.sleep(self.delay)
            yield {**meta, "choices": [{"index": 0, "delta": {"content": piece},
                                        "finish_reason": None}]}
        yield {**meta, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}

    async def aclose(self) -> None:
        return None
