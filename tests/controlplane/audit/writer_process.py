"""A real process that writes audit entries as fast as it can and prints each acknowledged seq.

Used by the kill -9 and multi-writer tests: `python -m tests.controlplane.audit.writer_process
DATABASE_URL KEY_PATH COUNT [SCHEMA]` (COUNT 0 = until killed).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import controlplane.audit.models  # noqa: F401
from controlplane.audit import AuditWriter
from controlplane.core.db import make_engine


async def main(url: str, key_path: Path, count: int, schema: str | None) -> None:
    options = {"connect_args": {"options": f"-csearch_path={schema}"}} if schema else {}
    engine = make_engine(url, **options)
    audit = AuditWriter(engine, key_path, checkpoint_every=50)
    await audit.start()
    written = 0

    async def one(n: int) -> None:
        seq = await audit.record("api.request", tenant="load", n=n, pid=__import__("os").getpid())
        sys.stdout.write(f"{seq}\n")
        sys.stdout.flush()

    while count == 0 or written < count:
        batch = 50 if count == 0 else min(50, count - written)
        await asyncio.gather(*(one(written + i) for i in range(batch)))
        written += batch
    await audit.close()
    engine.dispose()


if __name__ == "__main__":
    schema_arg = sys.argv[4] if len(sys.argv) > 4 else None
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), schema_arg))
