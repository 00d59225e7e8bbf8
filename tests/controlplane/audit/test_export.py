"""Exports: the reason is audited, filters withhold data but keep the chain verifiable."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import orjson
import pytest
from sqlalchemy import select

from controlplane.audit.export import export_audit
from controlplane.audit.models import AuditEntry
from controlplane.audit.verify import verify_export


async def test_tenant_export_discloses_only_that_tenant(writer, sqlite_engine, tmp_path):
    for i in range(12):
        await writer.record("api.request", tenant=("acme", "beta", None)[i % 3], n=i)
    out = tmp_path / "acme.jsonl"
    result = await export_audit(sqlite_engine, writer, out, reason="DSAR 17", tenant="acme")
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    entries = [line for line in lines if "h" in line]
    disclosed = {
        e["e"]["tenant"] for e in entries if e["d"] is not None and e["e"]["kind"] != "audit.export"
    }
    assert disclosed == {"acme"} and result.withheld == 8
    assert out.stat().st_mode & 0o777 == 0o600
    report = verify_export(out, [tmp_path / "audit-signing.pub"])
    assert report.valid and report.entries_withheld == 8, report.as_dict()
    with sqlite_engine.connect() as conn:
        data = conn.execute(
            select(AuditEntry.data).where(AuditEntry.seq == result.export_seq)
        ).scalar()
    recorded = orjson.loads(data)
    assert recorded["reason"] == "DSAR 17" and recorded["tenant_filter"] == "acme"


async def test_time_window_export_starts_inside_the_chain(writer, sqlite_engine, tmp_path):
    await asyncio.gather(*(writer.record("api.request", n=i) for i in range(5)))
    await writer.checkpoint_now()
    await asyncio.sleep(0.05)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.05)
    await asyncio.gather(*(writer.record("api.request", n=i) for i in range(5)))
    out = tmp_path / "window.jsonl"
    result = await export_audit(sqlite_engine, writer, out, reason="incident 3", start=middle)
    assert result.first_seq == 6
    report = verify_export(out, [tmp_path / "audit-signing.pub"])
    assert report.valid and report.first_seq == 6, report.as_dict()


async def test_export_needs_a_reason_and_a_sane_window(writer, sqlite_engine, tmp_path):
    with pytest.raises(ValueError, match="reason"):
        await export_audit(sqlite_engine, writer, tmp_path / "x", reason="  ")
    later, earlier = datetime(2030, 1, 1, tzinfo=UTC), datetime(2020, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="after"):
        await export_audit(
            sqlite_engine, writer, tmp_path / "x", reason="r", start=later, end=earlier
        )
