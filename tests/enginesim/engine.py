"""The simulated engine: max-num-seqs slots with a waiting queue, and counters a test reads.

The queue is first come first served, or with `scheduling_policy="priority"` ordered by the
requests' `priority` (smaller first, then arrival), as vLLM's `--scheduling-policy priority`.

"In flight" counts a request from its arrival to its end (waiting + running); a tenant is the
value of the tenant header, else the body's `user` field, else "-".
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from .faults import Faults
from .metrics import VllmMetrics
from .model import LatencyModel, SimOptions


@dataclass
class TenantStats:
    in_flight: int = 0
    max_in_flight: int = 0
    running: int = 0
    max_running: int = 0
    requests: int = 0
    completed: int = 0
    aborted: int = 0
    generation_tokens: int = 0
    slot_seconds: float = 0.0  # wall seconds of engine slots held since the last reset
    last_priority: int | None = None  # the `priority` of its latest request


@dataclass(eq=False)  # identity hashing: tracks live in a set
class Track:
    """One request as the engine sees it."""

    tenant: str
    arrived: float
    started: float | None = None  # when it got a slot
    first_token: float | None = None
    generated: int = 0
    dropped: bool = False  # cut on purpose by the drop fault (not a client abort)


@dataclass
class Counters:
    requests: int = 0
    completed: int = 0
    aborted: int = 0  # the client went away before the end
    dropped: int = 0  # cut on purpose by the drop fault
    errors_injected: int = 0
    rejected: int = 0  # bad requests (4xx)
    prompt_tokens: int = 0
    generation_tokens: int = 0
    tokenize_requests: int = 0  # POST /tokenize calls
    max_in_flight: int = 0
    max_running: int = 0
    max_waiting: int = 0
    tenants: dict[str, TenantStats] = field(default_factory=dict)


class SlotQueue:
    """max-num-seqs slots; a request that finds none waits, in order of (priority, arrival)."""

    def __init__(self, slots: int, by_priority: bool) -> None:
        self.free = slots
        self.by_priority = by_priority  # else every key is 0: first come first served
        self._waiting: list[tuple[tuple[int, int], asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    def full(self) -> bool:
        return self.free == 0

    async def acquire(self, priority: int) -> None:
        if self.free and not self._waiting:
            self.free -= 1
            return
        key = (priority if self.by_priority else 0, next(self._arrivals))
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (key, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # handed a slot as it was cancelled
                self.release()
            raise

    def release(self) -> None:
        while self._waiting:
            _, future = heapq.heappop(self._waiting)
            if not future.done():  # a cancelled waiter's future is done: skip it
                future.set_result(None)
                return
        self.free += 1


class SimEngine:
    def __init__(self, opts: SimOptions) -> None:
        self.opts = opts
        self.latency = LatencyModel(opts)
        self.faults = Faults()
        self.faults.update(opts.faults)
        self.metrics = VllmMetrics(opts.models[0])
        self._slots = SlotQueue(opts.max_num_seqs, opts.scheduling_policy == "priority")
        self.running: set[Track] = set()
        self.waiting = 0
        self.in_flight = 0
        self.counters = Counters()
        self._busy_since_reset = 0.0  # integral of `running` over wall time
        self._busy_mark = time.monotonic()
        self._reset_at = time.monotonic()

    def _tenant(self, name: str) -> TenantStats:
        return self.counters.tenants.setdefault(name, TenantStats())

    def _mark_busy(self) -> None:
        now = time.monotonic()
        self._busy_since_reset += len(self.running) * (now - self._busy_mark)
        self._busy_mark = now

    def _publish(self) -> None:
        c = self.counters
        c.max_in_flight = max(c.max_in_flight, self.in_flight)
        c.max_running = max(c.max_running, len(self.running))
        c.max_waiting = max(c.max_waiting, self.waiting)
        self.metrics.set_queue(len(self.running), self.waiting, self.opts.max_num_seqs)

    @asynccontextmanager
    async def admitted(self, tenant: str, priority: int = 0) -> AsyncIterator[Track]:
        """Hold a sequence slot for the body of the `async with` (waiting when all are busy).

        Cancellation (client gone) at any point frees the slot and counts an abort.
        """
        track = Track(tenant=tenant, arrived=time.monotonic())
        stats = self._tenant(tenant)
        stats.last_priority = priority
        self.counters.requests += 1
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        self.in_flight += 1
        self._publish()
        finished = False
        try:
            if self._slots.full():  # all seqs busy: wait in the queue, like vLLM's
                self.waiting += 1
                self._publish()
                try:
                    await self._slots.acquire(priority)
                finally:
                    self.waiting -= 1
            else:
                await self._slots.acquire(priority)
            try:
                self._mark_busy()
                track.started = time.monotonic()
                self.running.add(track)
                stats.running += 1
                stats.max_running = max(stats.max_running, stats.running)
                self._publish()
                self.metrics.queue_time.observe(track.started - track.arrived)
                yield track
                finished = True
            finally:
                self._mark_busy()
                self.running.discard(track)
                stats.running -= 1
                stats.slot_seconds += self._held_since_reset(track, time.monotonic())
                self._slots.release()
        finally:
            self.in_flight -= 1
            stats.in_flight -= 1
            stats.generation_tokens += track.generated
            self.counters.generation_tokens += track.generated
            self.metrics.generation_tokens.inc(track.generated)
            if finished:
                self.counters.completed += 1
                stats.completed += 1
            elif not track.dropped:
                self.counters.aborted += 1
                stats.aborted += 1
                self.metrics.success.labels(finished_reason="abort").inc()
            self._publish()

    def token_interval(self) -> float:
        return self.latency.token_interval(len(self.running))

    def reset(self) -> None:
        """Zero counters and peaks; requests in flight stay counted as in flight.

        Tenant records are reset in place: requests in flight still hold them.
        """
        self._mark_busy()
        tenants = self.counters.tenants
        self.counters = Counters()
        for name, old in tenants.items():
            if old.in_flight:
                fresh = TenantStats(
                    in_flight=old.in_flight,
                    max_in_flight=old.in_flight,
                    running=old.running,
                    max_running=old.running,
                )
                vars(old).update(vars(fresh))
                self.counters.tenants[name] = old
        self._busy_since_reset = 0.0
        self._reset_at = time.monotonic()
        self._publish()

    def _held_since_reset(self, track: Track, now: float) -> float:
        """Slot seconds of `track` inside the current window (like busy_slot_seconds)."""
        return now - max(track.started or now, self._reset_at)

    def snapshot(self) -> dict[str, Any]:
        """GET /sim/stats: current state, peaks and totals since start or the last reset."""
        self._mark_busy()
        now = time.monotonic()
        c = self.counters
        tenants = {}
        for name, s in c.tenants.items():
            live = sum(self._held_since_reset(t, now) for t in self.running if t.tenant == name)
            tenants[name] = {**vars(s), "slot_seconds": s.slot_seconds + live}
        return {
            "in_flight": self.in_flight,
            "running": len(self.running),
            "waiting": self.waiting,
            "max_num_seqs": self.opts.max_num_seqs,
            "busy_slot_seconds": self._busy_since_reset,
            "seconds_since_reset": now - self._reset_at,
            **{k: v for k, v in vars(c).items() if k != "tenants"},
            "tenants": tenants,
            "faults": self.faults.as_dict(),
        }
