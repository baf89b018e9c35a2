"""Gateway settings: one frozen dataclass, passed to worker processes as JSON in the environment.

uvicorn starts each ``--workers`` process by importing an app factory, so settings cannot be
handed over as Python objects; ``to_env``/``from_env`` carry them in ``ASL3_GATEWAY_CONFIG``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from asl3.errors import Asl3Error

ENV = "ASL3_GATEWAY_CONFIG"
RETAIN = ("none", "blocked", "all")


@dataclass(frozen=True)
class GatewayConfig:
    upstream: str = "echo"  # an OpenAI-compatible base URL (".../v1") or "echo", the demo model
    upstream_key_env: str | None = None  # environment variable holding the upstream's API key
    bundle: str | None = None  # classifier bundle directory; None = the bundled default
    stage2: bool | None = None  # None: stage 2 when installed; True requires it; False: stage 1 only
    db: str | None = None  # event and key store URL; None = $ASL3_DB or sqlite:///asl3.db
    allow_anonymous: bool = False  # requests without a key pass as principal None
    max_body_bytes: int = 2 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout: float = 120.0  # longest wait for the upstream's next byte
    retain_text: str = "blocked"  # texts kept in the store: none | blocked | all
    retention_days: float = 30.0  # texts older than this are erased from the store
    key_cache_seconds: float = 5.0  # how long a key lookup is reused (a revocation's delay)
    echo_delay: float = 0.0  # seconds between the demo model's tokens
    queue_size: int = 10_000  # events waiting for the store before they are counted as dropped
    safeguards: str | None = None  # settings directory (asl3 change): only approved settings
    safeguards_trust: tuple[str, ...] = ()  # public identity files; the roster's signer is one

    def __post_init__(self) -> None:
        if self.retain_text not in RETAIN:
            raise Asl3Error(f"retain_text must be one of {', '.join(RETAIN)}, not {self.retain_text!r}")
        if self.upstream != "echo" and not self.upstream.startswith(("http://", "https://")):
            raise Asl3Error(f"--upstream must be an http(s) URL or 'echo', not {self.upstream!r}")
        if self.safeguards_trust and not self.safeguards:
            raise Asl3Error("--safeguards-trust needs --safeguards DIR")
        for name in ("max_body_bytes", "connect_timeout", "read_timeout", "queue_size"):
            if getattr(self, name) <= 0:
                raise Asl3Error(f"{name} must be positive")

    def to_env(self) -> dict[str, str]:
        return {ENV: json.dumps(asdict(self))}

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> GatewayConfig:
        raw = (environ if environ is not None else os.environ).get(ENV)
        if not raw:
            return cls()
        data: dict[str, Any] = json.loads(raw)
        known = {f.name for f in fields(cls)}
        if isinstance(data.get("safeguards_trust"), list):  # JSON has no tuples
            data["safeguards_trust"] = tuple(data["safeguards_trust"])
        return cls(**{k: v for k, v in data.items() if k in known})
