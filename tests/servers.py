"""Real servers for integration tests: uvicorn on loopback in a thread, and a scriptable fake
OpenAI-compatible upstream whose behaviour each test chooses through the request's model name."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` under a real uvicorn on 127.0.0.1; yields its base URL (".../v1")."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not th.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        th.join(30)


class FakeUpstream:
    """model "say": streams or returns ``self.text``; "slow": waits ``self.delay`` first;
    "endless": streams ``self.text`` then filler every 10 ms until the client goes away."""

    def __init__(self) -> None:
        self.text = "Hello there."
        self.delay = 3.0
        self.requests: list[dict[str, Any]] = []
        self.disconnected = threading.Event()
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"]),
                                     Route("/v1/models", self.models)])

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake", "object": "model",
                                                         "created": 0, "owned_by": "tests"}]})

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        obj = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
               "model": "fake", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        mode = body.get("model")
        if mode == "slow":
            await asyncio.sleep(self.delay)
        if not body.get("stream"):
            return JSONResponse({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": "fake",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": self.text},
                             "finish_reason": "stop"}]})
        pieces = [m.group(0) for m in __import__("re").finditer(r"\s*\S+|\s+", self.text)]

        async def gen():
            try:
                yield self._chunk({"role": "assistant", "content": ""})
                for p in pieces:
                    yield self._chunk({"content": p})
                    await asyncio.sleep(0)
                while mode == "endless":
                    if await request.is_disconnected():
                        self.disconnected.set()
                        return
                    yield self._chunk({"content": " more"})
                    await asyncio.sleep(0.01)
                yield self._chunk({}, "stop")
                yield b"data: [DONE]\n\n"
            except (asyncio.CancelledError, GeneratorExit, OSError):
                self.disconnected.set()
                raise

        return StreamingResponse(gen(), media_type="text/event-stream")
