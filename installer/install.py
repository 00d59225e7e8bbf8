"""`install`: verify the bundle, plan the engine, then let ansible-runner lay out the root.

Nothing is written under the root before the bundle has verified: a rejected bundle leaves the
target exactly as it was. Everything after that is idempotent (a second run changes nothing) and
`current` moves only in the playbook's last role, so an interrupted install is finished by
running it again.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console

from installer.bundle.manifest import Manifest
from installer.bundle.report import Finding
from installer.bundle.trust import TrustStore
from installer.bundle.verify import verify_bundle
from installer.events import record_event
from installer.hostfacts import box_memory_bytes, collect_host_facts
from installer.kvcache import ModelConfigError
from installer.layout import Layout
from installer.plan import EnginePlan, PlanError, make_plan
from installer.preflight import BundleNeeds, run_preflight
from installer.runner import RunResult, run_playbook

RELEASE_VARS = "install-vars.json"
DEFAULT_ENGINE_PORT = 8000
DEFAULT_CONTROLPLANE_PORT = 8080
DEFAULT_CONTROLPLANE_BIND = "0.0.0.0"  # noqa: S104 - the control plane is the LAN-facing service


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

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> BundleFacts:
        by_role: dict[str, dict[str, Any]] = {}
        for component in manifest.components:
            by_role.setdefault(component.role, component.model_dump())
        if "engine" not in by_role or "model" not in by_role:
            raise InstallError("the bundle has no engine or no model component")
        model = by_role["model"]
        model_name = model["path"].rsplit("/", 1)[-1]
        prefix = model["path"].rstrip("/") + "/"
        files = [
            {"path": entry.path[len(prefix) :], "sha256": entry.sha256}
            for entry in manifest.files
            if entry.path.startswith(prefix)
        ]
        draft = by_role.get("draft_model")
        return cls(
            name=manifest.name,
            version=manifest.version,
            runtime=str(by_role["engine"].get("runtime", "wheelhouse")),
            image_ref=by_role["engine"].get("image_ref"),
            model_name=model_name,
            served_model_name=str(model.get("served_model_name") or model_name),
            draft_model_name=draft["path"].rsplit("/", 1)[-1] if draft else None,
            model_files=files,
        )


@dataclass(frozen=True)
class InstallResult:
    version: str
    release_dir: Path
    model_dir: Path
    served_model_name: str
    engine_port: int
    controlplane_port: int
    profile: str
    changed: int
    artifacts: Path
    plan: EnginePlan


def verify_or_raise(bundle: Path, trusted_keys: Sequence[Ed25519PublicKey], root: Path) -> Manifest:
    """Verify without writing anything; raise with every finding when the bundle is bad."""
    revoked = TrustStore(Layout.at(root).trust).revoked_fingerprints()
    report = verify_bundle(bundle, list(trusted_keys), revoked=revoked)
    if not report.ok or report.manifest is None:
        raise InstallError(
            f"bundle {bundle} failed verification; nothing was installed",
            [_describe(finding) for finding in report.sorted_findings()],
        )
    return report.manifest


def _describe(finding: Finding) -> str:
    return f"{finding.path}: {finding.problem}: {finding.detail}"


def local_inventory(
    root: Path, engine_port: int, controlplane_port: int, bind: str, allow_system: bool
) -> dict[str, Any]:
    """One host, this machine, over a local connection, with this interpreter."""
    host = {
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
        "sparkplane_engine_runtime": facts.runtime,
        "sparkplane_container_image": facts.image_ref or "",
        "sparkplane_engine_profile": plan.profile,
        "sparkplane_engine_profile_args": plan.args,
        "sparkplane_engine_profile_env": plan.env,
        "sparkplane_engine_max_num_seqs": plan.max_num_seqs,
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


def install(
    bundle: Path,
    root: Path,
    trusted_keys: Sequence[Ed25519PublicKey],
    profile: str = "demo",
    *,
    engine_port: int = DEFAULT_ENGINE_PORT,
    controlplane_port: int = DEFAULT_CONTROLPLANE_PORT,
    controlplane_bind: str = DEFAULT_CONTROLPLANE_BIND,
    allow_system_changes: bool = False,
    memory_bytes: int | None = None,
    activate: bool = True,
    console: Console | None = None,
    action: str = "install",
    after_verify: Callable[[Manifest], None] | None = None,
) -> InstallResult:
    """Install (or finish installing) `bundle` under `root`; raises InstallError on any failure.

    `after_verify` runs once the bundle has verified and before anything is written (the CLI
    stores a newly trusted key there, so a rejected bundle leaves the trust directory alone).
    """
    bundle, root = Path(bundle).absolute(), Path(root).absolute()
    manifest = verify_or_raise(bundle, trusted_keys, root)
    facts = BundleFacts.from_manifest(manifest)
    facts_host = collect_host_facts()
    ports = {engine_port: "engine", controlplane_port: "control plane"}
    checks = run_preflight(facts_host, BundleNeeds.from_manifest(manifest), Layout.at(root), ports)
    if not checks.ok:
        raise InstallError(
            "preflight failed; nothing was installed",
            [f"{c.name}: {c.value} ({c.remedy})" for c in checks.blocking],
        )
    if memory_bytes is None:
        memory_bytes = box_memory_bytes(facts_host)
    draft = bundle / "models" / facts.draft_model_name if facts.draft_model_name else None
    try:
        plan = make_plan(bundle / "models" / facts.model_name, profile, memory_bytes, draft)
    except (PlanError, ModelConfigError) as exc:
        raise InstallError(
            f"profile {profile!r} refused; nothing was installed", [str(exc)]
        ) from exc
    if after_verify is not None:
        after_verify(manifest)
    layout = Layout.at(root)
    started = time.monotonic()
    record_event(layout, action, phase="started", version=facts.version, profile=profile)
    if console is not None:
        console.print(f"{action} {facts.name} {facts.version} (profile {profile}) into {root}")
    inventory = local_inventory(
        root, engine_port, controlplane_port, controlplane_bind, allow_system_changes
    )
    extravars = playbook_vars(bundle, facts, plan, activate)
    result = run_playbook(
        bundle / "playbooks",
        layout.artifacts,
        inventory,
        extravars,
        ident=f"{action}-{facts.version}-{time.strftime('%Y%m%dT%H%M%S')}",
        console=console,
    )
    elapsed = round(time.monotonic() - started, 1)
    try:
        raise_for_run(result, action)
    except InstallError as exc:
        record_event(
            layout,
            action,
            phase="failed",
            version=facts.version,
            error=exc.details,
            artifacts=str(result.artifact_dir),
        )
        raise
    save_release_vars(layout.release(facts.version), inventory, extravars)
    record_event(
        layout,
        action,
        phase="succeeded",
        version=facts.version,
        profile=profile,
        changed=result.changed,
        seconds=elapsed,
    )
    if console is not None:
        console.print(
            f"ok={result.ok} changed={result.changed} failed={result.failed} "
            f"in {elapsed}s; artifacts: {result.artifact_dir}"
        )
    return InstallResult(
        version=facts.version,
        release_dir=layout.release(facts.version),
        model_dir=layout.models / facts.model_name,
        served_model_name=facts.served_model_name,
        engine_port=engine_port,
        controlplane_port=controlplane_port,
        profile=profile,
        changed=result.changed,
        artifacts=result.artifact_dir,
        plan=plan,
    )
