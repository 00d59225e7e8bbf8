"""`sparkplane install --inventory FILE`: several appliances from one inventory in one run.

Ansible is the distributed engine (DESIGN.md §7). The bundle is verified once, on the control
node, before anything runs; then `playbooks/fleet.yml` runs on every host of the inventory's
`sparkplane` group, local or over SSH, in parallel: it lays out the release's control-plane
venv (which carries this installer), stores the keys that verified the bundle in the host's
trust directory, keeps the host's inventory settings in a vars file, and runs the single-host
`sparkplane install` on the host itself. Each host therefore ends up exactly like a single-host
install: its own verification against its own copy of the media, preflight, plan for its own
memory, lock, lifecycle events, release state, audit import and first console admin. The control
node shows each host's own output (the first admin's one-time password among it).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible.module_utils.parsing.convert_bool import boolean
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console
from rich.markup import escape

from controlplane.appliance.layout import Layout
from controlplane.core import signing
from installer.bundle.manifest import Manifest
from installer.bundle.trust import key_file_name
from installer.provision.apply import (
    BundleFacts,
    InstallError,
    inventory_site_vars,
    site_vars_in,
)
from installer.provision.install import (
    DEFAULT_CONTROLPLANE_BIND,
    DEFAULT_CONTROLPLANE_PORT,
    DEFAULT_ENGINE_PORT,
    verify_or_raise,
)
from installer.provision.runner import InventoryError, RunResult, inventory_hosts, run_playbook

GROUP = "sparkplane"
PLAYBOOK = "fleet.yml"
INSTALL_TASK = "Run the single-host install on the host"
CHANGED = re.compile(r": changed=(\d+);")


@dataclass(frozen=True)
class HostOutcome:
    """What a host's own install said; `error` is None when it installed the version."""

    output: str
    changed: int
    error: str | None = None


@dataclass(frozen=True)
class FleetResult:
    version: str
    artifacts: Path
    hosts: dict[str, HostOutcome] = field(default_factory=dict)

    @property
    def changed_by_host(self) -> dict[str, int]:
        return {name: host.changed for name, host in self.hosts.items() if host.error is None}


def fleet_hosts(inventory: Path, control: Layout, bundle: Path) -> dict[str, dict[str, Any]]:
    try:
        found = inventory_hosts(inventory, control.artifacts, bundle / "playbooks", GROUP)
    except InventoryError as exc:
        raise InstallError(str(exc)) from exc
    if not found:
        raise InstallError(f"inventory {inventory} has no host in group '{GROUP}'")
    return found


def host_settings(host: dict[str, Any]) -> dict[str, Any]:
    """A host's install options (the install defaults where the inventory is silent) and its
    site settings, as ansible-inventory resolved them."""
    return {
        "root": str(host.get("sparkplane_root") or "/"),
        "engine_port": int(host.get("sparkplane_engine_port") or DEFAULT_ENGINE_PORT),
        "port": int(host.get("sparkplane_controlplane_port") or DEFAULT_CONTROLPLANE_PORT),
        "bind": str(host.get("sparkplane_controlplane_bind") or DEFAULT_CONTROLPLANE_BIND),
        # INI inventories give strings; Ansible reads them with `| bool`, and so do we.
        "systemd": boolean(host.get("sparkplane_allow_system_changes", False), strict=False),
        "site_vars": site_vars_in(host),
    }


def trusted_key_files(keys: Sequence[Ed25519PublicKey]) -> list[dict[str, str]]:
    """The keys as a trust directory stores them (TrustStore.add: same names, PEM)."""
    return [{"name": key_file_name(k), "pem": signing.public_pem(k).decode()} for k in keys]


def host_outcome(result: RunResult, host: str) -> HostOutcome:
    """The host's own install output, or why the run did not get that far on the host."""
    ran = result.results.get(INSTALL_TASK, {}).get(host)
    if ran is None:
        mine = [f"task '{f.task}': {f.message}" for f in result.failures if f.host == host]
        reason = "; ".join(mine) or f"ansible-runner ended '{result.status}' (rc={result.rc})"
        return HostOutcome("", 0, reason)
    output = "\n".join(part for part in (ran.get("stdout"), ran.get("stderr")) if part)
    found = CHANGED.search(str(ran.get("stdout") or ""))
    if ran.get("rc") != 0 or found is None:
        lines = str(ran.get("stderr") or ran.get("stdout") or "").strip().splitlines()
        return HostOutcome(output, 0, lines[0] if lines else f"exit {ran.get('rc')}")
    return HostOutcome(output, int(found.group(1)))


def install_inventory(
    bundle: Path,
    inventory: Path,
    control_root: Path,
    trusted_keys: Sequence[Ed25519PublicKey],
    profile: str = "demo",
    console: Console | None = None,
    after_verify: Callable[[Manifest], None] | None = None,
) -> FleetResult:
    """Provision every host of `inventory`; artifacts are kept under `control_root`."""
    bundle, inventory = Path(bundle).absolute(), Path(inventory).absolute()
    if not inventory.is_file():
        raise InstallError(f"inventory {inventory} does not exist")
    manifest = verify_or_raise(bundle, trusted_keys, control_root)
    facts = BundleFacts.from_manifest(manifest)
    control = Layout.at(control_root)
    hosts = fleet_hosts(inventory, control, bundle)
    # The fleet play applies the inventory's variables itself, before each host's install
    # checks them: a guard such as sparkplane_manage_system must be refused here.
    inventory_site_vars(hosts, bundle / "playbooks")
    if after_verify is not None:
        after_verify(manifest)
    extravars = {
        "sparkplane_bundle_dir": str(bundle),
        "sparkplane_version": facts.version,
        "sparkplane_engine_profile": profile,
        "sparkplane_fleet_trusted_keys": trusted_key_files(trusted_keys),
        "sparkplane_fleet_hosts": {name: host_settings(v) for name, v in hosts.items()},
    }
    result = run_playbook(
        bundle / "playbooks",
        control.artifacts,
        str(inventory),
        extravars,
        ident=f"fleet-{facts.version}-{time.strftime('%Y%m%dT%H%M%S')}",
        console=console,
        playbook=PLAYBOOK,
    )
    outcomes = {name: host_outcome(result, name) for name in hosts}
    if console is not None:
        for name, outcome in outcomes.items():
            console.print(f"[bold]{escape(name)}[/]:")
            console.print(escape(outcome.output), highlight=False)
    failed = {name: outcome.error for name, outcome in outcomes.items() if outcome.error}
    if failed:
        raise InstallError(
            f"install over {inventory.name} failed on {len(failed)} of {len(hosts)} host(s)",
            [f"{name}: {error}" for name, error in failed.items()],
            result.artifact_dir,
        )
    return FleetResult(facts.version, result.artifact_dir, outcomes)
