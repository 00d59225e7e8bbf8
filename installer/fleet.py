"""`sparkplane install --inventory FILE`: several appliances from one inventory in one run.

Ansible is the distributed engine (DESIGN.md §7): the same playbook runs on every host of the
inventory's `sparkplane` group, each with its own host vars (`sparkplane_root`, ports,
`ansible_connection`). The bundle is verified once, on the control node, before anything runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console

from installer.apply import BundleFacts, InstallError, playbook_vars, raise_for_run
from installer.hostfacts import box_memory_bytes
from installer.install import plan_or_refuse, verify_or_raise
from installer.layout import Layout
from installer.runner import run_playbook


@dataclass(frozen=True)
class FleetResult:
    version: str
    changed_by_host: dict[str, int]
    artifacts: Path


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
    layout = Layout.at(control_root)
    result = run_playbook(
        bundle / "playbooks",
        layout.artifacts,
        str(inventory),
        playbook_vars(bundle, facts, plan, activate=True),
        ident=f"fleet-{facts.version}-{time.strftime('%Y%m%dT%H%M%S')}",
        console=console,
    )
    raise_for_run(result, f"install over {inventory.name}")
    return FleetResult(facts.version, result.changed_by_host, result.artifact_dir)
