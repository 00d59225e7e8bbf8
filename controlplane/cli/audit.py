"""`sparkplane audit export|verify|checkpoint|prune|import-installer-events`.

`verify FILE --pubkey PUB` touches no database and no network (the auditor's laptop); the other
commands read the server's settings (`--config` plus `SPARKPLANE_*`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from sqlalchemy.exc import SQLAlchemyError

from controlplane.cli.options import ConfigOption, settings_or_exit

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from controlplane.audit.writer import AuditWriter
    from controlplane.core.config import Settings

DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", help="overrides SPARKPLANE_DATABASE_URL")
]

audit_app = typer.Typer(
    help="Export, verify, checkpoint and prune the audit trail.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `sparkplane` app."""
    app.add_typer(audit_app, name="audit")


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _settings(config: Path | None, database_url: str | None) -> Settings:
    return settings_or_exit(config, **({"database_url": database_url} if database_url else {}))


def _engine(settings: Settings) -> Engine:
    from controlplane.audit.bootstrap import prepare_database
    from controlplane.core.db import make_engine

    engine = make_engine(settings.database_url)
    try:
        prepare_database(settings, engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        problem = getattr(exc, "orig", None) or exc
        raise _fail(f"cannot open the database {engine.url!r}: {problem}", 1) from None
    return engine


@asynccontextmanager
async def database_and_writer(settings: Settings) -> AsyncIterator[tuple[Engine, AuditWriter]]:
    """The database and its started audit writer, for the CLI (a bad database exits 1)."""
    from controlplane.audit.bootstrap import audit_writer

    engine = _engine(settings)
    try:
        async with audit_writer(engine, settings) as writer:
            yield engine, writer
    finally:
        engine.dispose()


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(f"{option} {value!r} is not an ISO date/time like 2026-01-31T00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _run(make: Callable[[], Any]) -> Any:
    from controlplane.audit.errors import AuditUnavailable

    try:
        return asyncio.run(make())
    except AuditUnavailable as exc:
        raise _fail(f"audit store unavailable: {exc}", 1) from None
    except ValueError as exc:
        raise _fail(str(exc)) from None


@audit_app.command("export")
def export_command(
    reason: Annotated[str, typer.Option("--reason", help="why the records are downloaded")],
    out: Annotated[Path, typer.Option("--out", help="export file to write (JSONL)")],
    start: Annotated[str | None, typer.Option("--from", help="first time, ISO 8601")] = None,
    end: Annotated[str | None, typer.Option("--to", help="last time, ISO 8601")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="only this tenant's data")] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="who exports")] = None,
    content: Annotated[
        bool, typer.Option("--content", help="decrypt captured content into the export")
    ] = False,
    config: ConfigOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Export entries, their checkpoints and the public key; the export itself is audited."""
    from controlplane.audit.captured import ContentStore
    from controlplane.audit.content import MASTER_KEY_FILE, ContentVault
    from controlplane.audit.export import export_audit
    from controlplane.tenancy.actions import cli_actor

    settings = _settings(config, database_url)
    first, last = _time(start, "--from"), _time(end, "--to")

    async def run() -> Any:
        async with database_and_writer(settings) as (engine, writer):
            store = None
            if content:
                vault = ContentVault(engine, settings.data_dir / MASTER_KEY_FILE)
                store = ContentStore(engine, vault)
            return await export_audit(engine, writer, out, reason=reason, start=first, end=last,
                                      tenant=tenant, actor=actor or cli_actor(),
                                      content=store)  # fmt: skip

    result = _run(run)
    typer.echo(
        f"wrote {result.path}: entries {result.first_seq}..{result.last_seq} "
        f"({result.disclosed} with data, {result.withheld} withheld"
        + (f", {result.content} with captured content" if content else "")
        + "); "
        f"export recorded as entry {result.export_seq}"
    )


@audit_app.command("verify")
def verify_command(
    file: Annotated[Path | None, typer.Argument(help="export file (omit with --live)")] = None,
    pubkey: Annotated[list[Path] | None, typer.Option("--pubkey", help="trusted key (PEM)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable report")] = False,
    live: Annotated[bool, typer.Option("--live", help="verify the appliance database")] = False,
    config: ConfigOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Check hashes, order, checkpoint signatures and coverage. Exit 0 valid, 1 invalid."""
    from controlplane.audit.verify import format_report, verify_export, verify_live
    from controlplane.core.signing import SigningKeyError

    try:
        if live:
            settings = _settings(config, database_url)
            keys = pubkey or sorted(settings.data_dir.glob("audit-signing*.pub"))
            from controlplane.core.db import make_engine

            engine = make_engine(settings.database_url)  # read only: no table creation
            try:
                report = verify_live(engine, keys)
            except SQLAlchemyError as exc:
                problem = getattr(exc, "orig", None) or exc
                raise _fail(f"cannot read the audit tables: {problem}", 1) from None
            finally:
                engine.dispose()
        elif file is None or not pubkey:
            raise _fail("give an export FILE and --pubkey PUB (or --live)")
        elif not file.is_file():
            raise _fail(f"export file not found: {file}")
        else:
            report = verify_export(file, pubkey)
    except SigningKeyError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        typer.echo(format_report(report))
    raise typer.Exit(0 if report.valid else 1)


