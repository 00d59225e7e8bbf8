"""Entries waiting for the writer thread, and how their callers (on any event loop) are woken."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(eq=False)
class PendingEntry:
    """One `record` call (kind "" = a checkpoint request) and the future its caller awaits."""

    kind: str
    tenant: str | None
    data: bytes
    future: asyncio.Future[int]
    loop: asyncio.AbstractEventLoop
    force_checkpoint: bool = False
    new_key: Ed25519PrivateKey | None = field(default=None, repr=False)


def _settle(future: asyncio.Future[int], result: int | BaseException) -> None:
    if future.done():
        return  # the caller was cancelled; its entry is committed anyway
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def resolve(batch: list[PendingEntry], results: list[int | BaseException]) -> None:
    """Hand each caller its seq (or error) on its own event loop; callable from any thread."""
    for item, result in zip(batch, results, strict=True):
        with contextlib.suppress(RuntimeError):  # that event loop is closed; nobody waits
            item.loop.call_soon_threadsafe(_settle, item.future, result)
