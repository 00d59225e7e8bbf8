"""`sparkplane usage [--tenant T] [--by key|model] [--days N] [--json]`.

Reads the usage ledger of the server's database (same settings as `sparkplane serve`): requests
and tokens per tenant and key or model over the last N UTC days (today included), estimated
counts (cancelled streams without a usage report) on rows of their own.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated

import typer

from controlplane.cli.options import ConfigOption, settings_or_exit
from controlplane.metering.usage_report import GroupBy, UsageGroup


def register(app: typer.Typer) -> None:
    """Add this module's command to the `sparkplane` app."""
    app.command("usage")(usage_command)


def usage_command(
    tenant: Annotated[str | None, typer.Option("--tenant", help="only this tenant")] = None,
    by: Annotated[GroupBy, typer.Option("--by", help="group by key, model or day")] = GroupBy.KEY,
    days: Annotated[
        int, typer.Option("--days", min=1, max=3660, help="UTC days back, today included")
    ] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON list instead of a table")] = (
        False
    ),
    config: ConfigOption = None,
) -> None:
    """Requests and tokens per tenant and key (or model, or day)."""
    from controlplane.core.db import init_db, make_engine, session_factory, utcnow
    from controlplane.metering.usage_report import usage_groups
    from controlplane.tenancy import store

    settings = settings_or_exit(config)
    engine = make_engine(settings.database_url)
    try:
        init_db(engine)
        with session_factory(engine)() as session:
            if tenant is not None:
                try:
                    store.get_tenant(session, tenant)
                except store.ServiceError as exc:
                    typer.echo(f"error: {exc.message}", err=True)
                    raise typer.Exit(1) from None
            end = utcnow().date()
            rows = usage_groups(session, by, end - timedelta(days=days - 1), end, tenant)
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps([row.as_json() for row in rows], indent=2))
        return
    header = ("tenant", by.value, "requests", "prompt", "completion", "total", "estimated")
    lines = [header] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


def _cells(row: UsageGroup) -> tuple[str, ...]:
    counts = (row.requests, row.prompt_tokens, row.completion_tokens, row.total_tokens)
    return (row.tenant, row.group, *map(str, counts), "yes" if row.estimated else "")
