"""Admission: per-tenant caps, bounded queues, engine capacity shared by weighted fair queueing.

A request needs two things at once: room under its tenant's `max_concurrency` for its sequences
(a request with `n` choices runs n sequences and takes n of it) and a slot at an engine (never
more than the engine's capacity of requests in flight). When it cannot have both it waits in
its tenant's bounded queue. Whenever a slot frees, `_dispatch` hands engine slots to the queued
tenants by start-time fair queueing: each grant advances the tenant's virtual time by
sequences/weight and the tenant with the smallest virtual time goes next, so saturated tenants
share the engines in proportion to their weights whatever order their requests arrived in.

With an engine queue (engine_queue.py) each slot carries its grant's start tag as vLLM's
`priority`, so what waits inside an engine is served in the same fair order.

Everything here runs on the event loop thread without awaiting between check and update, so no
lock is needed; cancellation at any point (queued, granted, running) goes through `release` or
the waiter cleanup and frees the slot at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from controlplane.admission.engine_queue import EngineQueue
from controlplane.admission.limits import (
    ONE,
    Demand,
    Rejected,
    RejectReason,
    TenantPolicy,
    TokenBucket,
    check_rates_and_quotas,
)
from controlplane.engines.pool import Engine, EnginePool
from controlplane.metering.metrics import Metrics
from controlplane.metering.usage import UsageLedger


@dataclass(eq=False)
class _Waiter:
    model: str | None
    demand: Demand
    future: asyncio.Future[None]
    enqueued_at: float
    engine: Engine | None = None
    tag: float = 0.0  # the grant's start tag


@dataclass(eq=False)
class TenantState:
    policy: TenantPolicy
    in_flight: int = 0  # sequences running: a request with n choices counts n
    reserved_tokens: int = 0  # completion tokens the requests in flight may still produce
    queue: deque[_Waiter] = field(default_factory=deque)
    vtime: float = 0.0
    requests: TokenBucket | None = None
    tokens: TokenBucket | None = None


@dataclass(eq=False)
class Slot:
    """An admitted request; `release()` is idempotent and must run exactly when it ends."""

    admission: Admission
    tenant: TenantState
    engine: Engine
    queue_wait: float
    demand: Demand = ONE  # what it holds: released exactly as granted
    released: bool = False
    lease_id: int | None = None  # the cross-replica lease (coordinated.py), if any
    priority: int | None = None  # the engine queue's order for it (None: the engine's FCFS)

    def release(self) -> None:
        self.admission.release(self)


class Admission:
    def __init__(
        self,
        pool: EnginePool,
        usage: UsageLedger,
        metrics: Metrics,
        *,
        local_rates: bool = True,
        engine_queue: int = 0,
    ) -> None:
        self.pool = pool
        self.local_rates = local_rates  # False when replicas share rate buckets in the database
        self.engine_queue = EngineQueue(engine_queue, len(pool.engines))
        self.usage = usage
        self.metrics = metrics
        self.tenants: dict[int, TenantState] = {}
        self._vclock = 0.0
        pool.on_capacity_change(self._dispatch)

    # ---- public --------------------------------------------------------------------------

    async def acquire(self, policy: TenantPolicy, model: str | None, demand: Demand = ONE) -> Slot:
        state = self._state(policy)
        # The gateway refuses n above max_concurrency; a limit lowered since must not make a
        # request wait for room that can never be.
        demand = Demand(min(demand.sequences, policy.max_concurrency), demand.tokens)
        try:
            check_rates_and_quotas(
                policy, state.requests, state.tokens, self.usage, state.reserved_tokens
            )
            if not self.pool.any_healthy():
                raise Rejected(RejectReason.ENGINE_UNAVAILABLE, "no engine is healthy", 5.0)
            if not state.queue and self._fits(state, demand):
                engine = self.pool.take(model, self._held_back())
                if engine is not None:
                    # It was idle: no banked credit.
                    state.vtime = max(state.vtime, self.engine_queue.floor(self._vclock))
                    tag = self._grant(state, demand)
                    return self._admitted(state, engine, 0.0, demand, tag)
            engine, waited, tag = await self._wait(state, model, demand)
        except Rejected as rejected:
            self.metrics.rejected.labels(policy.name, rejected.reason.value).inc()
            raise
        return self._admitted(state, engine, waited, demand, tag)

    def release(self, slot: Slot) -> None:
        if slot.released:
            return
        slot.released = True
        self._ungrant(slot.tenant, slot.demand)
        self.pool.give_back(slot.engine)
        self._dispatch()

    def switch_engine(self, slot: Slot, model: str | None) -> bool:
        """Move an admitted request to another engine with room (its engine just failed).

        Not with a cross-replica lease: the lease counts the engine it was taken for.
        """
        if slot.lease_id is not None or slot.released:
            return False
        other = self.pool.take(model)  # the failed engine is unhealthy now: never chosen again
        if other is None:
            return False
        self.pool.give_back(slot.engine)
        slot.engine = other
        return True

    def charge_tokens(self, state: TenantState, tokens: int) -> None:
        """Count a finished request's tokens against tpm (the bucket may go into debt)."""
        if state.tokens is not None and tokens > 0:
            state.tokens.spend(tokens)

    def queued(self, state: TenantState) -> int:
        return len(state.queue)

    # ---- internals -----------------------------------------------------------------------

    def _state(self, policy: TenantPolicy) -> TenantState:
        state = self.tenants.get(policy.tenant_id)
        if state is None:
            state = self.tenants[policy.tenant_id] = TenantState(policy=policy)
        elif state.policy != policy:  # limits changed: keep counters, adopt the new limits
            state.policy = policy
            self._dispatch()
        if self.local_rates:
            state.requests = TokenBucket.resize(state.requests, policy.rpm)
            state.tokens = TokenBucket.resize(state.tokens, policy.tpm)
        return state

    async def _wait(
        self, state: TenantState, model: str | None, demand: Demand
    ) -> tuple[Engine, float, float]:
        """Queue until `_dispatch` grants a slot: (engine, seconds waited, start tag)."""
        policy = state.policy
        if len(state.queue) >= policy.queue_size:
            raise Rejected(
                self._blocked_on(state, demand),
                self._blocked_message(state, demand, "queue is full"),
                self._retry_after(state),
            )
        if not state.queue:  # becoming backlogged: do not bank virtual time while idle
            state.vtime = max(state.vtime, self.engine_queue.floor(self._vclock))
        loop = asyncio.get_running_loop()
        waiter = _Waiter(model, demand, loop.create_future(), time.monotonic())
        state.queue.append(waiter)
        self._dispatch()
        try:
            async with asyncio.timeout(policy.queue_timeout):
                await waiter.future
        except TimeoutError:
            if waiter.engine is not None:  # granted in the same instant: keep the slot
                return waiter.engine, time.monotonic() - waiter.enqueued_at, waiter.tag
            self._forget(state, waiter)
            raise Rejected(
                self._blocked_on(state, demand),
                self._blocked_message(state, demand, f"waited {policy.queue_timeout:g} s"),
                self._retry_after(state),
            ) from None
        except BaseException:  # cancelled (client gone) or anything else: free what we hold
            if waiter.engine is not None:
                self._ungrant(state, demand)
                self.pool.give_back(waiter.engine)
                self._dispatch()
            else:
                self._forget(state, waiter)
            raise
        assert waiter.engine is not None
        return waiter.engine, time.monotonic() - waiter.enqueued_at, waiter.tag

    def _forget(self, state: TenantState, waiter: _Waiter) -> None:
        try:
            state.queue.remove(waiter)
        except ValueError:
            pass
        else:
            self._dispatch()  # the waiter behind it may now be at the head

    @staticmethod
    def _fits(state: TenantState, demand: Demand) -> bool:
        return state.in_flight + demand.sequences <= state.policy.max_concurrency

    def _grant(self, state: TenantState, demand: Demand) -> float:
        """Count the grant against the tenant; returns its start tag (its place in fair order).

        The tag is the tenant's virtual time, floored at the clock only when the tenant was
        idle (here or in `_wait`), not at each grant: a tenant that stays backlogged but is
        held back by its own cap while others are granted keeps the place it is owed, so an
        engine's queue serves its requests before theirs until it has caught up.
        """
        start = state.vtime
        state.vtime = start + demand.sequences / state.policy.weight
        self._vclock = max(self._vclock, start)
        self.engine_queue.granted(start)
        state.in_flight += demand.sequences
        state.reserved_tokens += demand.tokens
        return start

    def _held_back(self) -> int:
        """The part of each engine's capacity not to use now: its queue while a backlogged
        tenant waits on its own cap with others' requests in flight (engine_queue.py)."""
        if not self.engine_queue.per_engine:
            return 0
        in_flight = sum(state.in_flight for state in self.tenants.values())
        waits_on_a_cap = any(
            state.queue
            and not self._fits(state, state.queue[0].demand)
            and state.in_flight < in_flight
            for state in self.tenants.values()
        )
        return self.engine_queue.per_engine if waits_on_a_cap else 0

    @staticmethod
    def _ungrant(state: TenantState, demand: Demand) -> None:
        state.in_flight -= demand.sequences
        state.reserved_tokens -= demand.tokens

    def _admitted(
        self, state: TenantState, engine: Engine, waited: float, demand: Demand, tag: float
    ) -> Slot:
        children = self.metrics.tenant(state.policy.name)
        children.admitted.inc()
        children.queue_wait.observe(waited)
        priority = self.engine_queue.priority(tag)
        return Slot(self, state, engine, waited, demand, priority=priority)

    def _dispatch(self) -> None:
        """Hand free engine slots to queued tenants, smallest virtual time first."""
        skipped: set[int] = set()
        while True:
            best: TenantState | None = None
            for tenant_id, state in self.tenants.items():
                if not state.queue or tenant_id in skipped:
                    continue
                if not self._fits(state, state.queue[0].demand):
                    continue
                if best is None or state.vtime < best.vtime:
                    best = state
            if best is None:
                return
            waiter = best.queue[0]
            if waiter.future.done():  # cancelled, its task not yet resumed to clean up
                best.queue.popleft()
                continue
            engine = self.pool.take(waiter.model, self._held_back())
            if engine is None:  # no room for this model; others may want another engine
                skipped.add(best.policy.tenant_id)
                continue
            best.queue.popleft()
            waiter.tag = self._grant(best, waiter.demand)
            waiter.engine = engine
            waiter.future.set_result(None)

    def _blocked_on(self, state: TenantState, demand: Demand) -> RejectReason:
        if not self._fits(state, demand):
            return RejectReason.CONCURRENCY
        return RejectReason.ENGINE_CAPACITY

    def _blocked_message(self, state: TenantState, demand: Demand, what: str) -> str:
        if self._blocked_on(state, demand) is RejectReason.CONCURRENCY:
            limit = f"tenant concurrency limit of {state.policy.max_concurrency} reached"
        else:
            limit = "engine capacity is in use by other requests"
        return f"{limit}; {what}"

    def _retry_after(self, state: TenantState) -> float:
        return max(1.0, min(state.policy.queue_timeout, 30.0))
