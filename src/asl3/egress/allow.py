"""Destination allowlist: `HOST_GLOB[:PORT]` patterns, matched case-insensitively.

`*.example.com:443` allows any subdomain of example.com (not example.com itself) on port 443;
`github.com` allows every port; `10.0.0.5:*` the same; `[::1]:8080` an IPv6 literal. Globs are
fnmatch globs on the host name as the client wrote it (no DNS resolution: a name is allowed
by name, an address by address). No patterns: every destination is refused.
"""

from __future__ import annotations

import fnmatch
import re

from asl3.errors import EgressError

_HOST = re.compile(r"[A-Za-z0-9*?_.\-\[\]:]+")


class Allowlist:
    def __init__(self, patterns: list[str] | tuple[str, ...] = ()) -> None:
        self.patterns: list[tuple[str, int | None, str]] = [self._parse(p) for p in patterns]

    @staticmethod
    def _parse(text: str) -> tuple[str, int | None, str]:
        t = text.strip()
        port: int | None = None
        if t.startswith("["):
            host, _, rest = t[1:].partition("]")
            if rest.startswith(":"):
                rest = rest[1:]
                port = None if rest == "*" else _port(rest, text)
            elif rest:
                raise EgressError(f"--allow-dest {text!r}: write an IPv6 address as [ADDR]:PORT")
        elif t.count(":") == 1:
            host, _, p = t.partition(":")
            port = None if p == "*" else _port(p, text)
        else:
            host = t
        if not host or not _HOST.fullmatch(host):
            raise EgressError(f"--allow-dest {text!r} is not HOST[:PORT], like '*.pypi.org:443'")
        return host.lower(), port, text

    def allows(self, host: str, port: int) -> bool:
        h = host.lower().strip("[]")
        return any((p is None or p == port) and fnmatch.fnmatchcase(h, g)
                   for g, p, _ in self.patterns)


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise EgressError(f"--allow-dest {whole!r}: port {text!r} is not 1-65535 or *")
    return int(text)
