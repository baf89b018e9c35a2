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

import httpx


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


def _decode(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return {"error": {"message": r.text[:500], "type": "upstream_error"}}


class HttpUpstream:
    """An OpenAI-compatible server at ``base_url`` (ending in /v1), through one pooled client."""

    def __init__(self, base_url: str, api_key: str | None = None, connect_timeout: float = 5.0,
                 read_timeout: float = 120.0, max_connections: int = 512) -> None:
        self.name = base_url
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/", headers=headers,
            timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout,
                                  pool=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections))

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        try:
            yield
        except httpx.TimeoutException as err:
            raise UpstreamTimeout(f"upstream too slow: {type(err).__name__}") from err
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError,
                httpx.WriteError) as err:
            raise UpstreamUnavailable(f"upstream unreachable: {err or type(err).__name__}") from err
        except httpx.HTTPError as err:
            raise UpstreamError(f"upstream failed: {err or type(err).__name__}") from err

    async def models(self) -> dict[str, Any]:
        async with self._errors():
            r = await self._client.get("models")
        if r.status_code >= 400:
            raise UpstreamHTTPError(r.status_code, _decode(r))
        return _decode(r)

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        async with self._errors():
            r = await self._client.post("chat/completions", json=body)
        if r.status_code >= 400:
            raise UpstreamHTTPError(r.status_code, _decode(r))
        return _decode(r)

    @asynccontextmanager
    async def stream(self, body: dict[str, Any]) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        async with self._errors():
            req = self._client.build_request("POST", "chat/completions", json=body)
            r = await self._client.send(req, stream=True)
        try:
            if r.status_code >= 400:
                async with self._errors():
                    await r.aread()
                raise UpstreamHTTPError(r.status_code, _decode(r))
            yield self._chunks(r)
        finally:
            await r.aclose()  # closes the connection mid-stream: the upstream sees the cancel

    async def _chunks(self, r: httpx.Response) -> AsyncIterator[dict[str, Any]]:
        async with self._errors():
            async for line in r.aiter_lines():
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
        await self._client.aclose()


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
