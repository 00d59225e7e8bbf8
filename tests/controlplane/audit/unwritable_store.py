"""Run inside a private mount namespace (`unshare -m`): makes the SQLite store really unwritable.

`disk-full`: the DB lives on a 1 MiB tmpfs; a filler file takes the free space, then is removed.
`read-only`: the DB directory is bind-mounted read-only, then remounted read-write.
Prints one JSON object with what the writer did at each stage.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

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


async def disk_full(root: Path) -> dict[str, object]:
    store = root / "store"
    store.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(store))
    engine = sqlite_store(store)
    audit = AuditWriter(engine, root / "audit-signing.key")
    await audit.start()
    result: dict[str, object] = {"before": await attempt(audit)}
    filler = store / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
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
    run = {"disk-full": disk_full, "read-only": read_only}[scenario]
    print(json.dumps(asyncio.run(run(directory))))
