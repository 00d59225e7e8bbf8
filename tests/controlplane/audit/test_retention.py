"""Retention on SQLite and PostgreSQL: prune and redact through the guards, then verify."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DatabaseError

from controlplane.audit.captured import ContentStore
from controlplane.audit.content import ContentVault
from controlplane.audit.export import export_audit
from controlplane.audit.models import AuditCheckpoint, AuditContent, AuditEntry
from controlplane.audit.retention import apply_retention
from controlplane.audit.verify import verify_export, verify_live


async def fill(audit, count):
    for i in range(count):
        await audit.record("api.request", tenant=("acme", "beta")[i % 2], n=i)


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM audit_entries",
        "UPDATE audit_entries SET data = NULL",
        "UPDATE audit_entries SET tenant = 'x'",
        "DELETE FROM audit_checkpoints",
    ],
)
async def test_guards_refuse_changes_outside_the_retention_path(audit, engine, statement):
    await fill(audit, 3)
    await audit.checkpoint_now()
    with engine.connect() as conn, pytest.raises(DatabaseError, match="append-only"):
        conn.execute(text(statement))


async def test_prune_keeps_a_signed_checkpoint_at_the_cut_and_still_verifies(
    audit, engine, tmp_path
):
    await fill(audit, 20)
    later = datetime.now(UTC) + timedelta(days=731)  # everything so far is past retention
    result = apply_retention(engine, audit.signer, now=later)
    assert (result.cut, result.deleted) == (20, 20)
    await fill(audit, 5)
    with engine.connect() as conn:
        remaining = list(
            conn.execute(select(AuditEntry.seq, AuditEntry.kind).order_by(AuditEntry.seq))
        )
        assert conn.execute(select(AuditCheckpoint.size).where(AuditCheckpoint.size == 20)).first()
    assert remaining[0] == (21, "audit.pruned") and len(remaining) == 6
    pub = tmp_path / "audit-signing.pub"
    report = verify_live(engine, [pub])
    assert report.valid and report.first_seq == 21 and report.entries_valid == 6, report.as_dict()
    exported = await export_audit(engine, audit, tmp_path / "after-prune.jsonl", reason="check")
    assert exported.first_seq == 21
    assert verify_export(tmp_path / "after-prune.jsonl", [pub]).valid


async def test_shorter_tenant_retention_redacts_data_but_keeps_the_chain(audit, engine, tmp_path):
    await fill(audit, 10)
    result = apply_retention(engine, audit.signer, tenant_days={"acme": 30},
                             now=datetime.now(UTC) + timedelta(days=31))  # fmt: skip
    assert result.redacted == {"acme": 5} and result.deleted == 0
    with engine.connect() as conn:
        redacted = conn.execute(select(func.count()).where(AuditEntry.data.is_(None))).scalar()
    assert redacted == 5
    report = verify_live(engine, [tmp_path / "audit-signing.pub"])
    assert report.valid and report.entries_withheld == 5, report.as_dict()


async def test_retention_policy_values_are_checked(audit, engine):
    with pytest.raises(ValueError, match="at least 1 day"):
        apply_retention(engine, audit.signer, tenant_days={"acme": 0})


async def test_concurrent_writes_during_prune_stay_in_one_chain(audit, engine, tmp_path):
    await fill(audit, 30)
    later = datetime.now(UTC) + timedelta(days=800)
    writes = asyncio.gather(*(audit.record("api.request", n=i) for i in range(200)))
    await asyncio.gather(
        writes, asyncio.to_thread(apply_retention, engine, audit.signer, now=later)
    )
    await audit.checkpoint_now()
    assert verify_live(engine, [tmp_path / "audit-signing.pub"]).valid


async def test_captured_content_goes_with_its_tenants_retention(audit, engine, tmp_path):
    store = ContentStore(engine, ContentVault(engine, tmp_path / "audit-content.key"))
    for tenant in ("acme", "beta", "gamma"):  # gamma: the default retention
        store.save(tenant, f"req-{tenant}", {"request": f"{tenant}'s prompt"})
    await fill(audit, 4)

    def kept():
        with engine.connect() as conn:
            return sorted(conn.execute(select(AuditContent.tenant)).scalars())

    def last(kind):
        with engine.connect() as conn:
            query = select(AuditEntry.data).where(AuditEntry.kind == kind)
            return orjson.loads(conn.execute(query.order_by(AuditEntry.seq.desc())).scalar())

    soon = datetime.now(UTC) + timedelta(days=40)  # past acme's 30 days, within beta's 365
    apply_retention(engine, audit.signer, tenant_days={"acme": 30, "beta": 365}, now=soon)
    assert kept() == ["beta", "gamma"]
    assert last("audit.redacted")["content_deleted"] == 1
    assert store.read("beta")[0].record == {"request": "beta's prompt"}
    later = datetime.now(UTC) + timedelta(days=800)  # past every retention: pruned
    apply_retention(engine, audit.signer, tenant_days={"acme": 30, "beta": 365}, now=later)
    assert kept() == []
    # beta's went with its redaction (whose entry the prune then took), gamma's with the prune.
    assert last("audit.pruned")["content_deleted"] == 1
    assert verify_live(engine, [tmp_path / "audit-signing.pub"]).valid
