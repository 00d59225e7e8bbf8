"""Parallel SHA-256 of many files with bounded memory.

hashlib releases the GIL while hashing buffers larger than 2 KiB, so plain threads scale to the
machine's cores. Each worker reads into one reusable buffer, so memory stays at about
`workers * chunk_size` whatever the file sizes. Files are opened with O_NOFOLLOW: a symlink is
never followed, it is an error.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

CHUNK_SIZE = 4 << 20  # 4 MiB: big enough to amortise syscalls, small enough to bound memory.
_buffers = threading.local()  # one buffer per thread, reused for every file it hashes


def _buffer(chunk_size: int) -> bytearray:
    buffer: bytearray | None = getattr(_buffers, "buffer", None)
    if buffer is None or len(buffer) != chunk_size:
        buffer = bytearray(chunk_size)
        _buffers.buffer = buffer
    return buffer


class ProgressSink(Protocol):
    def start(self, total_bytes: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...


@dataclass(frozen=True)
class Digest:
    size: int
    sha256: str


def default_workers() -> int:
    # One thread more than cores keeps a core busy while another thread waits on the disk.
    return (os.cpu_count() or 1) + 1


def hash_file(
    path: Path, chunk_size: int = CHUNK_SIZE, advance: Callable[[int], None] | None = None
) -> Digest:
    """SHA-256 and size of a regular file; raises OSError (ELOOP for a symlink)."""
    # O_NONBLOCK: a FIFO swapped in after the tree walk must not hang the verifier.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    with os.fdopen(fd, "rb", buffering=0) as handle:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        digest = hashlib.sha256()
        buffer = _buffer(chunk_size)
        view = memoryview(buffer)
        size = 0
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])
            size += count
            if advance is not None:
                advance(count)
    return Digest(size, digest.hexdigest())


def hash_tree_files(
    root: Path,
    jobs: Iterable[tuple[str, int]],
    *,
    workers: int | None = None,
    progress: ProgressSink | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> dict[str, Digest | OSError]:
    """Hash `root/path` for each (path, expected_size); returns a digest or the OSError per path.

    Largest files are started first so that one big shard does not run alone at the end.
    """
    ordered = sorted(jobs, key=lambda job: job[1], reverse=True)
    if progress is not None:
        progress.start(sum(size for _, size in ordered))
    advance = progress.advance if progress is not None else None

    def one(path: str) -> Digest | OSError:
        try:
            return hash_file(root / path, chunk_size, advance)
        except OSError as exc:
            return exc

    results: dict[str, Digest | OSError] = {}
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        for (path, _), result in zip(ordered, pool.map(one, [p for p, _ in ordered]), strict=True):
            results[path] = result
    return results
