"""Parallel verification gives exactly the serial verifier's report, and falls back on damage."""

from __future__ import annotations

import asyncio

import pytest

import controlplane.audit.parallel as parallel
from controlplane.audit.export import export_audit
from controlplane.audit.verify import verify_export


@pytest.fixture
def export(writer, sqlite_engine, tmp_path):
    async def build():
        for i in range(300):
            await writer.record("api.request", tenant=("a", "b")[i % 2], n=i)  # one per commit
        await export_audit(sqlite_engine, writer, tmp_path / "e.jsonl", reason="parallel")

    return build


def reports(path, pub, monkeypatch):
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 1 << 40)
    serial = verify_export(path, [pub]).as_dict()
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)
    return serial, verify_export(path, [pub]).as_dict()


async def test_parallel_and_serial_reports_agree(export, tmp_path, monkeypatch):
    await export()
    path, pub = tmp_path / "e.jsonl", tmp_path / "audit-signing.pub"
    monkeypatch.setattr(parallel, "_spare_cpus", lambda: 2)  # even on a busy test machine
    calls = []
    original = parallel._join
    monkeypatch.setattr(parallel, "_join", lambda *a: calls.append(1) or original(*a))
    serial, fast = await asyncio.to_thread(reports, path, pub, monkeypatch)
    assert calls and fast == serial and fast["valid"] and fast["checkpoints_valid"] > 20

    lines = path.read_bytes().splitlines(keepends=True)
    target = [i for i, line in enumerate(lines) if b'"n":' in line][200]  # deep inside a slice
    lines[target] = lines[target].replace(b'"n":', b'"n":1', 1)
    path.write_bytes(b"".join(lines))
    serial, fast = await asyncio.to_thread(reports, path, pub, monkeypatch)
    assert fast == serial and not fast["valid"]
    assert fast["problems"][0]["line"] == target + 1
