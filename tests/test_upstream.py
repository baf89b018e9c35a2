"""The upstream client (asl3.gateway.upstream.HttpUpstream) against real servers on loopback."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from asl3.gateway.upstream import READ_BUFSIZE, HttpUpstream, UpstreamError, UpstreamUnavailable
from servers import free_port, serve


def _one_chunk_app(content_chars: int) -> Starlette:
    """Streams a completion whose only content chunk is one SSE line of ``content_chars``."""

    async def chat(request: Request) -> Response:
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                 "choices": [{"index": 0, "delta": {"content": "x" * content_chars},
                              "finish_reason": None}]}

        async def gen():
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(gen(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


async def _stream_all(base: str) -> list[dict]:
    up = HttpUpstream(base, read_timeout=10)
    try:
        async with up.stream({"model": "m", "messages": []}) as chunks:
            return [c async for c in chunks]
    finally:
        await up.aclose()


def test_a_long_sse_line_streams_whole():
    """Tool-call arguments or a model's long first chunk arrive as one SSE line: it must pass."""
    with serve(_one_chunk_app(300_000)) as base:
        got = asyncio.run(_stream_all(base))
    assert len(got) == 1 and len(got[0]["choices"][0]["delta"]["content"]) == 300_000


def test_an_sse_line_over_the_limit_is_an_upstream_error_not_a_crash():
    with serve(_one_chunk_app(2 * READ_BUFSIZE + 10)) as base, \
            pytest.raises(UpstreamError, match="SSE line over"):
        asyncio.run(_stream_all(base))


def test_an_upstream_that_is_not_there_is_unavailable():
    async def call() -> None:
        up = HttpUpstream(f"http://127.0.0.1:{free_port()}/v1", connect_timeout=2)
        try:
            await up.complete({"model": "m", "messages": []})
        finally:
            await up.aclose()

    with pytest.raises(UpstreamUnavailable):
        asyncio.run(call())
