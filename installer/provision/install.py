"""`install`: verify the bundle, plan the engine, then let ansible-runner lay out the root.

Nothing is written under the root before the bundle has verified: a rejected bundle leaves the
target exactly as it was. Everything after that is idempotent (a second run changes nothing) and
`current` moves only in the playbook's last role, so an interrupted install is finished by
running it again. Once `current` has moved, provision/activation.py publishes the plan, imports
the lifecycle events into the audit chain and creates the first console admin.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console

from controlplane.appliance.events import record_event
from controlplane.appliance.layout import Layout
from installer.bundle.appliance import model_trust_of
from installer.bundle.manifest import Manifest
from installer.bundle.report import Finding, VerifyReport
from installer.bundle.trust import TrustStore
from installer.bundle.verify import verify_bundle
from installer.host.facts import box_memory_bytes, collect_host_facts
from installer.host.kvcache import ModelConfigError
from installer.host.plan import EnginePlan, PlanError, make_plan
from installer.host.preflight import BundleNeeds, run_preflight
from installer.provision.activation import after_activation
from installer.provision.apply import (
    BundleFacts,
    InstallError,
    group_vars,
    local_inventory,
    playbook_vars,
    raise_for_run,
    save_release_vars,
    site_vars_of,
)
from installer.provision.lock import installer_lock
from installer.provision.release_cli import FirstAdmin
from installer.provision.runner import run_playbook
from installer.provision.state_files import save_release_state

DEFAULT_ENGINE_PORT = 8000
DEFAULT_CONTROLPLANE_PORT = 8080
DEFAULT_CONTROLPLANE_BIND = "0.0.0.0"  # noqa: S104 - the control plane is the LAN-facing service


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
    model_signatures: tuple[tuple[str, str, str], ...] = ()  # (component, status, detail)
    first_admin: FirstAdmin | None = None  # set once, by the install that created it
    audit_imported: int | None = None
    warnings: tuple[str, ...] = ()


def verify_report(
    bundle: Path, trusted_keys: Sequence[Ed25519PublicKey], root: Path
) -> VerifyReport:
    """Verify against the appliance's trust dir, without writing anything; raise when bad.

    Same checks as `installer.bundle.appliance.verify_with_trust_dir` (revocations, OpenSSF
    model signatures from `<trust>/model-signing/*.pem`), but with `trusted_keys`: a key given
    with --trust must verify the bundle before it may be stored in that directory.
    """
    trust_dir = Layout.at(root).trust
    revoked = TrustStore(trust_dir).revoked_fingerprints()
    report = verify_bundle(
        bundle, list(trusted_keys), revoked=revoked, model_trust=model_trust_of(trust_dir)
    )
    if not report.ok or report.manifest is None:
        raise InstallError(
            f"bundle {bundle} failed verification; nothing was installed",
            [_describe(finding) for finding in report.sorted_findings()],
        )
    return report


def verify_or_raise(bundle: Path, trusted_keys: Sequence[Ed25519PublicKey], root: Path) -> Manifest:
    report = verify_report(bundle, trusted_keys, root)
    assert report.manifest is not None  # verify_report raised otherwise
    return report.manifest


def remember_rotated_signer(report: VerifyReport, root: Path) -> None:
    """A new signing key endorsed by a trusted one is trusted from now on (key rotation)."""
    if report.endorsed_by and report.signer is not None:
        TrustStore(Layout.at(root).trust).add(report.signer)


def _describe(finding: Finding) -> str:
    return f"{finding.path}: {finding.problem}: {finding.detail}"


def plan_or_refuse(bundle: Path, facts: BundleFacts, profile: str, memory_bytes: int) -> EnginePlan:
    """The engine plan for this profile and memory, or an InstallError saying why it cannot fit."""
    draft = bundle / "models" / facts.draft_model_name if facts.draft_model_name else None
    try:
        return make_plan(bundle / "models" / facts.model_name, profile, memory_bytes, draft)
    except (PlanError, ModelConfigError) as exc:
        raise InstallError(
            f"profile {profile!r} refused; nothing was installed", [str(exc)]
        ) from exc


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
    site_vars: Mapping[str, Any] | None = None,
) -> InstallResult:
    """Install (or finish installing) `bundle` under `root`; raises InstallError on any failure.

    `after_verify` runs once the bundle has verified and before anything is written (the CLI
    stores a newly trusted key there, so a rejected bundle leaves the trust directory alone).
    `site_vars`: the site's inventory settings for this host (`--vars`), kept in the release.
    """
    bundle, root = Path(bundle).absolute(), Path(root).absolute()
    report = verify_report(bundle, trusted_keys, root)
    manifest = report.manifest
    assert manifest is not None
    if console is not None:
        for component, status, detail in report.model_signatures:
            console.print(f"model signature of {component}: {status} ({detail})")
    facts = BundleFacts.from_manifest(manifest)
    site = site_vars_of(site_vars or {}, bundle / "playbooks")
    facts_host = collect_host_facts()
    ports = {engine_port: "engine", controlplane_port: "control plane"}
    needs = BundleNeeds.from_manifest(manifest)
    engine = site.get("sparkplane_container_engine") or group_vars(bundle / "playbooks").get(
        "sparkplane_container_engine"
    )
    checks = run_preflight(facts_host, needs, Layout.at(root), ports, engine and str(engine))
    if not checks.ok:
        raise InstallError(
            "preflight failed; nothing was installed",
            [f"{c.name}: {c.value} ({c.remedy})" for c in checks.blocking],
        )
    if memory_bytes is None:
        memory_bytes = box_memory_bytes(facts_host)
    plan = plan_or_refuse(bundle, facts, profile, memory_bytes)
    extravars = playbook_vars(bundle, facts, plan, activate)
    if after_verify is not None:
        after_verify(manifest)
    remember_rotated_signer(report, root)
    layout = Layout.at(root)
    with installer_lock(layout):
        started = time.monotonic()
        record_event(layout, action, phase="started", version=facts.version, profile=profile)
        if console is not None:
            console.print(f"{action} {facts.name} {facts.version} (profile {profile}) into {root}")
        inventory = local_inventory(
            root, engine_port, controlplane_port, controlplane_bind, allow_system_changes, site
        )
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
        save_release_state(layout.release(facts.version), plan, checks)
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
        aftermath = None
        if activate:  # an upgrade stages with activate=False and finishes this itself
            aftermath = after_activation(layout, create_admin=True, console=console)
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
            model_signatures=tuple(report.model_signatures),
            first_admin=aftermath.first_admin if aftermath else None,
            audit_imported=aftermath.audit_imported if aftermath else None,
            warnings=tuple(aftermath.warnings) if aftermath else (),
        )
