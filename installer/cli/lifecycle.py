"""`sparkplane upgrade | rollback | uninstall | status`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from controlplane.appliance.layout import Layout
from installer.bundle.trust import TrustError
from installer.cli.common import RootOpt, candidate_keys, console, fail, trust_after_verify
from installer.host.plan import PROFILES, PlanError
from installer.lifecycle.healthcheck import check_health
from installer.lifecycle.status import appliance_status
from installer.lifecycle.upgrade import rollback, uninstall, upgrade
from installer.provision.install import InstallError
from installer.provision.release_cli import manages_system


def upgrade_command(
    bundle: Annotated[Path, typer.Argument(help="The newer bundle directory.")],
    root: RootOpt = Path("/"),
    trust: Annotated[Path | None, typer.Option(help="Bundle-signing public key.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y")] = False,
    profile: Annotated[
        str | None,
        typer.Option(help=f"One of {', '.join(PROFILES)} [default: the running release's]."),
    ] = None,
    systemd: Annotated[
        bool | None,
        typer.Option(
            "--systemd/--no-systemd",
            help="Restart the units, then health-check through the control plane "
            "[default: as the running release was installed].",
        ),
    ] = None,
    health_timeout: Annotated[float, typer.Option(help="Seconds to wait for health.")] = 900.0,
) -> None:
    """Install BUNDLE beside the current release, switch, health-check, roll back on failure."""

    def healthy(layout: Layout) -> None:
        # On a managed box the playbook restarted the services: the new release must answer one
        # audited completion through its control plane (lifecycle/healthcheck.py). Elsewhere
        # nothing restarted them, so whatever runs is still the previous release.
        if manages_system(layout):
            check_health(layout, health_timeout)

    options = {} if systemd is None else {"allow_system_changes": systemd}
    try:
        result = upgrade(
            bundle,
            root,
            candidate_keys(root, trust),
            profile,
            health_check=healthy,
            console=console,
            after_verify=trust_after_verify(root, trust, yes),
            **options,
        )
    except InstallError as exc:
        fail(str(exc), exc.details, exc.artifacts)
    except (TrustError, PlanError) as exc:
        fail(str(exc))
    console.print(f"[green]upgraded[/] to {result.version}: changed={result.changed}")


def rollback_command(
    root: RootOpt = Path("/"),
    to: Annotated[str | None, typer.Option(help="Release version (default: the previous).")] = None,
) -> None:
    """Make the previous (or the given) kept release current again."""
    try:
        version = rollback(root, to, console=console)
    except InstallError as exc:
        fail(str(exc), exc.details, exc.artifacts)
    console.print(f"[green]rolled back[/] to {version}")


def uninstall_command(
    root: RootOpt = Path("/"),
    purge: Annotated[bool, typer.Option(help="Also delete data, audit trail and keys.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y")] = False,
) -> None:
    """Remove releases, models, config and units; data and audit stay unless --purge."""
    if purge and not yes:
        typer.confirm(f"Delete ALL Sparkplane data and audit records under {root}?", abort=True)
    try:
        removed = uninstall(root, purge=purge, console=console)
    except InstallError as exc:
        fail(str(exc), exc.details, exc.artifacts)
    for path in removed:
        console.print(f"removed {path}")
    if not purge:
        console.print(f"kept {Layout.at(root).var} (data, audit, backups) and the trust keys")


def status_command(
    root: RootOpt = Path("/"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Release, services, engine, model and health."""
    status = appliance_status(root)
    if as_json:
        typer.echo(json.dumps(status, indent=2, default=str))
        return
    table = Table("item", "value", show_header=False)
    table.add_row("current release", str(status["current"]))
    table.add_row("kept releases", ", ".join(status["releases"]) or "-")
    if status["half_installed"]:
        table.add_row("half-installed", ", ".join(status["half_installed"]))
    table.add_row("profile", str(status.get("profile", "-")))
    model = status.get("model") or {}
    table.add_row("model", f"{model.get('served_name')} ({model.get('path')})" if model else "-")
    for name in ("engine", "controlplane"):
        part = status.get(name) or {}
        health = part.get("health") or part.get("ready") or "-"
        table.add_row(name, f"{part.get('url', '-')}  {health}")
    for unit, state in status["services"].items():
        table.add_row(unit, state)
    table.add_row("last installer event", _event_line(status["last_event"]))
    console.print(table)
    if status["current"] is None:
        raise typer.Exit(1)


def _event_line(event: dict[str, Any] | None) -> str:
    """One line for an installer event: time, kind, phase and version (none: "-")."""
    if event is None:
        return "-"
    shown = [event.get("time"), event.get("kind"), event.get("phase"), event.get("version")]
    return " ".join(str(part) for part in shown if part)


def register(app: typer.Typer) -> None:
    app.command("upgrade")(upgrade_command)
    app.command("rollback")(rollback_command)
    app.command("uninstall")(uninstall_command)
    app.command("status")(status_command)
