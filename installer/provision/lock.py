"""One installer run per root at a time: an flock on ROOT/var/lib/sparkplane/installer/lock.

Two concurrent runs would race on venvs and on `current`. The lock is re-entrant within one
process (upgrade calls install), released by the kernel if the process dies (kill -9 leaves no
stale lock behind), and records the holder's pid for the error message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from controlplane.appliance.layout import Layout
from installer.provision.apply import InstallError

_held: dict[str, int] = {}  # lock path -> nesting depth in this process


@contextlib.contextmanager
def installer_lock(layout: Layout) -> Iterator[None]:
    path = layout.installer_state / "lock"
    key = str(path)
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    layout.installer_state.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise InstallError(
                f"another installer run (pid {holder}) is working on {layout.root}; "
                "wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
