"""`sparkplane backup --out FILE` (while serving) and `sparkplane restore FILE` (stopped)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from controlplane.cli.options import ConfigOption, settings_or_exit


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def backup_command(
    out: Annotated[Path, typer.Option("--out", help="the backup file to write (0600)")],
    config: ConfigOption = None,
) -> None:
    """Database (a consistent snapshot, while serving), pepper and audit keys in one file."""
    from controlplane.audit.errors import AuditUnavailable
    from controlplane.backup.archive import BackupError
    from controlplane.backup.make import make_backup
    from controlplane.backup.postgres import PostgresToolError
    from controlplane.cli.audit import database_and_writer
    from controlplane.tenancy.actions import cli_actor

    settings = settings_or_exit(config)
    target = out.resolve()
    if not target.parent.is_dir():
        raise _fail(f"directory {target.parent} does not exist", 2)

    async def run() -> Any:
        async with database_and_writer(settings) as (engine, writer):
            return await make_backup(engine, settings.data_dir, writer, target, cli_actor())

    try:
        result = asyncio.run(run())
    except (BackupError, PostgresToolError, AuditUnavailable, OSError) as exc:
        raise _fail(str(exc)) from None
    report = result.report
    typer.echo(f"wrote {result.path} ({result.database}; audit entries {report.first_seq}.."
               f"{report.last_seq}, recorded as entry {result.audit_seq})")  # fmt: skip
    if not report.valid:
        problems = f"{report.problems_total} problem(s), see `sparkplane audit verify --live`"
        raise _fail(f"the audit chain in this backup does not verify ({problems}): "
                    "restore will refuse it")  # fmt: skip


def restore_command(
    file: Annotated[Path, typer.Argument(help="a file written by `sparkplane backup`")],
    pubkey: Annotated[
        list[Path] | None, typer.Option("--pubkey", help="also trust this audit key (PEM)")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Restore onto a stopped appliance; refused (nothing changed) if the chain does not verify."""
    from controlplane.backup.archive import BackupError
    from controlplane.backup.postgres import PostgresToolError
    from controlplane.backup.restore import restore_backup
    from controlplane.cli.audit import database_and_writer
    from controlplane.core.db import make_engine
    from controlplane.tenancy.actions import cli_actor

    if not file.is_file():
        raise _fail(f"backup file not found: {file}", 2)
    settings = settings_or_exit(config)
    engine = make_engine(settings.database_url)
    try:
        result = restore_backup(engine, settings.data_dir, file, pubkey or [])
    except (BackupError, PostgresToolError, OSError) as exc:
        raise _fail(str(exc)) from None
    finally:
        engine.dispose()
    manifest, report = result.manifest, result.report

    async def record() -> None:
        async with database_and_writer(settings) as (_, writer):
            await writer.record("audit.restored", actor=cli_actor(), file=file.name,
                                backup_created=manifest.get("created"),
                                backup_seq=manifest.get("audit_backup_seq"))  # fmt: skip

    asyncio.run(record())
    typer.echo(f"restored {file} (made {manifest.get('created')}): audit entries "
               f"{report.first_seq}..{report.last_seq} verify"
               + (f"; previous files kept as *.before-restore-*: {len(result.set_aside)}"
                  if result.set_aside else ""))  # fmt: skip
    if not report.valid:
        raise _fail("the restored chain does not verify: see `sparkplane audit verify --live`")


def register(app: typer.Typer) -> None:
    """Add `backup` and `restore` to the `sparkplane` app."""
    app.command("backup")(backup_command)
    app.command("restore")(restore_command)
