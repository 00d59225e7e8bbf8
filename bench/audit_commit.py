"""What a durable answer waits for: one plain call's audit commit, against a bare fdatasync.

    .venv/bin/python -m bench.audit_commit [--commits 600] [--gaps 0,0.005,0.01]

At each pacing (seconds of idle between commits: 0 = back to back, 0.005 = 200 calls/s) three
things are timed in a fresh SQLite store in a temporary directory under the current one (run it
from a directory on the disk the data dir lives on; /tmp may be a tmpfs, where fsync is free):

- `fdatasync`: a 4 KiB write and `os.fdatasync` of a file beside the database (the floor);
- `commit`: the writer's own store code for one group commit of a plain call's two entries
  (`store.append_and_checkpoint`, then COMMIT with `PRAGMA synchronous=FULL`), on this thread;
- `record`: the same two entries through the real `AuditWriter` from the event loop (what an
  answer with `SPARKPLANE_AUDIT_WAIT=durable` waits for: thread hand-offs included).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.audit import api_fields
from controlplane.audit import AuditWriter, install_guards, store
from controlplane.audit.chain import canonical_json
from controlplane.audit.checkpoint import CheckpointSigner, load_or_create_key
from controlplane.core.db import init_db, make_engine


def paced(run: Callable[[], object], gap: float, count: int) -> list[float]:
    took = []
    for _ in range(count):
        time.sleep(gap)
        start = time.perf_counter()
        run()
        took.append(time.perf_counter() - start)
    return took


async def paced_records(audit: AuditWriter, gap: float, count: int) -> list[float]:
    took = []
    for n in range(count):
        await asyncio.sleep(gap)
        start = time.perf_counter()
        request = audit.enqueue("api.request", urgent=False, tenant="acme", n=n)
        await audit.record("api.completion", tenant="acme", **api_fields(n))
        await request
        took.append(time.perf_counter() - start)
    return took


def measure(directory: Path, gaps: list[float], count: int) -> dict[float, dict[str, list]]:
    engine = make_engine(f"sqlite:///{directory / 'audit.db'}")
    init_db(engine)
    install_guards(engine)
    signer = CheckpointSigner("bench", load_or_create_key(directory / "bench.key"))
    conn = engine.connect()
    conn.exec_driver_sql("PRAGMA synchronous=FULL")  # as the writer's connection
    conn.commit()
    data = canonical_json(api_fields(0))
    fd = os.open(directory / "floor.bin", os.O_WRONLY | os.O_CREAT, 0o600)
    block = b"x" * 4096

    def fdatasync() -> None:
        os.pwrite(fd, block, 0)
        os.fdatasync(fd)

    def commit() -> None:
        items = [("api.request", "acme", data), ("api.completion", "acme", data)]
        store.append_and_checkpoint(conn, signer, items, every=1000, seconds=60, force=False)
        conn.commit()

    async def records(gap: float) -> list[float]:
        audit = AuditWriter(engine, directory / "writer.key")
        await audit.start()
        try:
            return await paced_records(audit, gap, count)
        finally:
            await audit.close()

    results: dict[float, dict[str, list]] = {}
    for gap in gaps:
        paced(commit, gap, 20)  # warm up
        results[gap] = {
            "fdatasync": paced(fdatasync, gap, count),
            "commit": paced(commit, gap, count),
            "record": asyncio.run(records(gap)),
        }
    os.close(fd)
    conn.close()
    engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=600, help="per pacing and kind")
    parser.add_argument("--gaps", default="0,0.005,0.01", help="idle seconds between commits")
    args = parser.parse_args()
    gaps = [float(gap) for gap in args.gaps.split(",")]
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="sparkplane-commit-", dir=Path.cwd()) as tmp:
        results = measure(Path(tmp), gaps, args.commits)
    print(f"\n# One plain call's audit commit vs fdatasync ({args.commits} each; load {load:.1f})")
    print("gap ms  fdatasync p50/p90 us   commit p50/p90 us   record p50/p90 us   record x fsync")
    for gap, kinds in results.items():
        p50 = {kind: statistics.median(took) * 1e6 for kind, took in kinds.items()}
        p90 = {kind: sorted(took)[int(len(took) * 0.9)] * 1e6 for kind, took in kinds.items()}
        cells = "".join(f"{p50[kind]:9.0f} /{p90[kind]:6.0f}    " for kind in kinds)
        print(f"{gap * 1000:6.1f}  {cells} {p50['record'] / p50['fdatasync']:8.1f}")


if __name__ == "__main__":
    main()
