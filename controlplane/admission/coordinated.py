"""Admission that holds across replicas sharing one PostgreSQL database.

Each replica first admits locally (its own weighted fair queue, the same caps), then takes a
lease row through `sparkplane_admit` (see pg_schema.py), which counts every replica's
leases under an advisory lock. A request that cannot have a lease yet waits in this replica's
gate, ordered by its tenant's virtual time; the gate retries when any replica releases a lease
(LISTEN/NOTIFY) and at least every `POLL_SECONDS`. Releases run in the background so that the
client never waits for them; a crashed replica's leases expire with its heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import psycopg
from sqlalchemy import Engine as DbEngine

from controlplane.admission.limits import ONE, Demand, Rejected, RejectReason
from controlplane.admission.local import Admission, Slot, TenantState
from controlplane.admission.pg_schema import CHARGE_TOKENS_SQL, RELEASE_SQL
from controlplane.admission.replica_link import ReplicaLink
from controlplane.core.config import Settings
from controlplane.engines.pool import EnginePool
from controlplane.metering.metrics import Metrics
from controlplane.metering.usage import UsageLedger
from controlplane.tenancy.policy import TenantPolicy

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
ADMIT_SQL = (
    "SELECT lease_id, reason, retry_after FROM sparkplane_admit(%s, %s, %s, %s, %s, %s, %s, %s)"
)


@dataclass(eq=False)
class _GateWaiter:
    slot: Slot
    future: asyncio.Future[int]
    reason: RejectReason
    abandoned: bool = False
    priority: float = field(init=False)

    def __post_init__(self) -> None:
        self.priority = self.slot.tenant.vtime


class CoordinatedAdmission(Admission):
    def __init__(
        self,
        pool: EnginePool,
        usage: UsageLedger,
        metrics: Metrics,
        db_engine: DbEngine,
        settings: Settings,
    ) -> None:
        super().__init__(pool, usage, metrics, local_rates=False)
        # Locally only tenant caps and fair order apply; the gate enforces engine capacity
        # across replicas (a request waiting at the gate must not hold a local engine slot
        # that another tenant of this replica could use).
        pool.enforce_capacity = False
        self._link = ReplicaLink(db_engine.url, settings.replica_id, settings.lease_ttl)
        self._gate: list[_GateWaiter] = []
        self._wake = asyncio.Event()

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await self._link.start(on_notify=self._wake.set)
        self._link.add_loop(self._gate_loop(), "admission-gate")

    async def close(self) -> None:
        await self._link.close()

    # ---- admission -----------------------------------------------------------------------

    async def acquire(self, policy: TenantPolicy, model: str | None, demand: Demand = ONE) -> Slot:
        # The local step counts the request's n sequences; its lease counts one request (the
        # engine capacity across replicas is in requests, as vLLM's is in batches of them).
        arrived = time.monotonic()
        slot = await super().acquire(policy, model, demand)
        try:
            slot.lease_id = await self._lease(slot, policy, arrived + policy.queue_timeout)
        except Rejected as rejected:
            self.metrics.rejected.labels(policy.name, rejected.reason.value).inc()
            self.release(slot)
            raise
        except BaseException:
            self.release(slot)
            raise
        return slot

    def release(self, slot: Slot) -> None:
        if slot.released:
            return
        super().release(slot)
        if slot.lease_id is not None:
            self._link.spawn(self._release_lease(slot.lease_id))

    def charge_tokens(self, state: TenantState, tokens: int) -> None:
        tpm = state.policy.tpm
        if tpm is not None and tokens > 0:
            params = {"tpm": tpm, "tokens": tokens, "tenant": state.policy.tenant_id}
            self._link.spawn(self._link.execute("release", CHARGE_TOKENS_SQL, params))

    async def _lease(self, slot: Slot, policy: TenantPolicy, deadline: float) -> int:
        reason = RejectReason.CONCURRENCY
        if not self._gate:  # nobody waits here: try at once, without a hop through the gate
            lease, reason = await self._admit_shielded(slot)
            if lease is not None:
                return lease
        waiter = _GateWaiter(slot, asyncio.get_running_loop().create_future(), reason)
        self._gate.append(waiter)
        self._wake.set()
        handed_over = False
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                lease = await asyncio.shield(waiter.future)
            handed_over = True
            return lease
        except TimeoutError:
            raise Rejected(
                waiter.reason,
                self._timeout_message(waiter, policy),
                max(1.0, min(policy.queue_timeout, 30.0)),
            ) from None
        finally:
            waiter.abandoned = True
            future = waiter.future
            granted = future.done() and not future.cancelled() and future.exception() is None
            if granted and not handed_over:  # granted as we timed out or were cancelled
                self._link.spawn(self._release_lease(future.result()))
            with contextlib.suppress(ValueError):
                self._gate.remove(waiter)

    async def _admit_shielded(self, slot: Slot) -> tuple[int | None, RejectReason]:
        """`_admit` that a cancelled caller cannot interrupt half-way: the lease may already be
        committed when the client goes away, so it is handed back instead of leaking."""
        call = asyncio.ensure_future(self._admit(slot))
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            call.add_done_callback(self._give_back_if_granted)
            raise

    def _give_back_if_granted(self, call: asyncio.Future[tuple[int | None, RejectReason]]) -> None:
        if call.cancelled() or call.exception() is not None:
            return
        lease, _ = call.result()
        if lease is not None:
            self._link.spawn(self._release_lease(lease))

    @staticmethod
    def _timeout_message(waiter: _GateWaiter, policy: TenantPolicy) -> str:
        if waiter.reason is RejectReason.CONCURRENCY:
            limit = f"tenant concurrency limit of {policy.max_concurrency} reached on all replicas"
        else:
            limit = "engine capacity is in use by other requests"
        return f"{limit}; waited {policy.queue_timeout:g} s"

    async def _admit(self, slot: Slot) -> tuple[int | None, RejectReason]:
        """One `sparkplane_admit` call: (lease id, None) or (None, why not); raises Rejected
        at once for rate limits and for an unreachable database."""
        policy = slot.tenant.policy
        params = [
            policy.tenant_id,
            slot.engine.url,
            self._link.replica_id,
            policy.max_concurrency,
            slot.engine.capacity,
            policy.rpm,
            policy.tpm,
            self._link.lease_ttl,
        ]
        try:
            conn = await self._link.conn("admit")
            cursor = await conn.execute(ADMIT_SQL, params)
            row = await cursor.fetchone()
        except psycopg.Error as exc:
            log.error("admission database unreachable: %s", exc)
            raise Rejected(
                RejectReason.COORDINATION_UNAVAILABLE,
                "the shared admission database cannot be reached",
                5.0,
            ) from None
        assert row is not None
        lease, reason, retry_after = row
        if lease is not None:
            return int(lease), RejectReason.CONCURRENCY
        why = RejectReason(reason)
        if why in (RejectReason.RPM, RejectReason.TPM):
            limit = policy.rpm if why is RejectReason.RPM else policy.tpm
            name = "requests" if why is RejectReason.RPM else "tokens"
            raise Rejected(
                why,
                f"{name}-per-minute limit of {limit} reached on all replicas",
                float(retry_after or 1.0),
            )
        return None, why

    # ---- background ----------------------------------------------------------------------

    async def _gate_loop(self) -> None:
        while True:
            timeout = POLL_SECONDS if self._gate else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            blocked_engines: set[str] = set()
            blocked_tenants: set[int] = set()
            for waiter in sorted(self._gate, key=lambda w: w.priority):
                tenant, engine = waiter.slot.tenant.policy.tenant_id, waiter.slot.engine.url
                if waiter.abandoned or waiter.future.done():
                    continue
                if engine in blocked_engines or tenant in blocked_tenants:
                    continue
                try:
                    lease, reason = await self._admit(waiter.slot)
                except Rejected as rejected:
                    if not waiter.future.done():
                        waiter.future.set_exception(rejected)
                    continue
                if lease is None:
                    waiter.reason = reason
                    if reason is RejectReason.ENGINE_CAPACITY:
                        blocked_engines.add(engine)
                    else:
                        blocked_tenants.add(tenant)
                elif waiter.abandoned or waiter.future.done():
                    self._link.spawn(self._release_lease(lease))
                else:
                    waiter.future.set_result(lease)

    async def _release_lease(self, lease_id: int) -> None:
        """Delete the lease, retrying until the database answers: while this replica lives, a
        lease it failed to delete would hold its slot for good (the TTL frees only the dead's)."""
        delay = 0.2
        while True:
            try:
                await self._link.execute("release", RELEASE_SQL, {"lease": lease_id})
            except psycopg.Error as exc:
                log.warning(
                    "could not release lease %s, retrying in %.1f s: %s", lease_id, delay, exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                self._wake.set()
                return
