"""A shared-memory change counter next to a SQLite database: the key cache's freshness signal.

With SQLite every process that can change keys (the server, the CLI, `sparkplane demo`) is on
this machine, so after committing a key or tenant change it bumps an 8-byte counter in a small
file that every server maps into memory. Checking it on each request is a plain memory read:
no query, no system call, and so no wait for the GIL behind the audit writer's thread.
(PostgreSQL replicas live on several machines: there the cache checks the `auth_epoch` row.)
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from pathlib import Path

from sqlalchemy.engine import URL, make_url

_COUNTER = struct.Struct("<Q")


def epoch_path(database_url: str | URL) -> Path | None:
    """`<database file>.auth-epoch` for a file-backed SQLite URL, else None."""
    url = make_url(database_url) if isinstance(database_url, str) else database_url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(str(url.database)).with_name(Path(str(url.database)).name + ".auth-epoch")


class EpochCounter:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        if os.fstat(self._fd).st_size < _COUNTER.size:
            with self._locked():
                if os.fstat(self._fd).st_size < _COUNTER.size:
                    os.ftruncate(self._fd, _COUNTER.size)
        self._map = mmap.mmap(self._fd, _COUNTER.size)

    def _locked(self) -> _Flock:
        return _Flock(self._fd)

    def read(self) -> int:
        return int(_COUNTER.unpack_from(self._map)[0])

    def bump(self) -> int:
        with self._locked():  # several writers (server, CLI) never lose an increment
            value = self.read() + 1
            _COUNTER.pack_into(self._map, 0, value)
        return value

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


class _Flock:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)


def bump_epoch_file(database_url: str | URL) -> None:
    """Signal a committed key or tenant change to every server on this database (SQLite)."""
    path = epoch_path(database_url)
    if path is None:
        return
    counter = EpochCounter(path)
    try:
        counter.bump()
    finally:
        counter.close()
