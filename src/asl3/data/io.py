"""Dataset rows (the JSONL contract of DESIGN.md) and their reading and writing.

Reading is strict: a malformed line stops with the file and line number, because silently
skipping rows would change what a model is trained or evaluated on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from asl3.errors import DatasetError


class Row(BaseModel):
    """One labelled example: an input (a user request) or an output (a model response)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    kind: Literal["input", "output"] = "input"
    label: Literal["harmful", "harmless"]
    category: str = Field(min_length=1)
    prompt: str | None = None
    transform: str | None = None
    source: str | None = None


def read_jsonl(path: str | Path) -> list[Row]:
    """Read every row of a JSONL file; blank lines are allowed, anything else malformed is not."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise DatasetError(f"{p}: cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DatasetError(f"{p}:{line}: not valid UTF-8") from None
    rows: list[Row] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{p}:{n}: not valid JSON: {e.msg}") from None
        if not isinstance(obj, dict):
            raise DatasetError(f"{p}:{n}: each line must be a JSON object")
        try:
            rows.append(Row.model_validate(obj))
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(x) for x in err["loc"]) or "(row)"
            raise DatasetError(f"{p}:{n}: field {field}: {err['msg']}") from None
    return rows


def write_jsonl(path: str | Path, rows: Iterable[Row]) -> int:
    """Write rows as JSONL (UTF-8, one object a line, unset optional fields omitted)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with p.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r.model_dump(exclude_none=True), ensure_ascii=False) + "\n")
            n += 1
    return n


def rows_sha256(rows: Iterable[Row]) -> str:
    """Stable hash of a dataset's content (order-sensitive), recorded in bundle manifests."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r.model_dump(exclude_none=True), sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()
