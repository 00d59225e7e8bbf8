"""`sparkplane validate [--root R] [--quick] [--json]`: the on-box acceptance test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from controlplane.appliance.layout import Layout
from installer.cli.common import RootOpt, console, errors, fail
from installer.lifecycle.validate import ValidateError, ValidateResult, run_validate, total_steps


def validate_command(
    root: RootOpt = Path("/"),
    quick: Annotated[
        bool, typer.Option("--quick", help="Fewer, shorter figures: under a minute on the demo.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check the appliance through the control plane and measure its capacity; write a report.

    Exit 0 when every functional check passed (figures below reference only warn), 1 otherwise.
    """
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    try:
        with Progress(*columns, console=errors, transient=True) as progress:  # stdout: --json
            task = progress.add_task("validating", total=total_steps(Layout.at(root), quick))

            def step(label: str) -> None:
                progress.update(task, advance=1, description=label)

            result = run_validate(root, quick=quick, step=step)
    except ValidateError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(result.report, indent=2))
    else:
        show(result)
    if not result.passed:
        raise typer.Exit(1)


def show(result: ValidateResult) -> None:
    checks = Table("check", "result", "detail", title="Functional checks")
    for check in result.report["checks"]:
        mark = "[green]pass[/]" if check["passed"] else "[red]FAIL[/]"
        checks.add_row(check["name"], mark, check["detail"])
    console.print(checks)
    figures = Table("figure", "value", "reference", "status", title="Figures")
    colour = {"pass": "green", "warn": "yellow", "info": "dim"}
    for figure in result.report["figures"]:
        reference = "-" if figure["reference"] is None else f"{figure['reference']:g}"
        status = f"[{colour[figure['status']]}]{figure['status']}[/]"
        figures.add_row(figure["name"], f"{figure['value']:g}", reference, status)
    console.print(figures)
    verdict = "[green]PASS[/]" if result.passed else "[red]FAIL[/]"
    console.print(f"{verdict} in {result.report.get('seconds')} s; report {result.json_path}")
    console.print(f"page {result.html_path}; sha256 {result.sha256} recorded in the audit chain")


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_command)
