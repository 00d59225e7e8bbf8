"""What a playbook run is given (inventory, extra vars) and how its outcome is judged.

Shared by install, upgrade/rollback (installer/lifecycle/upgrade.py) and multi-host installs
(installer/provision/fleet.py), so that all of them drive the playbooks with the same variables.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from installer.bundle.manifest import Manifest
from installer.host.plan import EnginePlan
from installer.provision.runner import RunResult

RELEASE_VARS = "install-vars.json"
# Inventory variables that install's options set (a site-vars file must not contradict them).
OPTION_VARS = {
    "sparkplane_root": "--root",
    "sparkplane_engine_port": "--engine-port",
    "sparkplane_controlplane_port": "--port",
    "sparkplane_controlplane_bind": "--bind",
    "sparkplane_allow_system_changes": "--systemd",
}


class InstallError(RuntimeError):
    """The install did not happen or did not finish; `details` lists every reason."""

    def __init__(self, message: str, details: Sequence[str] = (), artifacts: Path | None = None):
        super().__init__(message)
        self.details = list(details)
        self.artifacts = artifacts


@dataclass(frozen=True)
class BundleFacts:
    """What the playbook needs to know about a verified bundle, read from its manifest."""

    name: str
    version: str
    runtime: str
    image_ref: str | None
    model_name: str
    served_model_name: str
    draft_model_name: str | None
    model_files: list[dict[str, str]]
    draft_model_files: list[dict[str, str]] = field(default_factory=list)
    flashinfer_cache: str = ""  # bundle-relative directories, empty when absent
    flashinfer_wheelhouse: str = ""

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> BundleFacts:
        by_role: dict[str, dict[str, Any]] = {}
        for component in manifest.components:
            by_role.setdefault(component.role, component.model_dump())
        if "engine" not in by_role or "model" not in by_role:
            raise InstallError("the bundle has no engine or no model component")
        model = by_role["model"]
        model_name = model["path"].rsplit("/", 1)[-1]
        draft = by_role.get("draft_model")
        flashinfer = by_role.get("flashinfer", {})
        return cls(
            name=manifest.name,
            version=manifest.version,
            runtime=str(by_role["engine"].get("runtime", "wheelhouse")),
            image_ref=by_role["engine"].get("image_ref"),
            model_name=model_name,
            served_model_name=str(model.get("served_model_name") or model_name),
            draft_model_name=draft["path"].rsplit("/", 1)[-1] if draft else None,
            model_files=_files_under(manifest, model["path"]),
            draft_model_files=_files_under(manifest, draft["path"]) if draft else [],
            flashinfer_cache=str(flashinfer.get("cache_dir") or ""),
            flashinfer_wheelhouse=str(flashinfer.get("wheelhouse") or ""),
        )


def site_vars_of(
    given: Mapping[str, Any], playbook_dir: Path, derived: Sequence[str] = ()
) -> dict[str, Any]:
    """A site's own inventory settings (audit mode, firewall, container engine...) for one host.

    Checked against the playbooks' group_vars/all.yml, so that a misspelt name is refused
    instead of silently ignored; `derived` names come from the bundle and the plan.
    """
    known = yaml.safe_load((playbook_dir / "group_vars" / "all.yml").read_text(encoding="utf-8"))
    problems = []
    for name in given:
        if name in OPTION_VARS:
            problems.append(f"{name}: give it with {OPTION_VARS[name]}")
        elif name in derived:
            problems.append(f"{name}: comes from the bundle and the plan")
        elif name not in known:
            problems.append(f"{name}: not a variable of the playbooks (group_vars/all.yml)")
    if problems:
        raise InstallError("site variables refused; nothing was installed", problems)
    return dict(given)


def site_vars_in(host: Mapping[str, Any]) -> dict[str, Any]:
    """The site settings among a host's inventory variables (not its options or connection)."""
    return {
        name: value
        for name, value in host.items()
        if name.startswith("sparkplane_") and name not in OPTION_VARS
    }


def _files_under(manifest: Manifest, directory: str) -> list[dict[str, str]]:
    """Manifest entries below a bundle directory: path relative to it, and SHA-256."""
    prefix = directory.rstrip("/") + "/"
    return [
        {"path": entry.path[len(prefix) :], "sha256": entry.sha256}
        for entry in manifest.files
        if entry.path.startswith(prefix)
    ]


def local_inventory(
    root: Path,
    engine_port: int,
    controlplane_port: int,
    bind: str,
    allow_system: bool,
    site_vars: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One host, this machine, over a local connection, with this interpreter."""
    host = {
        **(site_vars or {}),
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "sparkplane_root": str(root),
        "sparkplane_engine_port": engine_port,
        "sparkplane_controlplane_port": controlplane_port,
        "sparkplane_controlplane_bind": bind,
        "sparkplane_allow_system_changes": allow_system,
    }
    return {"sparkplane": {"hosts": {"localhost": host}}}


def playbook_vars(
    bundle: Path, facts: BundleFacts, plan: EnginePlan, activate: bool
) -> dict[str, Any]:
    """Bundle-wide extra vars; per-host settings (root, ports) stay in the inventory."""
    return {
        "sparkplane_bundle_dir": str(bundle),
        "sparkplane_version": facts.version,
        "sparkplane_model_name": facts.model_name,
        "sparkplane_served_model_name": facts.served_model_name,
        "sparkplane_model_files": facts.model_files,
        "sparkplane_draft_model_name": facts.draft_model_name or "",
        "sparkplane_draft_model_files": facts.draft_model_files,
        "sparkplane_engine_speculative_tokens": plan.speculative_tokens,
        "sparkplane_engine_runtime": facts.runtime,
        "sparkplane_container_image": facts.image_ref or "",
        "sparkplane_engine_profile": plan.profile,
        "sparkplane_engine_profile_args": plan.args,
        "sparkplane_engine_profile_env": plan.env,
        "sparkplane_engine_max_num_seqs": plan.max_num_seqs,
        "sparkplane_engine_queue": plan.engine_queue,
        "sparkplane_flashinfer_cache_path": facts.flashinfer_cache,
        "sparkplane_flashinfer_wheelhouse_path": facts.flashinfer_wheelhouse,
        "sparkplane_controlplane_environment": "production",
        "sparkplane_activate": activate,
    }


def save_release_vars(release: Path, inventory: dict[str, Any], extravars: dict[str, Any]) -> None:
    """What re-applying this release needs (rollback runs its playbook without the media)."""
    data = {"inventory": inventory, "extravars": extravars}
    (release / RELEASE_VARS).write_text(json.dumps(data, indent=2, sort_keys=True))


def raise_for_run(result: RunResult, what: str) -> None:
    if result.succeeded:
        return
    details = [f"{f.host}: task '{f.task}': {f.message}" for f in result.failures]
    if not details:
        details = [f"ansible-runner ended '{result.status}' (rc={result.rc}); see stdout there"]
    raise InstallError(f"{what} failed", details, result.artifact_dir)
