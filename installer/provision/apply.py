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
# The extra vars of `playbook_vars`: the bundle and the plan decide them for every host.
BUNDLE_VARS = frozenset({
    "sparkplane_bundle_dir", "sparkplane_version", "sparkplane_model_name",
    "sparkplane_served_model_name", "sparkplane_model_files", "sparkplane_draft_model_name",
    "sparkplane_draft_model_files", "sparkplane_engine_speculative_tokens",
    "sparkplane_engine_runtime", "sparkplane_container_image", "sparkplane_engine_profile",
    "sparkplane_engine_profile_args", "sparkplane_engine_profile_env",
    "sparkplane_engine_max_num_seqs", "sparkplane_engine_queue",
    "sparkplane_flashinfer_cache_path", "sparkplane_flashinfer_wheelhouse_path",
    "sparkplane_controlplane_environment", "sparkplane_activate",
})  # fmt: skip
# Decided by the installer from the options and the verified bundle: a site value would bypass
# the decision (a guard of systemctl, useradd and nft; media that was never verified).
INSTALLER_DECIDED = {
    "sparkplane_manage_system": "true only with --systemd on --root / (it guards systemctl, "
    "useradd and nft)",
    "sparkplane_model_source_dir": "the verified bundle's model",
    "sparkplane_draft_model_dir": "the draft model's place in the model store",
    "sparkplane_draft_model_source_dir": "the verified bundle's draft model",
    "sparkplane_container_archive": "the verified bundle's OCI archive",
}
# Defaults derived in group_vars/all.yml that are still a site's to set (docs/installer.md,
# "Inventory variables"); every other derived name (the paths below sparkplane_root) is refused.
SETTABLE_DERIVED = frozenset({
    "sparkplane_python", "sparkplane_engine_urls", "sparkplane_secrets_dir",
    "sparkplane_container_bin",
})  # fmt: skip


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


def site_vars_of(given: Mapping[str, Any], playbook_dir: Path) -> dict[str, Any]:
    """A site's own inventory settings (audit mode, firewall, container engine...) for one host.

    Checked against the playbooks' group_vars/all.yml, so that a misspelt name is refused
    instead of silently ignored, and so is a name the site does not decide: an option's, one
    from the bundle and the plan, a guard or a path the installer derives.
    """
    problems = refused_site_vars(given, group_vars(playbook_dir))
    if problems:
        raise InstallError("site variables refused; nothing was installed", problems)
    return dict(given)


def refused_site_vars(given: Mapping[str, Any], known: Mapping[str, Any]) -> list[str]:
    """`name: why` for each name a site may not set."""
    return [f"{name}: {why}" for name in given if (why := refusal(name, known))]


def group_vars(playbook_dir: Path) -> dict[str, Any]:
    """The playbooks' defaults (group_vars/all.yml), as written: derived ones unrendered."""
    path = playbook_dir / "group_vars" / "all.yml"
    defaults: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return defaults


def refusal(name: str, known: Mapping[str, Any]) -> str | None:
    """Why a site may not set `name`; None when it may."""
    if name in OPTION_VARS:
        return f"give it with {OPTION_VARS[name]}"
    if name in BUNDLE_VARS:
        return "comes from the bundle and the plan"
    if name in INSTALLER_DECIDED:
        return f"the installer decides it: {INSTALLER_DECIDED[name]}"
    if name not in known:
        return "not a variable of the playbooks (group_vars/all.yml)"
    if is_templated(known[name]) and name not in SETTABLE_DERIVED:
        return f"derived in group_vars/all.yml ({known[name]}), not a site setting"
    return None


def is_templated(value: Any) -> bool:
    """A group_vars default that Ansible computes from other variables."""
    return "{{" in str(value)


def inventory_site_vars(hosts: Mapping[str, Mapping[str, Any]], playbook_dir: Path) -> None:
    """The same check for every host of an inventory, before anything runs on any of them."""
    known = group_vars(playbook_dir)
    problems = [f"{host}: {problem}" for host, variables in hosts.items()
                for problem in refused_site_vars(site_vars_in(variables), known)]  # fmt: skip
    if problems:
        raise InstallError("inventory variables refused; nothing was installed", problems)


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
    extravars = {
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
    assert extravars.keys() == BUNDLE_VARS  # what site_vars_of refuses before any plan exists
    return extravars


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
