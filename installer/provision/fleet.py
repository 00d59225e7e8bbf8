"""`sparkplane install --inventory FILE`: several appliances from one inventory in one run.

Ansible is the distributed engine (DESIGN.md §7): the same playbook runs on every host of the
inventory's `sparkplane` group, each with its own host vars (`sparkplane_root`, ports,
`ansible_connection`). The bundle is verified once, on the control node, before anything runs.

Every host reached with `ansible_connection=local` then ends up like a single-host `install`:
its own lock, its own lifecycle events (started, then succeeded or failed) in its events.jsonl,
its own `install-vars.json` (so that upgrade and rollback work on it), and after activation the
events imported into its audit chain and its first console admin (provision/activation.py).
Those steps run the host's installed CLI on the host's files, which the control node can do
only for a local host: for any other host the run says so and names the command that finishes
the job there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible.module_utils.parsing.convert_bool import boolean
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console
from rich.markup import escape

from controlplane.appliance.events import record_event
from controlplane.appliance.layout import Layout
from installer.host.facts import box_memory_bytes
from installer.provision.activation import Aftermath, after_activation
from installer.provision.apply import (
    BundleFacts,
    InstallError,
    local_inventory,
    playbook_vars,
    raise_for_run,
    save_release_vars,
)
from installer.provision.install import (
    DEFAULT_CONTROLPLANE_BIND,
    DEFAULT_CONTROLPLANE_PORT,
    DEFAULT_ENGINE_PORT,
    plan_or_refuse,
    verify_or_raise,
)
from installer.provision.lock import installer_lock
from installer.provision.runner import InventoryError, RunResult, inventory_hosts, run_playbook

GROUP = "sparkplane"


@dataclass(frozen=True)
class FleetHost:
    name: str
    vars: dict[str, Any]  # as ansible-inventory resolves them

    @property
    def local(self) -> bool:
        return self.vars.get("ansible_connection") == "local"

    @property
    def layout(self) -> Layout:
        return Layout.at(self.vars.get("sparkplane_root") or "/")

    def release_inventory(self) -> dict[str, Any]:
        """This host alone, as a single-host install saves it (playbook defaults filled in)."""
        defaults = local_inventory(
            self.layout.root,
            DEFAULT_ENGINE_PORT,
            DEFAULT_CONTROLPLANE_PORT,
            DEFAULT_CONTROLPLANE_BIND,
            False,
        )
        host = defaults[GROUP]["hosts"]["localhost"] | self.vars
        # INI inventories give strings; the playbook reads this with `| bool`, and so do we.
        allow = boolean(host["sparkplane_allow_system_changes"], strict=False)
        host["sparkplane_allow_system_changes"] = allow
        return {GROUP: {"hosts": {"localhost": host}}}

    def install_command(self, bundle: Path) -> str:
        """The single-host install that gives this host what the fleet run could not."""
        host = self.release_inventory()[GROUP]["hosts"]["localhost"]
        command = (
            f"sparkplane install {bundle} --root {self.layout.root} "
            f"--engine-port {host['sparkplane_engine_port']} "
            f"--port {host['sparkplane_controlplane_port']} "
            f"--bind {host['sparkplane_controlplane_bind']}"
        )
        return command + (" --systemd" if host["sparkplane_allow_system_changes"] else "")


@dataclass(frozen=True)
class FleetResult:
    version: str
    changed_by_host: dict[str, int]
    artifacts: Path
    aftermath_by_host: dict[str, Aftermath] = field(default_factory=dict)  # local hosts
    warnings: tuple[str, ...] = ()  # one per host the control node cannot finish


def fleet_hosts(inventory: Path, control: Layout, bundle: Path) -> list[FleetHost]:
    try:
        found = inventory_hosts(inventory, control.artifacts, bundle / "playbooks", GROUP)
    except InventoryError as exc:
        raise InstallError(str(exc)) from exc
    if not found:
        raise InstallError(f"inventory {inventory} has no host in group '{GROUP}'")
    return [FleetHost(name, host_vars) for name, host_vars in found.items()]


def remote_warning(host: FleetHost, bundle: Path) -> str:
    return (
        f"{host.name} is not a local-connection host: its installer events, their audit "
        "import and its first console admin need an install run on the host itself; run "
        f"there '{host.install_command(bundle)}' (idempotent: it changes nothing else)"
    )


def host_errors(result: RunResult, host: FleetHost, version: str) -> list[str]:
    """Why the run did not install `version` on `host`; empty when it did."""
    mine = [f"task '{f.task}': {f.message}" for f in result.failures if f.host == host.name]
    if mine:
        return mine
    if not result.succeeded and not result.failures:  # the run failed as a whole
        return [f"ansible-runner ended '{result.status}' (rc={result.rc})"]
    if host.layout.active_version() != version:
        return [f"current is {host.layout.active_version()}, not {version}"]
    return []


def install_inventory(
    bundle: Path,
    inventory: Path,
    control_root: Path,
    trusted_keys: Sequence[Ed25519PublicKey],
    profile: str = "demo",
    memory_bytes: int | None = None,
    console: Console | None = None,
) -> FleetResult:
    """Provision every host of `inventory`; artifacts are kept under `control_root`."""
    bundle, inventory = Path(bundle).absolute(), Path(inventory).absolute()
    if not inventory.is_file():
        raise InstallError(f"inventory {inventory} does not exist")
    manifest = verify_or_raise(bundle, trusted_keys, control_root)
    facts = BundleFacts.from_manifest(manifest)
    # Sparks of one site are alike: the plan is made once, for this box's memory.
    memory = memory_bytes if memory_bytes is not None else box_memory_bytes()
    plan = plan_or_refuse(bundle, facts, profile, memory)
    control = Layout.at(control_root)
    hosts = fleet_hosts(inventory, control, bundle)
    local = [host for host in hosts if host.local]
    warnings = tuple(remote_warning(host, bundle) for host in hosts if not host.local)
    extravars = playbook_vars(bundle, facts, plan, activate=True)
    event: dict[str, Any] = {"version": facts.version, "profile": profile}
    event["inventory"] = str(inventory)
    with ExitStack() as locks:
        for host in local:
            locks.enter_context(installer_lock(host.layout))
        for host in local:
            record_event(host.layout, "install", phase="started", **event)
        started = time.monotonic()
        result = run_playbook(
            bundle / "playbooks",
            control.artifacts,
            str(inventory),
            extravars,
            ident=f"fleet-{facts.version}-{time.strftime('%Y%m%dT%H%M%S')}",
            console=console,
        )
        event["seconds"] = round(time.monotonic() - started, 1)
        event["artifacts"] = str(result.artifact_dir)
        aftermaths = {}
        for host in local:
            errors = host_errors(result, host, facts.version)
            if errors:
                record_event(host.layout, "install", phase="failed", error=errors, **event)
                continue
            save_release_vars(
                host.layout.release(facts.version), host.release_inventory(), extravars
            )
            changed = result.changed_by_host.get(host.name, 0)
            record_event(host.layout, "install", phase="succeeded", changed=changed, **event)
            aftermaths[host.name] = finish_host(host, console)
    for warning in warnings:
        if console is not None:
            console.print(f"[yellow]warning:[/] {escape(warning)}")
    raise_for_run(result, f"install over {inventory.name}")
    return FleetResult(
        facts.version, result.changed_by_host, result.artifact_dir, aftermaths, warnings
    )


def finish_host(host: FleetHost, console: Console | None) -> Aftermath:
    """After activation, as for a single-host install: audit import and first admin."""
    if console is not None:
        console.print(f"[bold]{escape(host.name)}[/] ({host.layout.root}):")
    return after_activation(host.layout, create_admin=True, console=console)
