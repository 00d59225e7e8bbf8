"""Entries waiting for the writer thread, and how their callers (on any event loop) are woken."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(eq=False)
class PendingEntry:
    """One `record` call (kind "" = a checkpoint request) and the future its caller awaits.

    `keep`: nobody waits for the commit (the answer went out once the entry was accepted), so
    a store failure does not fail the entry: it stays queued, in the chain's order."""

    kind: str
    tenant: str | None
    data: bytes
    future: asyncio.Future[int]
    loop: asyncio.AbstractEventLoop
    force_checkpoint: bool = False
    keep: bool = False
    new_key: Ed25519PrivateKey | None = field(default=None, repr=False)


def _settle(settled: list[tuple[asyncio.Future[int], int | BaseException]]) -> None:
    for future, result in settled:
        if future.done():
            continue  # the caller was cancelled; its entry is committed anyway
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


def resolve(batch: list[PendingEntry], results: list[int | BaseException]) -> None:
    """Hand each caller its seq (or error) on its own event loop; callable from any thread.

    One wake-up per event loop and batch, not one per entry: each is a write to the loop's
    self-pipe and a pass through its selector."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], int | BaseException]]]
    by_loop = {}
    for item, result in zip(batch, results, strict=True):
        by_loop.setdefault(item.loop, []).append((item.future, result))
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that event loop is closed; nobody waits
            loop.call_soon_threadsafe(_settle, settled)
