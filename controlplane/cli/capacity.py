"""`sparkplane capacity [--json]` and `sparkplane capacity record REPORT`.

`capacity` prints the latest `sparkplane validate` report's curve (the same table as the
console's System page), for scripts. `capacity record` is what validate runs through the
installed release: it checks the report, then writes its sha256 (and its page's) into the audit
chain as a `validate.report` entry, so a report cannot be altered afterwards unnoticed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from controlplane.cli.options import ConfigOption, settings_or_exit

capacity_app = typer.Typer(
    help="The box's measured capacity (the latest `sparkplane validate` report).",
    invoke_without_command=True,
)


def _reports_dir(reports: Path | None, config: Path | None) -> Path:
    if reports is not None:
        return reports
    from controlplane.appliance.layout import Layout
    from controlplane.appliance.system_info import appliance_root

    root = appliance_root(settings_or_exit(config))
    if root is None:
        typer.echo("error: not an installed appliance: give --reports DIR", err=True)
        raise typer.Exit(2)
    return Layout.at(root).reports


@capacity_app.callback()
def capacity_command(
    ctx: typer.Context,
    config: ConfigOption = None,
    reports: Annotated[
        Path | None, typer.Option(help="reports directory [default: the appliance's]")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the rows as JSON")] = False,
) -> None:
    """Tokens per second through the control plane at each measured concurrency."""
    if ctx.invoked_subcommand is not None:
        return
    from controlplane.metering.capacity import CAPACITY_COLUMNS, capacity_table, latest_report

    report = latest_report(_reports_dir(reports, config))
    if report is None:
        typer.echo("error: no validate report yet: run `sparkplane validate`", err=True)
        raise typer.Exit(1)
    rows = capacity_table(report)
    if as_json:
        typer.echo(json.dumps({"report": report.path.name, "created": report.data.get("created"),
                               "peak_tok_s": report.peak_tok_s,
                               "rows": [dict(zip(CAPACITY_COLUMNS, row, strict=True))
                                        for row in rows]}, indent=2))  # fmt: skip
        return
    typer.echo(f"# {report.path.name} ({report.data.get('created')}, {report.data.get('profile')})")
    typer.echo("\t".join(CAPACITY_COLUMNS))
    for row in rows:
        typer.echo("\t".join(row))


@capacity_app.command("record")
def record_command(
    report: Annotated[Path, typer.Argument(help="a validate report (JSON)")],
    config: ConfigOption = None,
) -> None:
    """Record a validate report's sha256 in the audit chain (validate runs this)."""
    from controlplane.audit.bootstrap import audited_database
    from controlplane.metering.capacity import load_report, report_sha256
    from controlplane.tenancy.actions import cli_actor

    settings = settings_or_exit(config)
    try:
        loaded = load_report(report)
        html = loaded.html
        html_digest = report_sha256(html) if html is not None and html.is_file() else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    digest = report_sha256(report)

    async def record() -> int:
        async with audited_database(settings) as database:
            return await database.audit.record(
                "validate.report", actor=cli_actor(), report=report.name, sha256=digest,
                html_sha256=html_digest, passed=loaded.data.get("passed"),
                warnings=loaded.data.get("warnings"), peak_tok_s=loaded.peak_tok_s,
            )  # fmt: skip

    seq = asyncio.run(record())
    typer.echo(f"recorded sha256 {digest} of {report.name} as audit entry {seq}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `sparkplane` app."""
    app.add_typer(capacity_app, name="capacity")
