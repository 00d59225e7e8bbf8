"""The scheduled retention job, driven by a controlled clock, on SQLite and the real PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from controlplane.audit import AuditWriter
from controlplane.audit.models import AuditEntry, AuditRetentionRun
from controlplane.audit.retention_job import LOCK_NAME, RETRY_AFTER, RetentionJob
from controlplane.audit.verify import verify_live
from controlplane.core.dblock import DatabaseLock
from tests.controlplane.audit.conftest import pg_schema_engine

DAY = timedelta(days=1)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def job_for(engine, audit, clock, policies=None, **kwargs) -> RetentionJob:
    return RetentionJob(
        engine, lambda: audit.signer, lambda: policies or {"acme": 30, "beta": 400},
        default_days=kwargs.pop("default_days", 730), interval=DAY, clock=clock, **kwargs,
    )  # fmt: skip


def data_count(engine, tenant):
    with engine.connect() as conn:
        kept = [AuditEntry.tenant == tenant, AuditEntry.data.is_not(None)]
        return conn.execute(select(func.count()).where(*kept)).scalar()


async def test_each_tenants_retention_is_applied_once_per_interval(audit, engine, tmp_path):
    for i in range(6):
        await audit.record("api.request", tenant=("acme", "beta")[i % 2], n=i)
    await audit.record("admin.tenant_create", actor="root")
    clock = Clock()
    start = clock.now
    job = job_for(engine, audit, clock)

    first = job.tick()  # never ran: due at once, nothing is old enough yet
    assert first is not None and (first.deleted, first.redacted, first.error) == (0, 0, None)
    assert job.next_due(job.last_run()) == start + DAY

    clock.now = start + 23 * timedelta(hours=1)
    assert job.tick() is None  # not due yet: nothing runs

    clock.now = start + 31 * DAY  # past acme's 30 days, within beta's 400
    second = job.tick()
    assert second is not None and second.redacted == 3 and second.deleted == 0
    assert (data_count(engine, "acme"), data_count(engine, "beta")) == (0, 3)
    assert job.next_due(job.last_run()) == start + 32 * DAY
    assert job.tick() is None  # ran an instant ago

    clock.now = start + 731 * DAY  # past the longest retention (the 730-day default)
    third = job.tick()
    assert third is not None and third.deleted >= 7 and third.cut >= 7
    with engine.connect() as conn:
        runs = conn.execute(select(func.count()).select_from(AuditRetentionRun)).scalar()
        kinds = set(conn.execute(select(AuditEntry.kind)).scalars())
    assert runs == 3 and "api.request" not in kinds
    await audit.record("api.request", tenant="acme", n=99)
    await audit.checkpoint_now()
    report = verify_live(engine, [tmp_path / "audit-signing.pub"])
    assert report.valid, report.as_dict()


async def test_a_failed_run_is_recorded_and_retried_within_the_hour(audit, engine):
    clock = Clock()

    def broken() -> dict[str, int]:
        raise RuntimeError("tenants table unreadable")

    job = RetentionJob(engine, lambda: audit.signer, broken, default_days=730, interval=DAY,
                       clock=clock)  # fmt: skip
    run = job.tick()
    assert run is not None and run.error == "RuntimeError: tenants table unreadable"
    assert job.next_due(job.last_run()) == clock.now + RETRY_AFTER
    clock.now += RETRY_AFTER
    job.policies = lambda: {}
    assert job.tick().error is None


async def test_a_replica_does_not_run_it_while_another_holds_the_job(audit, engine):
    clock = Clock()
    other_replica = DatabaseLock(engine, LOCK_NAME)
    assert other_replica.acquire()
    try:
        assert job_for(engine, audit, clock).tick() is None
    finally:
        other_replica.release()
    assert job_for(engine, audit, clock).tick() is not None


@pytest.mark.postgres
async def test_replicas_starting_together_run_it_once(pg_schema, tmp_path):
    """Four replicas (each its own engine) tick at the same moment: one run, one prune."""
    engines = [pg_schema_engine(pg_schema) for _ in range(4)]
    writer = AuditWriter(engines[0], tmp_path / "audit-signing.key")
    await writer.start()
    try:
        for i in range(5):
            await writer.record("api.request", tenant="acme", n=i)
        clock = Clock()
        clock.now += 800 * DAY
        jobs = [job_for(engine, writer, clock) for engine in engines]
        barrier, results = threading.Barrier(len(jobs)), []

        def tick(job: RetentionJob) -> None:
            barrier.wait()
            results.append(job.tick())

        threads = [threading.Thread(target=tick, args=(job,)) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ran = [run for run in results if run is not None]
        assert len(ran) == 1 and ran[0].deleted >= 5
        with engines[0].connect() as conn:
            pruned = conn.execute(
                select(func.count()).where(AuditEntry.kind == "audit.pruned")
            ).scalar()
            runs = conn.execute(select(func.count()).select_from(AuditRetentionRun)).scalar()
        assert (pruned, runs) == (1, 1)
    finally:
        await writer.close()
        for engine in engines:
            engine.dispose()
