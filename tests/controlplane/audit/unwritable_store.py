"""Run inside a private mount namespace (`unshare -m`): makes the SQLite store really unwritable.

`disk-full`: the DB lives on a 1 MiB tmpfs; a filler file takes the free space, then is removed.
`read-only`: the DB directory is bind-mounted read-only, then remounted read-write.
`disk-full-kept`: as `disk-full`, with entries whose callers do not wait (queued audit).
Prints one JSON object with what the writer did at each stage.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import Engine

from controlplane.audit import AuditUnavailable, AuditWriter
from controlplane.audit.verify import verify_live
from tests.controlplane.audit.conftest import sqlite_store


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


async def attempt(audit: AuditWriter) -> str:
    try:
        return f"ok {await audit.record('api.request', tenant='t', payload='x' * 200)}"
    except AuditUnavailable as exc:
        return f"unavailable: {exc}"


async def wait_healthy(audit: AuditWriter, seconds: float = 10.0) -> float:
    start = time.monotonic()
    while not audit.healthy and time.monotonic() - start < seconds:
        await asyncio.sleep(0.05)
    return round(time.monotonic() - start, 2)


async def writer_on_tiny_tmpfs(root: Path) -> tuple[Engine, AuditWriter, Path]:
    """(engine, started writer, filler path) with the SQLite store on a 1 MiB tmpfs."""
    store = root / "store"
    store.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(store))
    engine = sqlite_store(store)
    audit = AuditWriter(engine, root / "audit-signing.key")
    await audit.start()
    return engine, audit, store / "filler"


def fill(path: Path) -> None:
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=4k"], capture_output=True)


async def disk_full(root: Path) -> dict[str, object]:
    engine, audit, filler = await writer_on_tiny_tmpfs(root)
    result: dict[str, object] = {"before": await attempt(audit)}
    fill(filler)
    outcomes = [await attempt(audit) for _ in range(50)]  # until a page must be allocated
    result["full"] = next((o for o in outcomes if o.startswith("unavailable")), "never failed")
    result["healthy_when_full"] = audit.healthy
    result["last_error"] = audit.last_error
    filler.unlink()
    result["recovered_after_s"] = await wait_healthy(audit)
    result["after"] = await attempt(audit)
    await audit.close()
    result["verify"] = verify_live(engine, [root / "audit-signing.pub"]).as_dict()
    return result


async def disk_full_kept(root: Path) -> dict[str, object]:
    """Kept entries enqueued until the disk is full (and some while it is) must all land, in
    order, once space is back."""
    engine, audit, filler = await writer_on_tiny_tmpfs(root)
    fill(filler)
    futures = []
    for n in range(200):  # until a page must be allocated and a commit fails
        futures.append(audit.enqueue("api.completion", keep=True, tenant="t", n=n, pad="x" * 200))
        await asyncio.sleep(0.002)
        if not audit.healthy:
            break
    result: dict[str, object] = {"failed_at": len(futures), "last_error": audit.last_error}
    try:
        await audit.record("api.request", tenant="t", n=-1)
        result["waiting_caller"] = "ok"
    except AuditUnavailable as exc:
        result["waiting_caller"] = f"unavailable: {exc}"
    futures += [audit.enqueue("api.completion", keep=True, n=n) for n in range(len(futures), 210)]
    await asyncio.sleep(1.2)  # two probe intervals with the disk still full
    result["pending_while_full"] = sum(not f.done() for f in futures)
    filler.unlink()
    result["recovered_after_s"] = await wait_healthy(audit)
    result["seqs"] = list(await asyncio.gather(*futures))
    await audit.close()
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT data FROM audit_entries ORDER BY seq").all()
    result["ns"] = [json.loads(row[0])["n"] for row in rows]
    result["verify"] = verify_live(engine, [root / "audit-signing.pub"]).as_dict()
    return result


async def read_only(root: Path) -> dict[str, object]:
    real, view = root / "real", root / "view"
    real.mkdir()
    view.mkdir()
    sqlite_store(real).dispose()  # tables exist; the store is then only reachable read-only
    sh("mount", "--bind", str(real), str(view))
    sh("mount", "-o", "remount,bind,ro", str(view))
    from controlplane.core.db import make_engine

    engine = make_engine(f"sqlite:///{view / 'audit.db'}")
    audit = AuditWriter(engine, root / "audit-signing.key")
    await audit.start()
    result: dict[str, object] = {"healthy_at_start": audit.healthy, "last_error": audit.last_error}
    result["read_only"] = await attempt(audit)
    sh("mount", "-o", "remount,bind,rw", str(view))
    result["recovered_after_s"] = await wait_healthy(audit)
    result["after"] = await attempt(audit)
    await audit.close()
    result["verify"] = verify_live(engine, [root / "audit-signing.pub"]).as_dict()
    return result


if __name__ == "__main__":
    scenario, directory = sys.argv[1], Path(sys.argv[2])
    scenarios = {"disk-full": disk_full, "disk-full-kept": disk_full_kept, "read-only": read_only}
    run = scenarios[scenario]
    print(json.dumps(asyncio.run(run(directory))))
