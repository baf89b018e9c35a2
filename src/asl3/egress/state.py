"""The detector's state file (`asl3 egress proxy --state PATH`): read at start, saved atomically.

Why it exists: the hard budgets and the rate baselines live in the detector's memory, so
without it a restart of the proxy (which an attacker may be able to provoke) would hand every
client a fresh 24 h budget and a fresh warm-up without rate alerts. The detector turns its state
into plain JSON values and back (`Detector.to_state` / `load_state`, pure); this module only
moves those values to and from the disk.

Saving is atomic: the JSON goes to a temporary file in the same directory, which is flushed and
fsync'ed, then renamed over PATH (`os.replace`), and the directory is fsync'ed, so a crash or a
full disk leaves either the old file or the new one, never half of one. The file is created
mode 0600: it names clients and how much each sent.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from typing import Any

from asl3.errors import EgressError

MAX_STATE_BYTES = 256 * 1024 * 1024  # far above any real enclave; refuses a runaway file


def read_state(path: str) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when there is no such file (a first start).

    EgressError, one line naming the file, when it exists but cannot be read, is not JSON or
    is not a JSON object. Whether its contents make sense is the detector's to check."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise EgressError(f"state file {path}: no such directory {folder}")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise EgressError(f"state file {path} cannot be read: {e.strerror or e}") from None
    if len(data) > MAX_STATE_BYTES:
        raise EgressError(f"state file {path} is larger than {MAX_STATE_BYTES} bytes")
    try:
        state = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise EgressError(f"state file {path} is not valid JSON ({e})") from None
    if not isinstance(state, dict):
        raise EgressError(f"state file {path} does not hold a JSON object")
    return state


def write_state(path: str, state: dict[str, Any]) -> None:
    """Replace `path` with `state` as JSON, atomically (see the module docstring).

    `allow_nan=False`: a count that is not a finite number is a bug to hear about now, not a
    file the next start refuses."""
    data = json.dumps(state, allow_nan=False, separators=(",", ":")).encode()
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (not on every system)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class StateFile:
    """Saves snapshots of one state file from any thread, never going backwards.

    The proxy takes a snapshot on its event loop (numbered by `next()`) and writes it on a
    worker thread; the snapshot of a clean shutdown may be written while a slower periodic one
    is still in flight. `save` writes a snapshot only if no later one has been written, so the
    file always ends with the newest state."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._taken = 0
        self._written = 0

    def next(self) -> int:
        """The number of the snapshot being taken now (call on the event loop)."""
        self._taken += 1
        return self._taken

    def save(self, state: dict[str, Any], seq: int) -> bool:
        """Write snapshot `seq` unless a later one is already on disk; True if written."""
        with self._lock:
            if seq <= self._written:
                return False
            write_state(self.path, state)
            self._written = seq
            return True
