"""Admission in-process: fair sharing, caps, queue bounds and cancellation, deterministic."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Engine as DbEngine

from controlplane.admission.limits import Demand, Rejected, RejectReason
from controlplane.admission.local import Admission, Slot
from controlplane.core.db import init_db, make_engine
from controlplane.engines.client import EngineClient
from controlplane.engines.pool import Engine, EnginePool
from controlplane.metering.metrics import Metrics
from controlplane.metering.usage import UsageLedger
from controlplane.tenancy.policy import TenantPolicy


def policy(tenant_id: int, **limits: object) -> TenantPolicy:
    values: dict[str, object] = dict(
        tenant_id=tenant_id,
        name=f"t{tenant_id}",
        max_concurrency=100,
        weight=1.0,
        rpm=None,
        tpm=None,
        daily_tokens=None,
        monthly_tokens=None,
        max_tokens=None,
        max_context_tokens=None,
        allowed_models=frozenset(),
        queue_size=1000,
        queue_timeout=30.0,
        disabled=False,
        capture_content=False,
    )
    values.update(limits)
    return TenantPolicy(**values)  # type: ignore[arg-type]


@pytest.fixture
def db(tmp_path: Path) -> DbEngine:
    engine = make_engine(f"sqlite:///{tmp_path}/unit.db")
    init_db(engine)
    return engine


@pytest.fixture
async def admission(db: DbEngine) -> AsyncIterator[Admission]:
    pool = EnginePool([], capacity=4)
    client = EngineClient("http://127.0.0.1:9/v1")
    pool.engines.append(Engine("http://127.0.0.1:9/v1", 4, client, healthy=True))
    yield Admission(pool, UsageLedger(db), Metrics())
    await client.close()


async def test_weighted_fair_share_under_saturation(admission: Admission) -> None:
    weights = {1: 1.0, 2: 1.0, 3: 2.0, 4: 4.0}
    policies = {tid: policy(tid, weight=w) for tid, w in weights.items()}
    served: Counter[int] = Counter()
    running: list[asyncio.Event] = []

    async def client(tid: int) -> None:
        while True:
            slot = await admission.acquire(policies[tid], None)
            served[tid] += 1
            finished = asyncio.Event()
            running.append(finished)
            try:
                await finished.wait()
            finally:
                slot.release()

    # 8 clients per tenant, 4 engine slots: every tenant always has requests queued.
    clients = [asyncio.create_task(client(tid)) for tid in weights for _ in range(8)]
    while len(running) < 4:
        await asyncio.sleep(0)
    served.clear()
    for _ in range(800):  # end one request at a time, in random order
        running.pop(random.randrange(len(running))).set()
        while len(running) < 4:
            await asyncio.sleep(0)
    for task in clients:
        task.cancel()
    await asyncio.gather(*clients, return_exceptions=True)
    total = sum(served.values())
    for tid, weight in weights.items():
        expected = weight / sum(weights.values())
        assert served[tid] / total == pytest.approx(expected, abs=0.02), dict(served)
    assert admission.pool.engines[0].in_flight == 0
    assert all(s.in_flight == 0 and not s.queue for s in admission.tenants.values())


async def test_n_sequences_weigh_n_in_the_fair_share(admission: Admission) -> None:
    """Two tenants of equal weight, one asking n=2 each time: they get the same share of
    sequences, so the n=2 tenant gets half as many requests through (issue 17 finding 1)."""
    demands = {1: Demand(2, 2 * 16), 2: Demand(1, 16)}
    policies = {tid: policy(tid, max_concurrency=8) for tid in demands}
    served: Counter[int] = Counter()
    running: list[asyncio.Event] = []

    async def client(tid: int) -> None:
        while True:
            slot = await admission.acquire(policies[tid], None, demands[tid])
            served[tid] += 1
            finished = asyncio.Event()
            running.append(finished)
            try:
                await finished.wait()
            finally:
                slot.release()

    clients = [asyncio.create_task(client(tid)) for tid in demands for _ in range(8)]
    while len(running) < 4:
        await asyncio.sleep(0)
    served.clear()
    for _ in range(600):
        running.pop(random.randrange(len(running))).set()
        while len(running) < 4:
            await asyncio.sleep(0)
    for task in clients:
        task.cancel()
    await asyncio.gather(*clients, return_exceptions=True)
    assert served[1] / served[2] == pytest.approx(0.5, abs=0.05), dict(served)
    assert all(
        s.in_flight == 0 and s.reserved_tokens == 0 and not s.queue
        for s in admission.tenants.values()
    )


async def test_tenant_cap_holds_and_queue_drains(admission: Admission) -> None:
    capped = policy(1, max_concurrency=2)
    slots = [await admission.acquire(capped, None) for _ in range(2)]
    waiter = asyncio.create_task(admission.acquire(capped, None))
    await asyncio.sleep(0.01)
    assert not waiter.done() and admission.tenants[1].in_flight == 2
    slots[0].release()
    third = await asyncio.wait_for(waiter, 1)
    assert admission.tenants[1].in_flight == 2
    for slot in (slots[1], third):
        slot.release()
        slot.release()  # idempotent
    assert admission.tenants[1].in_flight == 0
    assert admission.pool.engines[0].in_flight == 0


async def test_queue_full_and_timeout_name_the_limit(admission: Admission) -> None:
    tight = policy(1, max_concurrency=1, queue_size=1, queue_timeout=0.05)
    slot = await admission.acquire(tight, None)
    queued = asyncio.create_task(admission.acquire(tight, None))
    await asyncio.sleep(0)
    with pytest.raises(Rejected) as full:
        await admission.acquire(tight, None)
    assert full.value.reason is RejectReason.CONCURRENCY and "queue is full" in full.value.message
    with pytest.raises(Rejected) as timed_out:
        await queued
    assert timed_out.value.reason is RejectReason.CONCURRENCY
    assert int(timed_out.value.retry_after_header) >= 1
    slot.release()
    assert admission.tenants[1].in_flight == 0 and not admission.tenants[1].queue


async def test_engine_capacity_is_the_limit_when_the_tenant_is_below_its_cap(
    admission: Admission,
) -> None:
    other = policy(2, queue_timeout=0.05)
    slots = [await admission.acquire(policy(1), None) for _ in range(4)]
    with pytest.raises(Rejected) as caught:
        await admission.acquire(other, None)
    assert caught.value.reason is RejectReason.ENGINE_CAPACITY
    for slot in slots:
        slot.release()


async def test_cancelled_waiters_leave_nothing_behind(admission: Admission) -> None:
    capped = policy(1, max_concurrency=3)
    holders = [await admission.acquire(capped, None) for _ in range(3)]
    waiters = [asyncio.create_task(admission.acquire(capped, None)) for _ in range(50)]
    await asyncio.sleep(0)
    for index, waiter in enumerate(waiters):
        if index % 2:
            waiter.cancel()
    for slot in holders:
        slot.release()
    await asyncio.sleep(0)
    for waiter in waiters:  # grants that race with cancellation must be given back too
        waiter.cancel()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    for result in results:  # a waiter that finished before its cancel owns a slot: end it
        if isinstance(result, Slot):
            result.release()
    state = admission.tenants[1]
    assert state.in_flight == 0 and not state.queue
    assert admission.pool.engines[0].in_flight == 0
    again = [await asyncio.wait_for(admission.acquire(capped, None), 0.1) for _ in range(3)]
    for slot in again:
        slot.release()


async def test_rpm_bucket(admission: Admission) -> None:
    limited = policy(1, rpm=2)
    for _ in range(2):
        (await admission.acquire(limited, None)).release()
    with pytest.raises(Rejected) as caught:
        await admission.acquire(limited, None)
    assert caught.value.reason is RejectReason.RPM
    assert 1 <= int(caught.value.retry_after_header) <= 30


async def test_daily_quota_counts_local_usage_at_once(admission: Admission) -> None:
    quota = policy(1, daily_tokens=100)
    (await admission.acquire(quota, None)).release()
    admission.usage.record(1, 60, 40)
    with pytest.raises(Rejected) as caught:
        await admission.acquire(quota, None)
    assert caught.value.reason is RejectReason.DAILY_QUOTA
    assert int(caught.value.retry_after_header) <= 86400
