"""OpenAI-style error bodies: every failure a client sees has the same shape as OpenAI's."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


def error_body(message: str, type_: str, code: str | None = None, **extra: Any) -> dict[str, Any]:
    err: dict[str, Any] = {"message": message, "type": type_, "param": None, "code": code}
    err.update(extra)
    return {"error": err}


def error_response(status: int, message: str, type_: str, code: str | None = None,
                   headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(message, type_, code, **extra), status_code=status,
                        headers=headers)
