"""Admission: per-tenant caps, bounded queues, engine capacity shared by weighted fair queueing.

A request needs two things at once: a slot under its tenant's `max_concurrency` and a slot at an
engine (never more than the engine's capacity in flight). When it cannot have both it waits in
its tenant's bounded queue. Whenever a slot frees, `_dispatch` hands engine slots to the queued
tenants by start-time fair queueing: each grant advances the tenant's virtual time by 1/weight
and the tenant with the smallest virtual time goes next, so saturated tenants share the engines
in proportion to their weights whatever order their requests arrived in.

Everything here runs on the event loop thread without awaiting between check and update, so no
lock is needed; cancellation at any point (queued, granted, running) goes through `release` or
the waiter cleanup and frees the slot at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from controlplane.admission.limits import (
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
    future: asyncio.Future[None]
    enqueued_at: float
    engine: Engine | None = None


@dataclass(eq=False)
class TenantState:
    policy: TenantPolicy
    in_flight: int = 0
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
    released: bool = False
    lease_id: int | None = None  # the cross-replica lease (coordinated.py), if any

    def release(self) -> None:
        self.admission.release(self)


class Admission:
    def __init__(
        self, pool: EnginePool, usage: UsageLedger, metrics: Metrics, *, local_rates: bool = True
    ) -> None:
        self.pool = pool
        self.local_rates = local_rates  # False when replicas share rate buckets in the database
        self.usage = usage
        self.metrics = metrics
        self.tenants: dict[int, TenantState] = {}
        self._vclock = 0.0
        pool.on_capacity_change(self._dispatch)

    # ---- public --------------------------------------------------------------------------

    async def acquire(self, policy: TenantPolicy, model: str | None) -> Slot:
        state = self._state(policy)
        try:
            check_rates_and_quotas(policy, state.requests, state.tokens, self.usage)
            if not self.pool.any_healthy():
                raise Rejected(RejectReason.ENGINE_UNAVAILABLE, "no engine is healthy", 5.0)
            if not state.queue and state.in_flight < policy.max_concurrency:
                engine = self.pool.take(model)
                if engine is not None:
                    self._grant(state, engine)
                    return self._admitted(state, engine, 0.0)
            engine, waited = await self._wait(state, model)
        except Rejected as rejected:
            self.metrics.rejected.labels(policy.name, rejected.reason.value).inc()
            raise
        return self._admitted(state, engine, waited)

    def release(self, slot: Slot) -> None:
        if slot.released:
            return
        slot.released = True
        slot.tenant.in_flight -= 1
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

    async def _wait(self, state: TenantState, model: str | None) -> tuple[Engine, float]:
        policy = state.policy
        if len(state.queue) >= policy.queue_size:
            raise Rejected(
                self._blocked_on(state),
                self._blocked_message(state, "queue is full"),
                self._retry_after(state),
            )
        if not state.queue:  # becoming backlogged: do not bank virtual time while idle
            state.vtime = max(state.vtime, self._vclock)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(model, loop.create_future(), time.monotonic())
        state.queue.append(waiter)
        self._dispatch()
        try:
            async with asyncio.timeout(policy.queue_timeout):
                await waiter.future
        except TimeoutError:
            if waiter.engine is not None:  # granted in the same instant: keep the slot
                return waiter.engine, time.monotonic() - waiter.enqueued_at
            self._forget(state, waiter)
            raise Rejected(
                self._blocked_on(state),
                self._blocked_message(state, f"waited {policy.queue_timeout:g} s"),
                self._retry_after(state),
            ) from None
        except BaseException:  # cancelled (client gone) or anything else: free what we hold
            if waiter.engine is not None:
                state.in_flight -= 1
                self.pool.give_back(waiter.engine)
                self._dispatch()
            else:
                self._forget(state, waiter)
            raise
        assert waiter.engine is not None
        return waiter.engine, time.monotonic() - waiter.enqueued_at

    def _forget(self, state: TenantState, waiter: _Waiter) -> None:
        try:
            state.queue.remove(waiter)
        except ValueError:
            pass
        else:
            self._dispatch()  # the waiter behind it may now be at the head

    def _grant(self, state: TenantState, engine: Engine) -> None:
        start = max(state.vtime, self._vclock)
        state.vtime = start + 1.0 / state.policy.weight
        self._vclock = start
        state.in_flight += 1

    def _admitted(self, state: TenantState, engine: Engine, waited: float) -> Slot:
        children = self.metrics.tenant(state.policy.name)
        children.admitted.inc()
        children.queue_wait.observe(waited)
        return Slot(self, state, engine, waited)

    def _dispatch(self) -> None:
        """Hand free engine slots to queued tenants, smallest virtual time first."""
        skipped: set[int] = set()
        while True:
            best: TenantState | None = None
            for tenant_id, state in self.tenants.items():
                if not state.queue or tenant_id in skipped:
                    continue
                if state.in_flight >= state.policy.max_concurrency:
                    continue
                if best is None or state.vtime < best.vtime:
                    best = state
            if best is None:
                return
            waiter = best.queue[0]
            if waiter.future.done():  # cancelled, its task not yet resumed to clean up
                best.queue.popleft()
                continue
            engine = self.pool.take(waiter.model)
            if engine is None:  # no room for this model; others may want another engine
                skipped.add(best.policy.tenant_id)
                continue
            best.queue.popleft()
            self._grant(best, engine)
            waiter.engine = engine
            waiter.future.set_result(None)

    def _blocked_on(self, state: TenantState) -> RejectReason:
        if state.in_flight >= state.policy.max_concurrency:
            return RejectReason.CONCURRENCY
        return RejectReason.ENGINE_CAPACITY

    def _blocked_message(self, state: TenantState, what: str) -> str:
        if self._blocked_on(state) is RejectReason.CONCURRENCY:
            limit = f"tenant concurrency limit of {state.policy.max_concurrency} reached"
        else:
            limit = "engine capacity is in use by other requests"
        return f"{limit}; {what}"

    def _retry_after(self, state: TenantState) -> float:
        return max(1.0, min(state.policy.queue_timeout, 30.0))
