"""Canonical JSON, base64 and strict JSON files: the exact bytes that are signed or hashed.

Signatures and hashes are only meaningful when both sides serialize the same object to the
same bytes, so every signed or hashed structure goes through `canonical`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def canonical(obj: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: one byte string per JSON value."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, what: str) -> bytes:
    """Decode base64 or raise ValueError naming the field (callers turn it into their error)."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError, AttributeError):
        raise ValueError(f"{what} is not valid base64") from None


def read_json_object(path: Path, error: type[Exception], missing: str, bad: str) -> dict[str, Any]:
    """A JSON object from a file, or `error(missing)` / `error(bad + reason)`: one line each."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(missing) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{bad} ({e})") from None
    if not isinstance(doc, dict):
        raise error(f"{bad} (not a JSON object)")
    return doc


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(t: datetime) -> str:
    """The one way signed documents write a time: UTC, ISO 8601."""
    return t.astimezone(timezone.utc).isoformat()


def parse_time(text: Any, what: str, error: type[Exception]) -> datetime:
    """An ISO time with its zone, or `error` naming `what` (a naive time is refused: signed
    times must compare the same on every machine)."""
    try:
        t = datetime.fromisoformat(str(text))
    except ValueError:
        raise error(f"{what}: not an ISO time ({text!r})") from None
    if t.tzinfo is None:
        raise error(f"{what}: time has no zone ({text!r})")
    return t


def write_new_json(path: Path, doc: dict[str, Any]) -> None:
    """Create a JSON file that must not exist yet (two writers cannot both win)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x", encoding="utf-8") as f:
        f.write(json.dumps(doc, indent=2) + "\n")
