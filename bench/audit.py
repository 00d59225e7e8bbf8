"""Audit benchmarks: durable SQLite write capacity, and offline verification of 1,000,000 entries.

    .venv/bin/python bench/audit.py --writes 20000 --callers 64 --verify-entries 1000000

Writes go through the real AuditWriter (group commit, PRAGMA synchronous=FULL: every commit is
fsynced) into a fresh SQLite file; each caller awaits its own durable commit. The verification
file is built with the exporter's own line and checkpoint code (chain.export_line,
CheckpointSigner, sign_header), one checkpoint per 1,000 entries, ~450 bytes per line; it is then
verified by `verify_export`, exactly what `sparkplane audit verify` runs. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from controlplane.audit import AuditWriter, install_guards
from controlplane.audit.chain import GENESIS_HASH, build_entry, canonical_json, export_line
from controlplane.audit.checkpoint import CheckpointSigner, load_or_create_key
from controlplane.audit.export import FORMAT, sign_header
from controlplane.audit.verify import verify_export
from controlplane.core.db import init_db, make_engine


def api_fields(n: int) -> dict[str, object]:
    """The fields of a typical completion entry (what the gateway records)."""
    return {
        "key_id": "k_7f3a", "model": "gemma-4-26b-a4b", "status": 200, "prompt_tokens": 512,
        "completion_tokens": 128, "queue_ms": 3.2, "ttft_ms": 180.5, "latency_ms": 4100.2,
        "client": "10.0.0.12", "request_id": f"req-{n:012d}",
    }  # fmt: skip


async def bench_writes(directory: Path, total: int, callers: int) -> dict[str, object]:
    engine = make_engine(f"sqlite:///{directory / 'bench.db'}")
    init_db(engine)
    install_guards(engine)
    audit = AuditWriter(engine, directory / "audit-signing.key")
    await audit.start()
    latencies: list[float] = []
    per_caller = total // callers

    async def caller(index: int) -> None:
        for i in range(per_caller):
            started = time.perf_counter()
            await audit.record("api.completion", tenant=f"t{index % 8}", **api_fields(i))
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    elapsed = time.perf_counter() - started
    await audit.close()
    engine.dispose()
    latencies.sort()
    return {
        "entries": per_caller * callers,
        "callers": callers,
        "seconds": round(elapsed, 3),
        "entries_per_second": round(per_caller * callers / elapsed),
        "latency_ms_p50": round(statistics.median(latencies) * 1000, 2),
        "latency_ms_p99": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }


def build_export(path: Path, key_path: Path, count: int) -> None:
    signer = CheckpointSigner("sparkplane/audit", load_or_create_key(key_path))
    moment, prev = datetime.now(UTC), GENESIS_HASH
    header = {"format": FORMAT, "origin": signer.origin, "key_id": signer.key_id.hex(),
              "first_seq": 1, "last_seq": count, "prev_hash": prev.hex()}  # fmt: skip
    with path.open("wb", buffering=1 << 20) as handle:
        handle.write(sign_header(signer, header))
        for seq in range(1, count + 1):
            entry = build_entry(prev, seq, "api.completion", "acme",
                                canonical_json(api_fields(seq)), moment)  # fmt: skip
            prev = entry.hash
            handle.write(export_line(entry.hash, entry.envelope, entry.data))
            if seq % 1000 == 0 or seq == count:
                note = signer.sign(seq, prev, moment)
                handle.write(canonical_json({"checkpoint": note}) + b"\n")


def bench_verify(directory: Path, count: int) -> dict[str, object]:
    path = directory / "export.jsonl"
    build_export(path, directory / "verify.key", count)
    wall, cpu = time.perf_counter(), time.process_time()
    report = verify_export(path, [directory / "verify.pub"])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert report.valid and report.entries_valid == count, report.as_dict()
    return {
        "entries": count,
        "file_mb": round(path.stat().st_size / 1e6),
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "checkpoints_valid": report.checkpoints_valid,
        "load_average": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=20_000)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--verify-entries", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sparkplane-audit-bench-") as tmp:
        results = {
            "writes_sqlite": asyncio.run(bench_writes(Path(tmp), args.writes, args.callers)),
            "verify": bench_verify(Path(tmp), args.verify_entries),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