@audit_app.command("checkpoint")
def checkpoint_command(config: ConfigOption = None, database_url: DatabaseOption = None) -> None:
    """Sign a checkpoint over the current head now."""
    settings = _settings(config, database_url)

    async def run() -> int:
        async with database_and_writer(settings) as (_, writer):
            return int(await writer.checkpoint_now())

    typer.echo(f"checkpoint at entry {_run(run)}")


@audit_app.command("rotate-key")
def rotate_key_command(config: ConfigOption = None, database_url: DatabaseOption = None) -> None:
    """Switch to a new signing key; the chain records it (a running server follows the file)."""
    settings = _settings(config, database_url)

    async def run() -> str:
        async with database_and_writer(settings) as (_, writer):
            return str(await writer.rotate_key())

    new_id = _run(run)
    public = settings.data_dir / "audit-signing.pub"
    typer.echo(f"new audit key {new_id}; public key {public} (give auditors the new one too)")


@audit_app.command("prune")
def prune_command(
    older_than_days: Annotated[
        int | None,
        typer.Option(help="days for entries of no tenant [default: AUDIT_RETENTION_DAYS]"),
    ] = None,
    tenant_days: Annotated[
        list[str] | None,
        typer.Option("--tenant-days", help="NAME=DAYS, instead of that tenant's own retention"),
    ] = None,
    reason: Annotated[str, typer.Option(help="recorded with the prune")] = "retention policy",
    config: ConfigOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Apply retention now, as the scheduled job does: each tenant's own retention_days, the
    settings' default for the rest. Deletes what every policy lets go (a signed checkpoint
    stays at the cut) and redacts the data of tenants that keep less."""
    from controlplane.audit.bootstrap import AUDIT_KEY_FILE
    from controlplane.audit.checkpoint import SigningKeyFile
    from controlplane.audit.retention import apply_retention, parse_tenant_days
    from controlplane.core.db import session_factory
    from controlplane.tenancy.store import retention_policies

    try:
        overrides = parse_tenant_days(tenant_days or [])
    except ValueError as exc:
        raise _fail(str(exc)) from None
    settings = _settings(config, database_url)
    default_days = settings.audit_retention_days if older_than_days is None else older_than_days
    engine = _engine(settings)
    signer = SigningKeyFile(settings.data_dir / AUDIT_KEY_FILE, "sparkplane/audit").signer()
    try:
        with session_factory(engine)() as session:
            policies = retention_policies(session) | overrides
        result = apply_retention(engine, signer, default_days=default_days,
                                 tenant_days=policies, reason=reason)  # fmt: skip
    except ValueError as exc:
        raise _fail(str(exc)) from None
    finally:
        engine.dispose()
    applied = ", ".join(f"{name} {days}" for name, days in sorted(policies.items()))
    typer.echo(f"retention in days: default {default_days}" + (f"; {applied}" if applied else ""))
    typer.echo(f"pruned {result.deleted} entries (cut at {result.cut}); redacted {result.redacted}")


@audit_app.command("import-installer-events")
def import_installer_events_command(
    file: Annotated[Path, typer.Argument(help="JSONL written by the installer")],
    config: ConfigOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Record installer lifecycle events (install, upgrade, rollback) in the chain, once each."""
    from controlplane.audit.installer_events import import_events

    if not file.is_file():
        raise _fail(f"events file not found: {file}")
    settings = _settings(config, database_url)

    async def run() -> Any:
        async with database_and_writer(settings) as (engine, writer):
            return await import_events(engine, writer, file)

    result = _run(run)
    typer.echo(f"imported {result.imported} installer events ({result.skipped} already present)")
