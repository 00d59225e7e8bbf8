"""Audit benchmarks: durable SQLite write capacity, and offline verification of 1,000,000 entries.

    .venv/bin/python -m bench.audit --writes 20000 --callers 64 --verify-entries 1000000 \\
        [--beside-gateway 15]

Writes go through the real AuditWriter (group commit, PRAGMA synchronous=FULL: every commit is
fsynced) into a fresh SQLite file; each caller awaits its own durable commit. The verification
file is built with the exporter's own line and checkpoint code (chain.export_line,
CheckpointSigner, sign_header), one checkpoint per 1,000 entries, ~450 bytes per line; it is then
verified by `verify_export` (what `sparkplane audit verify` runs) twice: forced serial, and
with one worker process per CPU (for files over 32 MB the shipped verifier does that when the
CPUs are not already busy). Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from sqlalchemy import Engine

from bench import gateways, loadgen
from controlplane.audit import AuditWriter, install_guards, parallel
from controlplane.audit.chain import GENESIS_HASH, build_entry, canonical_json, export_line
from controlplane.audit.checkpoint import CheckpointSigner, load_or_create_key
from controlplane.audit.export import FORMAT, sign_header
from controlplane.audit.verify import verify_export, verify_live
from controlplane.core.db import init_db, make_engine


def api_fields(n: int) -> dict[str, object]:
    """The fields of a typical completion entry (what the gateway records)."""
    return {
        "key_id": "k_7f3a", "model": "gemma-4-26b-a4b", "status": 200, "prompt_tokens": 512,
        "completion_tokens": 128, "queue_ms": 3.2, "ttft_ms": 180.5, "latency_ms": 4100.2,
        "client": "10.0.0.12", "request_id": f"req-{n:012d}",
    }  # fmt: skip


async def write_load(
    engine: Engine, key: Path, callers: int, *, total: int = 0, seconds: float = 0.0
) -> dict[str, object]:
    """`callers` tasks each await one durable record after another: `total` entries in all, or
    for `seconds`."""
    audit = AuditWriter(engine, key)
    await audit.start()
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def caller(index: int) -> None:
        done = 0
        while (done < total // callers) if total else (time.perf_counter() < stop_at):
            started = time.perf_counter()
            await audit.record("api.completion", tenant=f"t{index % 8}", **api_fields(done))
            latencies.append(time.perf_counter() - started)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    elapsed = time.perf_counter() - started
    await audit.close()
    latencies.sort()
    return {
        "entries": len(latencies),
        "callers": callers,
        "seconds": round(elapsed, 3),
        "entries_per_second": round(len(latencies) / elapsed),
        "latency_ms_p50": round(statistics.median(latencies) * 1000, 2),
        "latency_ms_p99": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }


async def bench_writes(directory: Path, total: int, callers: int) -> dict[str, object]:
    engine = make_engine(f"sqlite:///{directory / 'bench.db'}")
    init_db(engine)
    install_guards(engine)
    try:
        return await write_load(engine, directory / "audit-signing.key", callers, total=total)
    finally:
        engine.dispose()


async def bench_writes_beside_gateway(directory: Path, callers: int, seconds: float) -> dict:
    """The same load into the live gateway's own database while it serves streaming chat
    (32 clients through `sparkplane serve`, each call writing its own two entries)."""
    data_dir = directory / "gateway"
    upstream = gateways.start_upstream(tokens_per_s=200.0)
    procs = [upstream]
    try:
        env = gateways.sparkplane_env(data_dir, upstream.url, capacity=64)
        key = gateways.create_tenant_key(env, "bench")
        procs.append(gateway := gateways.start_sparkplane(env))
        engine = make_engine(f"sqlite:///{data_dir / 'sparkplane.db'}")
        target = loadgen.Target("sparkplane", gateway.url, {"Authorization": f"Bearer {key}"})
        body = {"model": "bench-model", "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 20, "stream": True}  # fmt: skip
        async with aiohttp.ClientSession() as session:
            served, written = await asyncio.gather(
                loadgen.closed_loop(session, target, body, 32, seconds),
                write_load(engine, data_dir / "audit-signing.key", callers, seconds=seconds),
            )
    finally:
        for proc in reversed(procs):
            proc.stop()
    report = verify_live(engine, [data_dir / "audit-signing.pub"])
    engine.dispose()
    assert report.valid, report.as_dict()
    return {
        "gateway_requests_per_second": round(served.throughput(), 1),
        "gateway_failed": dict(served.errors),
        "bench_writer": written,
        "chain_entries_verified": report.entries_valid,
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


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the parallel verifier's workers)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bench_verify(directory: Path, count: int) -> dict[str, object]:
    path = directory / "export.jsonl"
    build_export(path, directory / "verify.key", count)
    results: dict[str, object] = {"entries": count, "file_mb": round(path.stat().st_size / 1e6)}
    for mode, threshold in (("serial", 1 << 62), ("parallel", parallel.MIN_PARALLEL_BYTES)):
        parallel.MIN_PARALLEL_BYTES = threshold
        parallel._spare_cpus = lambda: os.cpu_count() or 1
        wall, cpu = time.perf_counter(), cpu_seconds()
        report = verify_export(path, [directory / "verify.pub"])
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
        assert report.valid and report.entries_valid == count, report.as_dict()
        results[mode] = {"wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
                         "checkpoints_valid": report.checkpoints_valid}  # fmt: skip
    results["load_average"] = round(os.getloadavg()[0], 2)
    results["cpus"] = os.cpu_count()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=20_000)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--verify-entries", type=int, default=1_000_000)
    parser.add_argument("--beside-gateway", type=float, default=0.0, metavar="SECONDS",
                        help="also measure writes while `sparkplane serve` serves")  # fmt: skip
    args = parser.parse_args()
    results: dict[str, object] = {"load_average_at_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="sparkplane-audit-bench-") as tmp:
        results["writes_sqlite"] = asyncio.run(bench_writes(Path(tmp), args.writes, args.callers))
        if args.beside_gateway:
            results["writes_beside_gateway"] = asyncio.run(
                bench_writes_beside_gateway(Path(tmp), args.callers, args.beside_gateway)
            )
        if args.verify_entries:
            results["verify"] = bench_verify(Path(tmp), args.verify_entries)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
