"""Shared pieces of the `asl3` command line: the parser class, exit codes, progress bars,
and the helpers that make every command group look alike (`group`, `action`, `--as`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from asl3.errors import Asl3Error

EXIT_BAD_INPUT = 2


class UsageError(Asl3Error):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.print_usage(sys.stderr)
        sys.stderr.write(f"asl3: error: {message}\n")
        raise SystemExit(EXIT_BAD_INPUT)


def fmt(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress display on stderr; yields a ``progress(stage, done, total)`` callback."""
    if not enabled:
        yield lambda stage, done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    tasks: dict[str, Any] = {}
    with Progress(TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=False) as p:

        def cb(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = p.add_task(stage, total=max(total, 1))
            p.update(tasks[stage], completed=done, total=max(total, 1))

        yield cb


BIG = 64 * 1024 * 1024  # progress bars for put/open only from this many bytes


def passphrase(a: argparse.Namespace) -> bytes | None:
    import os

    var = getattr(a, "passphrase_env", None)
    if not var:
        return None
    value = os.environ.get(var)
    if not value:
        raise UsageError(f"environment variable {var} is not set or empty")
    return value.encode()


def load_identity(a: argparse.Namespace) -> Any:
    from asl3.security import identity

    return identity.load(a.key, passphrase(a))


def parse_duration(text: str) -> Any:
    """30m, 4h, 2d, 90s -> timedelta."""
    import re
    from datetime import timedelta

    m = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if not m or int(m.group(1)) == 0:
        raise UsageError(f"--ttl {text!r} is not a duration like 30m, 4h or 2d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
    return timedelta(**{unit: int(m.group(1))})


@contextmanager
def big_progress(enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A progress callback that opens a bar only once a file of BIG bytes or more shows up."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        inner: list[Callable[[str, int, int], None]] = []

        def cb(stage: str, done: int, total: int) -> None:
            if not inner:
                if not enabled or total < BIG:
                    return
                inner.append(stack.enter_context(progress_bar(True)))
            inner[0](stage, done, total)

        yield cb


def group(sub: Any, name: str, helptext: str, description: str) -> Any:
    """A command group (`asl3 NAME ACTION ...`); returns its sub-command registry."""
    g = sub.add_parser(name, help=helptext, formatter_class=fmt, description=description)
    return g.add_subparsers(dest=f"{name}_command", metavar="ACTION", parser_class=Parser,
                            required=True)


def action(group: Any, name: str, helptext: str, example: str,
            func: Callable[[argparse.Namespace], int], *,
            json_help: str = "print the result as JSON") -> argparse.ArgumentParser:
    """One action of a group: help, a description with an example, --json, its function."""
    p = group.add_parser(name, help=helptext, formatter_class=fmt,
                         description=f"{helptext[0].upper()}{helptext[1:]}.\n\nexample:\n  {example}")
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(func=func)
    return p


def dir_actions(group: Any, dir_help: str) -> Callable[..., argparse.ArgumentParser]:
    """`action` for a group whose every action first names the directory it works on
    (`asl3 vault|change|audit|allowlist ACTION DIR ...`)."""

    def add(name: str, helptext: str, example: str, func: Callable[[argparse.Namespace], int],
            **kw: str) -> argparse.ArgumentParser:
        p = action(group, name, helptext, example, func, **kw)
        p.add_argument("dir", metavar="DIR", help=dir_help)
        return p

    return add


def add_as(p: argparse.ArgumentParser, *, required: bool = True,
           helptext: str = "your private identity file (from 'asl3 identity new')") -> None:
    p.add_argument("--as", dest="key", required=required, metavar="KEYFILE", help=helptext)
    p.add_argument("--passphrase-env", metavar="VAR",
                   help="read the key file's passphrase from this environment variable")
