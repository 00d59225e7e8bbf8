"""What follows every successful move of `current` (install, upgrade, rollback).

1. The new current release's plan.json / preflight.json are published for the console.
2. The installer's lifecycle events are imported into the audit chain by the release's own CLI
   (idempotent: each line once, so re-runs and retries never duplicate an entry).
3. On install only: the first console admin, when none exists yet, with a one-time password
   stored 0600 and shown once.

Steps 2 and 3 never undo a good install: if the release's CLI fails, the command says so and
what to run; the events stay in events.jsonl and the next run imports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape

from controlplane.appliance.layout import Layout
from installer.provision.release_cli import (
    FirstAdmin,
    ReleaseCliError,
    create_first_admin,
    import_lifecycle_events,
)
from installer.provision.state_files import publish_release_state
from installer.provision.system_tenant import ensure_system_tenant


@dataclass
class Aftermath:
    audit_imported: int | None = None  # None when the import did not happen
    first_admin: FirstAdmin | None = None
    warnings: list[str] = field(default_factory=list)


def import_events_or_warn(layout: Layout, aftermath: Aftermath) -> None:
    try:
        aftermath.audit_imported, _ = import_lifecycle_events(layout)
    except ReleaseCliError as exc:
        aftermath.warnings.append(
            f"installer events are not in the audit chain yet (they stay in {layout.events}; "
            f"the next install/upgrade/rollback imports them): {exc}"
        )


def after_activation(
    layout: Layout, *, create_admin: bool, console: Console | None = None
) -> Aftermath:
    aftermath = Aftermath()
    publish_release_state(layout)
    import_events_or_warn(layout, aftermath)
    if create_admin:
        try:
            aftermath.first_admin = create_first_admin(layout)
        except ReleaseCliError as exc:
            aftermath.warnings.append(
                f"the first console admin was not created: {exc}; create it with "
                f"'{layout.current}/controlplane-venv/bin/sparkplane admins create admin "
                f"--role admin --config {layout.controlplane_env}'"
            )
    try:
        ensure_system_tenant(layout)  # validate and the upgrade health check call as it
    except ReleaseCliError as exc:
        aftermath.warnings.append(
            f"the system tenant was not created: {exc}; `sparkplane validate` makes it"
        )
    if console is not None:
        show(aftermath, console)
    return aftermath


def show(aftermath: Aftermath, console: Console) -> None:
    if aftermath.audit_imported is not None:
        console.print(f"audit: {aftermath.audit_imported} installer event(s) added to the chain")
    admin = aftermath.first_admin
    if admin is not None:
        # Shown this once; afterwards only the 0600 file has it (and it must be changed).
        console.print(
            f"[bold]first console admin[/] '{admin.username}', one-time password: "
            f"[bold]{escape(admin.password)}[/]\n"
            f"  stored in {admin.stored_at} (mode 0600); it must be changed at the first sign-in"
        )
    for warning in aftermath.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
